"""Loading SCA-DM weights: the official Lightning checkpoint (+ the LDM vq-f4 file), and
this project's safetensors bundles.

Official checkpoint layout (``last.ckpt``, ``["state_dict"]``):
    model.diffusion_model.*   UNet, raw weights
    model_ema.*               UNet EMA copy, names with every dot removed
                              (model_ema.diffusion_modelinput_blocks00weight), plus the
                              bookkeeping buffers model_ema.decay / model_ema.num_updates
    cond_stage_model.*        style encoder (no EMA copy exists for it)
    first_stage_model.*       VQ-f4 first stage (present when Lightning saved the whole model)
    betas, alphas_cumprod...  diffusion schedule buffers (recomputed from the preset here)
The separate LDM ``vq-f4/model.ckpt`` has the VQ keys without prefix plus ``loss.*``
(discriminator / LPIPS weights, unused at inference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from facegen_rt.models.sca_dm import SCADMConfig, build_scadm, get_preset
from facegen_rt.models.sca_dm.vq import VQModel

from .report import LoadReport, assign_tensors
from .safe_torch_load import DEFAULT_MAX_BYTES, PathLike, extract_state_dict, safe_torch_load
from .safetensors_io import load_model, save_model

UNET_PREFIX = "model.diffusion_model."
STYLE_PREFIX = "cond_stage_model."
VQ_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "lvlb_weights", "logvar", "scale_factor",
)


def ema_key_map(unet: nn.Module) -> dict[str, str]:
    """{"model_ema.<dotless name>": parameter name} for every UNet parameter.

    LDM's LitEma stores ``diffusion_model.<name>`` with the dots removed. Built from the
    model's own names; raises RuntimeError if two names would collide.
    """
    out: dict[str, str] = {}
    for name, _ in unet.named_parameters():
        key = EMA_PREFIX + ("diffusion_model." + name).replace(".", "")
        if key in out:
            raise RuntimeError(f"EMA names of {out[key]!r} and {name!r} collide ({key})")
        out[key] = name
    return out


def _resolve(preset: Union[str, SCADMConfig]) -> SCADMConfig:
    return get_preset(preset) if isinstance(preset, str) else preset.validate()


def load_scadm_official(ckpt_path: PathLike, vq_path: Optional[PathLike] = None,
                        preset: Union[str, SCADMConfig] = "official", use_ema: bool = False, *,
                        strict: bool = True, dtype: Optional[torch.dtype] = torch.float32,
                        device: Union[str, torch.device] = "cpu",
                        max_bytes: int = DEFAULT_MAX_BYTES):
    """Load the official SCA-DM checkpoint into this package's modules.

    Args:
        ckpt_path: Lightning ``last.ckpt`` (or a bare state_dict with the same keys).
        vq_path: LDM ``vq-f4/model.ckpt``; when None the VQ comes from the checkpoint's
            ``first_stage_model.*`` keys if it has them, else no VQ is returned.
        preset: preset name or config whose shapes the checkpoint must match.
        use_ema: take the UNet weights from ``model_ema.*`` (what the official FID script
            samples with) instead of the raw ones (what the demo uses). The style encoder
            and VQ have no EMA copy: they always load raw.
        strict: raise on missing parameters or shape mismatches (the report is in the
            message); unexpected keys only warn.
        dtype: floating dtype of the returned modules (None keeps the checkpoint's).
        device: where the modules go.
        max_bytes: size limit for each file read.
    Returns:
        (unet, style_encoder, vq or None, LoadReport), modules in eval mode with
        requires_grad off.
    """
    cfg = _resolve(preset)
    sd = extract_state_dict(safe_torch_load(ckpt_path, max_bytes=max_bytes), ckpt_path)
    has_vq = any(k.startswith(VQ_PREFIX) for k in sd)
    vq_from_ckpt = vq_path is None and has_vq
    modules = build_scadm(cfg, with_vq=vq_from_ckpt, device="meta")
    ema_map = ema_key_map(modules["unet"])
    report = LoadReport(source=str(ckpt_path), ema=use_ema)
    provided: dict[str, dict[str, tuple[str, torch.Tensor]]] = {m: {} for m in modules}

    for key, t in sd.items():
        if key.startswith(UNET_PREFIX):
            if use_ema:
                report.ignored[key] = "raw UNet weights, EMA requested"
            else:
                provided["unet"][key[len(UNET_PREFIX):]] = (key, t)
        elif key in EMA_BOOKKEEPING:
            report.ignored[key] = "EMA bookkeeping"
        elif key.startswith(EMA_PREFIX):
            name = ema_map.get(key)
            if name is None:
                report.unexpected.append(key)
            elif use_ema:
                provided["unet"][name] = (key, t)
            else:
                report.ignored[key] = "EMA weights, use_ema=False"
        elif key.startswith(STYLE_PREFIX):
            provided["style_encoder"][key[len(STYLE_PREFIX):]] = (key, t)
        elif key.startswith(VQ_PREFIX):
            if key.startswith(VQ_PREFIX + "loss."):
                report.ignored[key] = "training loss weights (discriminator / LPIPS)"
            elif vq_from_ckpt:
                provided["vq"][key[len(VQ_PREFIX):]] = (key, t)
            else:
                report.ignored[key] = "VQ weights, taken from vq_path instead"
        elif key in SCHEDULE_BUFFERS:
            report.ignored[key] = "diffusion schedule buffer, recomputed from the preset"
        else:
            report.unexpected.append(key)

    if use_ema and not any(k.startswith(EMA_PREFIX) and k not in EMA_BOOKKEEPING for k in sd):
        report.notes.append("use_ema=True but the checkpoint has no model_ema.* weights; "
                            "load with use_ema=False")
    _check_schedule(sd, cfg, report)
    report.weights["unet"] = ("EMA weights (model_ema.*)" if use_ema
                              else "raw weights (model.diffusion_model.*)")
    report.weights["style_encoder"] = "raw weights (cond_stage_model.*; no EMA copy exists)"
    report.weights["vq"] = ("first_stage_model.* from the checkpoint" if vq_from_ckpt
                            else f"from {vq_path}" if vq_path is not None
                            else "not loaded (no vq_path, no first_stage_model.* keys)")
    assign_tensors(modules, provided, report, strict=strict, dtype=dtype, device=device)

    vq = modules.get("vq")
    if vq_path is not None:
        vq, vq_report = load_vq(vq_path, cfg, strict=strict, dtype=dtype, device=device,
                                max_bytes=max_bytes)
        report.merge(vq_report, "vq")
    return modules["unet"], modules["style_encoder"], vq, report


def load_vq(path: PathLike, preset: Union[str, SCADMConfig] = "official", *, strict: bool = True,
            dtype: Optional[torch.dtype] = torch.float32, device: Union[str, torch.device] = "cpu",
            max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[VQModel, LoadReport]:
    """Load an LDM VQModel checkpoint (keys ``encoder.*``, ``quantize.*``, ... and ``loss.*``).

    Keys prefixed ``first_stage_model.`` are accepted too (stripped). ``loss.*`` holds
    training-only weights and is ignored.
    """
    cfg = _resolve(preset)
    sd = extract_state_dict(safe_torch_load(path, max_bytes=max_bytes), path)
    with torch.device("meta"):
        vq = VQModel(cfg.vq)
    report = LoadReport(source=str(path))
    provided: dict[str, tuple[str, torch.Tensor]] = {}
    for key, t in sd.items():
        name = key[len(VQ_PREFIX):] if key.startswith(VQ_PREFIX) else key
        if name.startswith("loss."):
            report.ignored[key] = "training loss weights (discriminator / LPIPS)"
        else:  # keys the model lacks come back as unexpected from assign_tensors
            provided[name] = (key, t)
    report.weights["vq"] = f"raw weights from {path}"
    assign_tensors({"vq": vq}, {"vq": provided}, report, strict=strict, dtype=dtype, device=device)
    return vq, report


def _check_schedule(sd: dict, cfg: SCADMConfig, report: LoadReport) -> None:
    """Note whether the checkpoint's betas agree with the preset's schedule."""
    betas = sd.get("betas")
    if betas is None:
        return
    ours = cfg.schedule.betas()
    if tuple(betas.shape) != tuple(ours.shape):
        report.notes.append(f"checkpoint has {betas.numel()} betas, the preset {ours.numel()}")
        return
    diff = float((betas.double() - ours).abs().max())
    verdict = "match" if diff <= 1e-6 else "DIFFER from"
    report.notes.append(f"checkpoint betas {verdict} the preset schedule (max |diff| {diff:.2e})")


# ---------------------------------------------------------------------- our own bundles
def save_scadm(path: PathLike, config: SCADMConfig, unet: nn.Module, style_encoder: nn.Module,
               vq: Optional[nn.Module] = None) -> Path:
    """Write a bundle: model.safetensors (keys ``unet.*``, ``style_encoder.*``, ``vq.*``)
    and config.json. Returns the weights path."""
    modules = {"unet": unet, "style_encoder": style_encoder}
    if vq is not None:
        modules["vq"] = vq
    return save_model(path, modules, config)


def load_scadm(path: PathLike, *, strict: bool = True, dtype: Optional[torch.dtype] = None,
               device: Union[str, torch.device] = "cpu", max_bytes: int = DEFAULT_MAX_BYTES):
    """Load a bundle written by :func:`save_scadm`.

    Returns:
        (modules dict {"unet", "style_encoder"[, "vq"]}, SCADMConfig, LoadReport).
    """
    def build(config: dict, names: list[str]) -> dict[str, nn.Module]:
        cfg = SCADMConfig.from_dict(config)
        return build_scadm(cfg, with_vq="vq" in names, device="meta")

    modules, config, report = load_model(path, build, strict=strict, dtype=dtype, device=device,
                                         max_bytes=max_bytes)
    return modules, SCADMConfig.from_dict(config), report
