"""Students: built from a teacher UNet, exported merged, saved as SCA-DM bundles.

A student bundle is an ordinary SCA-DM bundle (``model.safetensors`` with the
student's UNet under ``unet.*`` plus the teacher's style encoder and VQ,
``config.json``) whose ``pipeline.json`` carries an extra ``"consistency"`` entry::

    {"prediction": "v", "guidance": 3.0,
     "consistency": {"sampler": {"grid_steps": 50, "spacing": "uniform",
                                 "sigma_data": 0.5, "timestep_scaling": 10.0},
                     "guidance_embedding": true, "guidance_range": [1.5, 4.5],
                     "skip": 1, "mode": "lora", "steps": 4, "teacher": "..."}}

With ``guidance_embedding`` the bundle also holds ``guidance_embed.safetensors``
(the :class:`GuidanceEmbedding` weights, kept out of ``model.safetensors`` so that
file stays loadable by every plain SCA-DM reader). ``SemanticPipeline.from_pretrained``
wraps the UNet then, and ``generate(..., sampler="lcm", steps=4)`` samples with the
student's own grid. A student distilled at one fixed scale without the embedding has
its guidance baked in: its ``pipeline.json`` says ``"guidance": 1.0``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Optional, Union

import torch.nn as nn
from safetensors.torch import load_file, save_file

from .guidance import GuidanceConditionedUNet, GuidanceEmbedding
from .lora import add_lora, merge_lora

GUIDANCE_WEIGHTS = "guidance_embed.safetensors"


def build_student(teacher_unet: nn.Module, mode: str = "full", guidance_embedding: bool = False,
                  lora_rank: int = 8, lora_alpha: Optional[float] = None,
                  lora_target: str = "all") -> nn.Module:
    """A trainable student initialised from the teacher (the teacher is not modified).

    mode "full": every UNet weight trains; "lora": the UNet is frozen and adapters train.
    A guidance embedding (zero-initialised, trainable) wraps the UNet when asked.
    Uses the global torch RNG for the adapters' and embedding's initialisation.
    """
    if mode not in ("full", "lora"):
        raise ValueError(f"student mode must be 'full' or 'lora', got {mode!r}")
    unet = copy.deepcopy(teacher_unet).train()
    if mode == "full":
        unet.requires_grad_(True)
    else:
        add_lora(unet, lora_rank, lora_alpha, lora_target)
    student = GuidanceConditionedUNet(unet) if guidance_embedding else unet
    if guidance_embedding:
        student.guidance_embed.requires_grad_(True)
    return student


def export_student(student: nn.Module) -> nn.Module:
    """An inference copy: adapters merged, eval mode, no grads (the argument is kept)."""
    out = copy.deepcopy(student)
    merge_lora(out)
    return out.eval().requires_grad_(False)


def inner_unet(student: nn.Module) -> nn.Module:
    return student.unet if isinstance(student, GuidanceConditionedUNet) else student


def save_student(path: Union[str, Path], config, student: nn.Module, style_encoder: nn.Module,
                 vq: nn.Module, *, prediction: str, consistency: dict,
                 default_guidance: float) -> Path:
    """Write a student bundle (see the module docstring); ``student`` must be exported
    (merged). Returns the bundle directory."""
    from facegen_rt.weights import save_scadm

    path = Path(path)
    save_scadm(path, config, inner_unet(student), style_encoder, vq)
    entry = dict(consistency)
    entry["guidance_embedding"] = isinstance(student, GuidanceConditionedUNet)
    if entry["guidance_embedding"]:
        tensors = {k: v.detach().cpu().contiguous()
                   for k, v in student.guidance_embed.state_dict().items()}
        tmp = path / (GUIDANCE_WEIGHTS + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path / GUIDANCE_WEIGHTS)
    doc = {"prediction": prediction, "guidance": float(default_guidance), "consistency": entry}
    (path / "pipeline.json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_student_unet(path: Union[str, Path], unet: nn.Module, consistency: dict) -> nn.Module:
    """The pipeline's UNet for a student bundle: ``unet`` itself, or wrapped with the
    bundle's guidance embedding when ``consistency["guidance_embedding"]``."""
    if not consistency.get("guidance_embedding"):
        return unet
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = folder / GUIDANCE_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"student bundle {path}: pipeline.json declares a guidance "
                                f"embedding but {weights.name} is missing")
    cfg = unet.cfg
    w = unet.time_embed[0].weight
    emb = GuidanceEmbedding(cfg.time_embed_dim, cfg.model_channels)
    emb.load_state_dict(load_file(str(weights)), strict=True)
    return GuidanceConditionedUNet(unet, emb.to(w.device, w.dtype)).eval().requires_grad_(False)
