"""masked_cross_attention benchmark: L image tokens attend to R = 19 region tokens.

Formula (per call): FLOPs = 4 * B * h * L * R * d
    (q k^T: 2 * L * R * d per head, softmax(.) v: 2 * L * R * d per head), against the
    GEMM peak of the dtype measured in the same run. Every provider is credited with
    this same dense count, including the cpu kernel's one-hot gather path, which
    executes far fewer: its "% of peak" can exceed what a GEMM could do, and that is
    the point of the shortcut.

Mask kinds:
    onehot   a smooth random semantic label map of R classes on the sqrt(L) x sqrt(L)
             token grid, one-hot per token (SCA-DM's case);
    general  soft: every row has 2 or 3 nonzero random weights summing to 1.

The "sdpa" provider is a speed peer only: F.scaled_dot_product_attention with the
dense bool mask (mask != 0) ignores the soft weights and the seed's exact-zero
logit quirk, so its output differs from the seed on "general" masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facegen_rt.ops import masked_cross_attention, masked_cross_attention_reference

from ..harness import Case, OpBench, Provider, register_op_bench
from .common import KERNEL_NOTE, cpu_kernel_entry

R = 19
D = 32
SEED_SHAPES = ((1024, 14), (256, 21), (64, 28))  # (L, heads) at SCA-DM's three levels
QUICK_SHAPES = ((64, 2),)
MASK_KINDS = ("onehot", "general")


def _case(L: int, h: int, kind: str) -> Case:
    B = 1
    return Case(label=f"L{L} h{h} {kind}",
                params={"B": B, "h": h, "L": L, "R": R, "d": D, "mask": kind},
                useful_flops=4.0 * B * h * L * R * D)


def cases(quick: bool) -> list[Case]:
    return [_case(L, h, kind) for L, h in (QUICK_SHAPES if quick else SEED_SHAPES)
            for kind in MASK_KINDS]


def onehot_label_mask(B: int, L: int, R: int, gen: torch.Generator) -> torch.Tensor:
    """[B, L, R] one-hot of a smooth random label field on the token grid.

    Coarse per-class noise, bilinearly upsampled and arg-maxed, gives contiguous
    regions of random size, like a face parsing map at latent resolution.
    """
    side = math.isqrt(L)
    if side * side != L:
        raise ValueError(f"L={L} is not a square token grid")
    coarse = max(2, side // 4)
    noise = torch.randn(B, R, coarse, coarse, generator=gen)
    field = F.interpolate(noise, size=(side, side), mode="bilinear", align_corners=False)
    labels = field.argmax(dim=1).reshape(B, L)
    return F.one_hot(labels, R).float()


def soft_mask(B: int, L: int, R: int, gen: torch.Generator) -> torch.Tensor:
    """[B, L, R] with 2 or 3 nonzero random weights per row, each row summing to 1."""
    order = torch.rand(B, L, R, generator=gen).argsort(dim=-1)[..., :3]
    weights = torch.rand(B, L, 3, generator=gen) * 0.9 + 0.1
    two = torch.rand(B, L, generator=gen) < 0.5
    weights[..., 2] = torch.where(two, torch.zeros(()), weights[..., 2])
    mask = torch.zeros(B, L, R).scatter_(-1, order, weights)
    return mask / mask.sum(dim=-1, keepdim=True)


def make_inputs(case: Case, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """q: [B, h, L, d]; k, v: [B, h, R, d]; mask: [B, L, R] in q's dtype."""
    p = case.params
    B, h, L = p["B"], p["h"], p["L"]
    q = torch.randn(B, h, L, D, generator=gen).to(dtype)
    k = torch.randn(B, h, R, D, generator=gen).to(dtype)
    v = torch.randn(B, h, R, D, generator=gen).to(dtype)
    make = onehot_label_mask if p["mask"] == "onehot" else soft_mask
    mask = make(B, L, R, gen).to(dtype)
    return {"q": q, "k": k, "v": v, "mask": mask, "scale": D ** -0.5}


def _seed(inp: dict):
    q, k, v, m, s = inp["q"], inp["k"], inp["v"], inp["mask"], inp["scale"]
    return lambda: masked_cross_attention_reference(q, k, v, m, s)


def _compiled(inp: dict):
    fn = torch.compile(masked_cross_attention_reference, fullgraph=True)
    q, k, v, m, s = inp["q"], inp["k"], inp["v"], inp["mask"], inp["scale"]
    return lambda: fn(q, k, v, m, s)


def _sdpa(inp: dict):
    q, k, v, s = inp["q"], inp["k"], inp["v"], inp["scale"]
    allowed = (inp["mask"] != 0)[:, None]  # [B, 1, L, R], built once per request
    return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=s)


def _public(backend: str):
    def build(inp: dict):
        q, k, v, m, s = inp["q"], inp["k"], inp["v"], inp["mask"], inp["scale"]
        return lambda: masked_cross_attention(q, k, v, m, s, backend=backend)
    return build


def _kernel(inp: dict):
    run = cpu_kernel_entry("masked_cross_attention")
    q, k, v, m, s = inp["q"], inp["k"], inp["v"], inp["mask"], inp["scale"]
    return lambda: run(q, k, v, m, s)


BENCH = register_op_bench(OpBench(
    op="masked_cross_attention",
    cases=cases,
    make_inputs=make_inputs,
    providers=(
        Provider("seed_eager", _seed, note="masked_cross_attention_reference in eager PyTorch"),
        Provider("torch_compile", _compiled, compiled=True,
                 note="torch.compile(masked_cross_attention_reference, fullgraph=True)"),
        Provider("sdpa", _sdpa,
                 note="F.scaled_dot_product_attention with bool mask [B,1,L,R] = mask != 0; "
                      "speed peer only (other semantics on soft masks and at exact-zero logits)"),
        Provider("facegen_cpu", _public("cpu"),
                 note='facegen_rt.ops.masked_cross_attention(backend="cpu")'),
        Provider("facegen_cpu_kernel", _kernel,
                 note=KERNEL_NOTE.format(op="masked_cross_attention")),
        Provider("facegen_reference", _public("reference"), default=False,
                 note='facegen_rt.ops.masked_cross_attention(backend="reference")'),
    ),
    formulas="FLOPs = 4 * B * h * L * R * d (dense count, credited to every provider), "
             "against the dtype's GEMM peak. sdpa is a speed peer with different "
             "semantics on soft masks: its diff vs seed on 'general' rows is expected.",
))
