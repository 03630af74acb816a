"""shared_self_attention benchmark: L target queries over L self tokens plus N reference
banks of L tokens each (M = N * L), a fraction of the reference tokens masked out.

FLOPs (per call, 4 = 2 for q k^T + 2 for p v, per query-key pair per channel):
    useful      4 * B * h * L * (L + kept) * d   target queries over the keys that matter
    seed dense  4 * B * h * ((N+1) L)^2 * d      official formulation: all (N+1)L queries
                                                 over all (N+1)L keys, masked keys zeroed
    sdpa        4 * B * h * L * (L + M) * d      target queries, masked keys still read
    facegen_cpu = useful (by the op's design its kernel never reads masked tokens)
Each provider reports executed and useful FLOPs against the dtype's GEMM peak.

Masks: each reference is a sqrt(L) x sqrt(L) token grid; the kept tokens form one
star-shaped blob (an ellipse with a wavy rim, random centre and aspect) holding
exactly round((1 - masked) * L) tokens, like a subject region in the image plane.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facegen_rt.ops import shared_self_attention

from ..harness import Case, OpBench, Provider, register_op_bench
from .common import KERNEL_NOTE, cpu_kernel_entry

HEADS = 8
N_REFS = 6
MASKED = (0.25, 0.50, 0.90)
SEED_SHAPES = ((1024, 40), (1024, 80), (4096, 40))  # (L, d); L = 4096 only at d = 40
QUICK = {"L": 64, "d": 40, "h": 2, "N": 2, "masked": (0.5,)}


def _case(L: int, d: int, h: int, N: int, masked: float) -> Case:
    B = 1
    kept = N * round((1.0 - masked) * L)
    return Case(label=f"L{L} d{d} N{N} masked {round(masked * 100)}%",
                params={"B": B, "h": h, "L": L, "d": d, "N": N, "M": N * L,
                        "masked": masked, "kept": kept},
                useful_flops=4.0 * B * h * L * (L + kept) * d)


def cases(quick: bool) -> list[Case]:
    if quick:
        q = QUICK
        return [_case(q["L"], q["d"], q["h"], q["N"], m) for m in q["masked"]]
    return [_case(L, d, HEADS, N_REFS, m) for L, d in SEED_SHAPES for m in MASKED]


def _seed_flops(case: Case) -> float:
    p = case.params
    return 4.0 * p["B"] * p["h"] * ((p["N"] + 1) * p["L"]) ** 2 * p["d"]


def _target_dense_flops(case: Case) -> float:
    p = case.params
    return 4.0 * p["B"] * p["h"] * p["L"] * (p["L"] + p["M"]) * p["d"]


def blob_keep(L: int, keep: float, gen: torch.Generator) -> torch.Tensor:
    """[L] bool: one star-shaped blob of exactly round(keep * L) tokens on the grid."""
    side = math.isqrt(L)
    if side * side != L:
        raise ValueError(f"L={L} is not a square token grid")
    u = torch.rand(5, generator=gen)
    cy, cx = (0.35 + 0.3 * u[0]) * side, (0.35 + 0.3 * u[1]) * side
    ay, ax = 1.0, 0.6 + 0.4 * float(u[2])  # aspect: heads and bodies are taller than wide
    yy, xx = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    dy, dx = (yy - cy) / ay, (xx - cx) / ax
    theta = torch.atan2(dy, dx)
    # a wavy rim (2- and 3-fold lobes) so the region is a blob, not a perfect ellipse
    rim = (1.0 + 0.15 * torch.sin(2 * theta + 6.28 * u[3])
           + 0.08 * torch.sin(3 * theta + 6.28 * u[4]))
    dist = torch.sqrt(dy * dy + dx * dx) / rim
    n_keep = round(keep * L)
    keep_mask = torch.zeros(L, dtype=torch.bool)
    keep_mask[dist.reshape(L).argsort()[:n_keep]] = True  # the n_keep innermost tokens
    return keep_mask


def make_inputs(case: Case, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """q, k_self, v_self: [B, h, L, d]; q_ref, k_ref, v_ref: [B, h, M, d]; ref_keep: [B, M].

    k_ref_z / v_ref_z have the masked rows zeroed, as the seed's reference bank holds
    them; they are built once per request, outside the timed region.
    """
    p = case.params
    B, h, L, d, N, M = p["B"], p["h"], p["L"], p["d"], p["N"], p["M"]

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    q, k_self, v_self = rnd(B, h, L, d), rnd(B, h, L, d), rnd(B, h, L, d)
    q_ref, k_ref, v_ref = rnd(B, h, M, d), rnd(B, h, M, d), rnd(B, h, M, d)
    ref_keep = torch.stack([torch.cat([blob_keep(L, 1.0 - p["masked"], gen) for _ in range(N)])
                            for _ in range(B)])
    zero = torch.zeros((), dtype=dtype)
    keep4 = ref_keep[:, None, :, None]
    return {"q": q, "k_self": k_self, "v_self": v_self, "q_ref": q_ref, "k_ref": k_ref,
            "v_ref": v_ref, "ref_keep": ref_keep, "k_ref_z": torch.where(keep4, k_ref, zero),
            "v_ref_z": torch.where(keep4, v_ref, zero), "scale": d ** -0.5}


def seed_shared_attention(q, q_ref, k_self, v_self, k_ref_z, v_ref_z, scale: float):
    """The official formulation: self-attention over all (N+1)L tokens, first L kept.

    q, k_self, v_self: [B, h, L, d]; q_ref, k_ref_z, v_ref_z: [B, h, M, d] (masked rows
    of k_ref_z / v_ref_z are zero). Returns [B, h, L, d] (a view).
    """
    L = q.shape[2]
    q_all = torch.cat([q, q_ref], dim=2)
    k_all = torch.cat([k_self, k_ref_z], dim=2)
    v_all = torch.cat([v_self, v_ref_z], dim=2)
    return F.scaled_dot_product_attention(q_all, k_all, v_all, scale=scale)[:, :, :L]


def target_only_sdpa(q, k_self, v_self, k_ref_z, v_ref_z, scale: float):
    """SDPA with the L target queries only, over all L + M keys (masked keys zeroed)."""
    k = torch.cat([k_self, k_ref_z], dim=2)
    v = torch.cat([v_self, v_ref_z], dim=2)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def _seed_args(inp: dict) -> tuple:
    return (inp["q"], inp["q_ref"], inp["k_self"], inp["v_self"], inp["k_ref_z"],
            inp["v_ref_z"], inp["scale"])


def _seed(inp: dict):
    args = _seed_args(inp)
    return lambda: seed_shared_attention(*args)


def _compiled(inp: dict):
    fn = torch.compile(seed_shared_attention, fullgraph=True)
    args = _seed_args(inp)
    return lambda: fn(*args)


def _sdpa(inp: dict):
    args = (inp["q"], inp["k_self"], inp["v_self"], inp["k_ref_z"], inp["v_ref_z"], inp["scale"])
    return lambda: target_only_sdpa(*args)


def _public(backend: str):
    def build(inp: dict):
        # The op takes the raw banks: it treats masked rows as zero keys itself.
        args = (inp["q"], inp["k_self"], inp["v_self"], inp["k_ref"], inp["v_ref"],
                inp["ref_keep"], inp["scale"])
        return lambda: shared_self_attention(*args, backend=backend)
    return build


def _kernel(inp: dict):
    run = cpu_kernel_entry("shared_self_attention")
    args = (inp["q"], inp["k_self"], inp["v_self"], inp["k_ref"], inp["v_ref"],
            inp["ref_keep"], inp["scale"], False)
    return lambda: run(*args)


BENCH = register_op_bench(OpBench(
    op="shared_self_attention",
    cases=cases,
    make_inputs=make_inputs,
    providers=(
        Provider("seed_eager", _seed, flops=_seed_flops,
                 note="cat(q, q_ref) etc., F.scaled_dot_product_attention over all (N+1)L "
                      "tokens, [:, :, :L] (diffusers' default processor path)"),
        Provider("torch_compile", _compiled, compiled=True, flops=_seed_flops,
                 note="torch.compile of the seed formulation, fullgraph=True"),
        Provider("sdpa", _sdpa, flops=_target_dense_flops,
                 note="F.scaled_dot_product_attention, L target queries over all L + M keys"),
        Provider("facegen_cpu", _public("cpu"),
                 note='facegen_rt.ops.shared_self_attention(backend="cpu"); credited with '
                      "useful FLOPs only (masked tokens are never read)"),
        Provider("facegen_cpu_kernel", _kernel,
                 note=KERNEL_NOTE.format(op="shared_self_attention")),
        Provider("facegen_reference", _public("reference"), default=False,
                 flops=_target_dense_flops,
                 note='facegen_rt.ops.shared_self_attention(backend="reference")'),
    ),
    formulas="useful FLOPs = 4*B*h*L*(L+kept)*d; executed: seed/compile 4*B*h*((N+1)L)^2*d, "
             "sdpa 4*B*h*L*(L+M)*d, facegen_cpu = useful. '% GEMM peak (exec)' uses "
             "executed FLOPs, '(useful)' the useful ones, both vs the dtype's GEMM peak.",
))
