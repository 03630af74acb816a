"""SCA-DM's SpatialTransformer: self-attention, masked cross-attention to the 19 region
tokens, and a GEGLU feed-forward (LDM ldm/modules/attention.py as modified by SCA-DM).

Tokens are image positions in row-major order, [B, h*w, C]. The self-attention is
unmasked and runs through ``F.scaled_dot_product_attention``; the cross-attention
runs through :func:`facegen_rt.ops.masked_cross_attention` with, for each pixel, the
one-hot region row of the nearest-resized segmentation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from facegen_rt.ops import masked_cross_attention

from .blocks import Size, UNetConditioning, UNetLayer


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, heads*d] -> [B, heads, L, d]."""
    B, L, _ = t.shape
    return t.view(B, L, heads, -1).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads*d]."""
    B, h, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, h * d)


class SelfAttention(nn.Module):
    """attn1: unmasked multi-head self-attention over the image tokens, [B, L, C] -> [B, L, C]."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(p(x), self.heads) for p in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as LDM
        return self.to_out[0](_merge_heads(out))


class MaskedCrossAttention(nn.Module):
    """attn2: image tokens attend to the region tokens, each pixel only to its own region.

    Queries come from the image tokens [B, L, C]; keys and values from the style
    context [B, R, context_dim] (cached per run in :class:`UNetConditioning`).
    """

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.cache_key = ""  # set by the UNet to the layer's qualified name

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, R, context_dim] -> (k, v), each [B, heads, R, head_dim] contiguous."""
        context = context.to(self.to_k.weight.dtype)
        k = _split_heads(self.to_k(context), self.heads).contiguous()
        v = _split_heads(self.to_v(context), self.heads).contiguous()
        return k, v

    def forward(self, x: torch.Tensor, cond: UNetConditioning, size: Size) -> torch.Tensor:
        B = x.shape[0]
        q = _split_heads(self.to_q(x), self.heads)
        k, v = cond.cross_kv(self)
        mask = cond.mask_tokens(size, x.dtype)
        if k.shape[0] != B:  # a batch-1 conditioning shared by the whole batch
            k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
            mask = mask.expand(B, -1, -1)
        out = masked_cross_attention(q, k, v, mask, scale=self.head_dim ** -0.5)
        return self.to_out[0](_merge_heads(out))


class GEGLU(nn.Module):
    """[B, L, dim] -> [B, L, inner]: a * GELU(gate) with (a, gate) = proj(x) halves."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x expansion; names net.0.proj and net.2 as in LDM."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[1](self.net[0](x)))


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, masked cross-attention, feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        # Registration order follows the official module so state_dict keys come out in
        # the same order.
        self.attn1 = SelfAttention(dim, heads, head_dim, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = MaskedCrossAttention(dim, context_dim, heads, head_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, cond: UNetConditioning, size: Size) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), cond, size) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(UNetLayer):
    """GroupNorm -> 1x1 proj_in -> transformer block(s) -> 1x1 proj_out, plus the input.

    x [B, C, h, w] -> [B, C, h, w]. The 1x1 convolutions keep their official conv
    parameter shapes but run as matmuls on the token layout.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, context_dim: int,
                 depth: int = 1, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, context_dim, dropout)
             for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x, emb, cond):
        B, C, H, W = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        t = F.linear(t, self.proj_in.weight.flatten(1), self.proj_in.bias)
        for block in self.transformer_blocks:
            t = block(t, cond, (H, W))
        t = F.linear(t, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return t.transpose(1, 2).reshape(B, C, H, W) + x
