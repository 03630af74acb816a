"""The first stage: LDM's VQModel (taming-style Encoder/Decoder and VectorQuantizer2).

Parameter names match LDM's VQModel state_dict (``encoder.down.{i}.block.{j}.conv1``,
``decoder.up.{i}.upsample.conv``, ``quantize.embedding.weight``, ``quant_conv``, ...).

How LDM uses it for SCA-DM (ldm/models/diffusion/ddpm.py, VQModelInterface):
* encode_first_stage returns the *pre-quantization* latent quant_conv(encoder(x)); the
  diffusion model is trained on these unquantized latents (scale_factor 1.0).
* decode_first_stage quantizes first: decoder(post_quant_conv(quantize(z))), where
  quantize snaps each latent vector to its nearest codebook entry.
:meth:`VQModel.encode` and :meth:`VQModel.decode` default to exactly that.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VQConfig

_QUANT_CHUNK = 4096  # latent vectors per distance matrix chunk (bounds memory at 8192 codes)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GN-swish-conv twice plus a shortcut (1x1 conv when widths differ).

    [B, cin, h, w] -> [B, cout, h, w].
    """

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels with 1x1 q/k/v/proj_out convs; residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (p(h).flatten(2).transpose(1, 2)[:, None] for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, HW, C], scale C ** -0.5
        return x + self.proj_out(out[:, 0].transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv without padding (as taming)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution: ``block`` (ResnetBlocks), ``attn`` (possibly empty), resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """[B, in_channels, H, W] -> [B, z_channels, H/f, W/f] with f = 2**(levels-1)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch = cfg.ch
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res = cfg.resolution
        cin = ch
        for level, m in enumerate(cfg.ch_mult):
            cout = ch * m
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(cin, cout))
                cin = cout
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(cin))
            stage = _Level(blocks, attns)
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(cin)
                res //= 2
            self.down.append(stage)
        self.mid = _Mid(cin, cfg.mid_attention)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> [B, out_ch, h*f, w*f]. ``up[i]`` is level i (0: full size)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, levels = cfg.ch, len(cfg.ch_mult)
        cin = ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin, cfg.mid_attention)
        ups: list[_Level] = []
        for level in reversed(range(levels)):
            cout = ch * cfg.ch_mult[level]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, cout))
                cin = cout
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(cin))
            stage = _Level(blocks, attns)
            if level != 0:
                stage.upsample = Upsample(cin)
                res *= 2
            ups.insert(0, stage)  # index by level, as upstream
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            h = stage.run(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantization (taming VectorQuantizer2, inference path)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> [B, h, w] int64 codebook indices (argmin of squared distance)."""
        B, D, h, w = z.shape
        # Distances in float32 at least, so a bfloat16 model picks the same codes.
        dt = torch.promote_types(z.dtype, torch.float32)
        flat = z.permute(0, 2, 3, 1).reshape(-1, D).to(dt)
        e = self.embedding.weight.to(dt)
        e_sq = (e ** 2).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        for s in range(0, flat.shape[0], _QUANT_CHUNK):
            part = flat[s:s + _QUANT_CHUNK]
            # The expanded form |z|^2 + |e|^2 - 2 z.e, as upstream, so ties resolve alike.
            d = (part ** 2).sum(1, keepdim=True) + e_sq - 2 * (part @ e.t())
            out[s:s + _QUANT_CHUNK] = d.argmin(1)
        return out.view(B, h, w)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """[B, h, w] indices -> [B, D, h, w] codebook vectors."""
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, D, h, w] -> (quantized [B, D, h, w], indices [B, h, w])."""
        idx = self.indices(z)
        zq = self.lookup(idx).to(z.dtype)
        # Upstream returns z + (zq - z) (straight-through form); keep it for bit-parity.
        return z + (zq - z), idx


class VQModel(nn.Module):
    """encode(image [B, 3, H, W] in [-1, 1]) -> latent [B, embed_dim, H/f, W/f];
    decode(latent) -> image [B, 3, H, W] (not clamped)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def _dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode(self, x: torch.Tensor, quantize: bool = False) -> torch.Tensor:
        """Image -> latent. Default: LDM's encode_first_stage (pre-quantization latent);
        ``quantize=True`` snaps it to the codebook (VQModel.encode's first output)."""
        f = self.cfg.factor
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"VQModel.encode: x must be [B, {self.cfg.in_channels}, H, W] "
                             f"with H, W multiples of {f}, got {tuple(x.shape)}")
        z = self.quant_conv(self.encoder(x.to(self._dtype())))
        return self.quantize(z)[0] if quantize else z

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Latent -> image. Default: LDM's decode_first_stage for VQ models, which
        quantizes first; ``quantize=False`` is its force_not_quantize path."""
        if z.dim() != 4 or z.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"VQModel.decode: z must be [B, {self.cfg.embed_dim}, h, w], "
                             f"got {tuple(z.shape)}")
        z = z.to(self._dtype())
        if quantize:
            z = self.quantize(z)[0]
        return self.decoder(self.post_quant_conv(z))
