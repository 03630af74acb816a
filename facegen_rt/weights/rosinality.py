"""Loading rosinality/stylegan2-pytorch generators (``.pt`` files) into our Generator.

Files: ``convert_weight.py`` writes ``{"g_ema": state_dict, "latent_avg": [w_dim], ...}``;
``train.py`` writes ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``
(``args`` is an argparse.Namespace, the one non-tensor class allowed here). Files are
read with torch.load(weights_only=True).

Key map (rosinality -> NVlabs), for a generator with B = log2(size) - 1 blocks:

    style.{i+1}.{weight,bias}            mapping.fc{i}.{weight,bias}   (style.0 is PixelNorm)
    latent_avg                           mapping.w_avg
    input.input [1, C, 4, 4]             synthesis.b4.const [C, 4, 4]
    conv1.*                              synthesis.b4.conv1.*
    to_rgb1.*                            synthesis.b4.torgb.*
    convs.{2k}.*, convs.{2k+1}.*         synthesis.b{2**(k+3)}.conv0.*, .conv1.*
    to_rgbs.{k}.*                        synthesis.b{2**(k+3)}.torgb.*
    noises.noise_0                       synthesis.b4.conv1.noise_const
    noises.noise_{2k+1}, noise_{2k+2}    synthesis.b{2**(k+3)}.conv0/conv1.noise_const

  inside a StyledConv / ToRGB:
    conv.weight [1, O, I, k, k]          weight [O, I, k, k]
    conv.modulation.{weight,bias}        affine.{weight,bias}
    noise.weight [1]                     noise_strength []
    activate.bias [O]                    bias [O]
    bias [1, 3, 1, 1] (ToRGB)            bias [3]
    conv.blur.kernel, upsample.kernel    (dropped: the fixed [1, 3, 3, 1] filter; the
                                          model's resample_filter buffers are rebuilt)

The parametrizations agree (equalized lr with the same stored tensors), but rosinality
never clamps activations, so the config gets ``conv_clamp=None``. Without latent_avg
(train.py checkpoints) w_avg is estimated as the mean of w over ``w_avg_samples``
latents drawn from a fixed seed, as rosinality's ``mean_latent`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Optional, Union

import torch

from facegen_rt.models.stylegan2 import Generator, StyleGAN2Config, get_preset
from facegen_rt.ops.upfirdn2d import setup_filter

from .nvlabs_pickle import infer_config
from .report import LoadReport, assign_tensors
from .safe_torch_load import DEFAULT_MAX_BYTES, CheckpointError, PathLike, safe_torch_load

_LAYER_MAP = {  # suffix inside a StyledConv / ToRGB -> NVlabs suffix
    "conv.weight": "weight",
    "conv.modulation.weight": "affine.weight",
    "conv.modulation.bias": "affine.bias",
    "noise.weight": "noise_strength",
    "activate.bias": "bias",
    "bias": "bias",
}
_KERNEL_KEYS = re.compile(r"^(convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel)$")


def _prefix_map(num_blocks: int) -> dict[str, str]:
    """rosinality module prefix -> NVlabs module prefix."""
    out = {"conv1": "synthesis.b4.conv1", "to_rgb1": "synthesis.b4.torgb"}
    for k in range(num_blocks - 1):
        res = 2 ** (k + 3)
        out[f"convs.{2 * k}"] = f"synthesis.b{res}.conv0"
        out[f"convs.{2 * k + 1}"] = f"synthesis.b{res}.conv1"
        out[f"to_rgbs.{k}"] = f"synthesis.b{res}.torgb"
    return out


def _noise_target(i: int) -> str:
    if i == 0:
        return "synthesis.b4.conv1.noise_const"
    k, second = divmod(i - 1, 2)
    return f"synthesis.b{2 ** (k + 3)}.conv{second}.noise_const"


def rosinality_to_nvlabs(sd: dict[str, torch.Tensor], latent_avg: Optional[torch.Tensor] = None
                         ) -> tuple[dict[str, tuple[str, torch.Tensor]], dict[str, str], list[str]]:
    """Rename (and reshape) a rosinality generator state dict to NVlabs names.

    Returns:
        (provided: NVlabs name -> (rosinality key, tensor), ignored: key -> why,
         unknown: rosinality keys the map does not cover).
    """
    num_blocks = 1 + sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    prefixes = _prefix_map(num_blocks)
    provided: dict[str, tuple[str, torch.Tensor]] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for key, t in sd.items():
        if _KERNEL_KEYS.match(key):
            ignored[key] = "fixed resampling kernel (the model rebuilds its resample_filter)"
            continue
        m = re.fullmatch(r"style\.(\d+)\.(weight|bias)", key)
        if m and int(m.group(1)) >= 1:
            provided[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = (key, t)
            continue
        if key == "input.input":
            provided["synthesis.b4.const"] = (key, t.reshape(t.shape[1:]))
            continue
        m = re.fullmatch(r"noises\.noise_(\d+)", key)
        if m:
            provided[_noise_target(int(m.group(1)))] = (key, t.reshape(t.shape[-2:]))
            continue
        module, _, suffix = key.partition(".")
        if module in ("convs", "to_rgbs"):
            index, _, suffix = suffix.partition(".")
            module = f"{module}.{index}"
        target = prefixes.get(module)
        if target is None or suffix not in _LAYER_MAP:
            unknown.append(key)
            continue
        if suffix == "conv.weight":
            t = t.reshape(t.shape[1:])  # [1, O, I, k, k] -> [O, I, k, k]
        elif suffix in ("noise.weight", "bias"):
            t = t.reshape(-1) if suffix == "bias" else t.reshape([])
        provided[f"{target}.{_LAYER_MAP[suffix]}"] = (key, t)
    if latent_avg is not None:
        provided["mapping.w_avg"] = ("latent_avg", latent_avg.reshape(-1))
    return provided, ignored, unknown


def _check_kernels(sd: dict[str, torch.Tensor], config: StyleGAN2Config) -> list[str]:
    """Keys whose resampling kernel is not the config's filter (upsampling gain 4)."""
    expected = setup_filter(list(config.resample_filter)) * 4
    return [k for k, t in sd.items() if _KERNEL_KEYS.match(k)
            and (tuple(t.shape) != tuple(expected.shape)
                 or not torch.allclose(t.float(), expected, atol=1e-6))]


def load_rosinality_generator(path: PathLike, which: str = "g_ema", *,
                              config: Union[str, StyleGAN2Config, None] = None,
                              strict: bool = True, dtype: Optional[torch.dtype] = torch.float32,
                              device: Union[str, torch.device] = "cpu",
                              w_avg_samples: int = 4096,
                              max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Generator, LoadReport]:
    """Build a :class:`Generator` from a rosinality stylegan2-pytorch checkpoint.

    Args:
        path: the ``.pt`` file (a checkpoint dict, or a bare generator state dict).
        which: the generator entry ("g_ema" or "g").
        config: a StyleGAN2Config or preset name; None infers it from the shapes
            (with conv_clamp None, as rosinality never clamps).
        strict: raise CheckpointMismatchError on missing keys or shape mismatches,
            CheckpointError on keys the map does not know or a different blur kernel.
        dtype, device: of the loaded weights (dtype None keeps the file's).
        w_avg_samples: latents averaged for w_avg when the file has no latent_avg
            (0 leaves w_avg missing).
    Returns:
        (generator in eval mode with requires_grad off, LoadReport naming rosinality keys).
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = safe_torch_load(path, max_bytes=max_bytes)
    if which in ckpt and isinstance(ckpt[which], dict):
        sd = ckpt[which]
    elif any(k.startswith("style.") for k in ckpt):
        sd, which = ckpt, "state dict"
    else:
        raise CheckpointError(f"rosinality checkpoint {path} has no {which!r} entry "
                              f"(keys: {sorted(map(str, ckpt))[:8]})")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    latent_avg = ckpt.get("latent_avg") if which != "state dict" else None
    report = LoadReport(source=str(path))
    provided, report.ignored, unknown = rosinality_to_nvlabs(sd, latent_avg)
    report.unexpected += unknown
    if strict and unknown:
        raise CheckpointError(f"rosinality checkpoint {path}: keys outside the key map: "
                              f"{unknown[:8]}")
    if config is None:
        cfg = dataclasses.replace(infer_config({k: t for k, (_, t) in provided.items()},
                                               name=f"rosinality-{which}"),
                                  conv_clamp=None)
        if "mapping.w_avg" not in provided and w_avg_samples > 0:  # estimated below
            mapping = dataclasses.replace(cfg.mapping, w_avg_beta=0.998)
            cfg = dataclasses.replace(cfg, mapping=mapping)
    else:
        cfg = get_preset(config) if isinstance(config, str) else config.validate()
    bad = _check_kernels(sd, cfg)
    if bad:
        msg = f"resampling kernels differ from the {list(cfg.resample_filter)} filter: {bad[:4]}"
        if strict:
            raise CheckpointError(f"rosinality checkpoint {path}: {msg}")
        report.notes.append(msg)
    estimate = "mapping.w_avg" not in provided and w_avg_samples > 0
    with torch.device("meta"):
        G = Generator(cfg)
    for name, _ in G.named_buffers():
        if name.endswith("resample_filter"):
            provided[name] = ("(rebuilt filter)", setup_filter(list(cfg.resample_filter)))
    if estimate:
        provided["mapping.w_avg"] = ("(estimated)", torch.zeros(cfg.w_dim))
    report.weights["G"] = f"{which} from {path} (rosinality key map)"
    assign_tensors({"G": G}, {"G": provided}, report, strict=strict, dtype=dtype, device=device)
    report.loaded = [k for k in report.loaded if not k.startswith("(")]
    report.notes.append("resample_filter buffers rebuilt from the config's filter")
    if estimate:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(w_avg_samples, cfg.z_dim, generator=gen).to(device=device)
            c = torch.zeros(w_avg_samples, cfg.c_dim, device=device) if cfg.c_dim else None
            w = G.mapping(z.to(G.mapping.fc0.weight.dtype), c)[:, 0]
            G.mapping.w_avg.copy_(w.mean(dim=0))
        report.notes.append(f"w_avg estimated from {w_avg_samples} latents (seed 0): the file "
                            "has no latent_avg")
    report.notes.append(f"config: {cfg.img_resolution}^2, channel_base {cfg.channel_base}, "
                        f"w_dim {cfg.w_dim}, {cfg.mapping.num_layers} mapping layers, no clamp")
    return G, report
