"""Which models can be exported, and how their weights are found.

``load(name, weights=None, preset=None, seed=0)`` returns a :class:`Loaded`: the graphs
to export, a description of the weights for the manifests (the sha256 of the source
file, or "random-init, seed N"), and model-level settings (the top-level manifest's
"pipeline" section, which the onnxruntime loop reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .exporter import sha256_file
from .graphs import GraphSpec, scadm_graphs, stylegan2_graphs

#: canonical name -> accepted spellings
MODELS = {"sca-dm": ("sca-dm", "scadm", "sca_dm"), "stylegan2": ("stylegan2", "stylegan")}


@dataclass
class Loaded:
    name: str
    graphs: list[GraphSpec]
    weights: dict
    pipeline: dict = field(default_factory=dict)


def canonical(name: str) -> str:
    """The model's canonical name; ValueError naming MODEL for an unknown one."""
    key = str(name).strip().lower()
    for canon, spellings in MODELS.items():
        if key in spellings:
            return canon
    raise ValueError(f"unknown model {name!r} (MODEL argument); choose one of "
                     f"{', '.join(MODELS)}")


def _weights_info(path: Optional[Path], seed: int) -> dict:
    if path is None:
        return {"source": f"random-init, seed {seed}", "sha256": None}
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    return {"source": str(path), "sha256": {f.name: sha256_file(f) for f in files}}


def load(name: str, weights: Optional[str] = None, preset: Optional[str] = None,
         seed: int = 0, feature_res: Optional[int] = None) -> Loaded:
    """Build the named model and its graphs.

    Args:
        name: "sca-dm" or "stylegan2" (see :data:`MODELS`).
        weights: SCA-DM: a bundle folder (model.safetensors + config.json) written by
            facegen_rt.weights.save_scadm; StyleGAN2: an NVlabs .pkl or a .pt state dict.
            None: random initialisation of ``preset`` with ``seed`` (SCA-DM takes the
            bundled model when neither is given; ValueError when none is installed).
        preset: config preset name (see each model's config module).
        seed: torch seed of a random initialisation.
        feature_res: StyleGAN2 only: add a "features" output of the block at this
            resolution to the synthesis graph (DragGAN tracks b128 at 256^2 and above).
    """
    name = canonical(name)
    path = Path(weights) if weights is not None else None
    if path is not None and not path.exists():
        raise ValueError(f"--weights {weights}: no such file or folder")
    if name == "sca-dm":
        if feature_res is not None:
            raise ValueError("--drag-features applies to stylegan2 only")
        return _scadm(path, preset, seed)
    return _stylegan2(path, preset, seed, feature_res)


def _scadm(path: Optional[Path], preset: Optional[str], seed: int) -> Loaded:
    from facegen_rt.data.synthface.classes import CLASS_NAMES
    from facegen_rt.models.sca_dm import build_scadm, get_preset
    from facegen_rt.pipelines.semantic import BUNDLED_MODEL

    pipeline = {"prediction": "eps", "default_guidance": 1.0}
    if path is None and preset is None:
        if not (BUNDLED_MODEL / "model.safetensors").is_file():
            raise ValueError("sca-dm: no bundled model is installed; pass --weights (a bundle "
                             "folder) or --preset (random initialisation), e.g. --preset tiny")
        path = BUNDLED_MODEL
    if path is not None:
        if preset is not None:
            raise ValueError("give either --weights or --preset, not both "
                             "(a bundle carries its own config)")
        from facegen_rt.weights import load_scadm

        modules, cfg, _ = load_scadm(path, dtype=torch.float32)
        if "vq" not in modules:
            raise ValueError(f"--weights {path}: the bundle has no VQ first stage")
        settings = (path if path.is_dir() else path.parent) / "pipeline.json"
        if settings.is_file():
            import json

            doc = json.loads(settings.read_text())
            pipeline = {"prediction": doc.get("prediction", "eps"),
                        "default_guidance": float(doc.get("guidance", 1.0))}
        bundle = path if path.is_dir() else path.parent
        path = bundle / "model.safetensors" if (bundle / "model.safetensors").is_file() else path
    else:
        cfg = get_preset(preset)
        torch.manual_seed(seed)
        modules = build_scadm(cfg)
    for m in modules.values():
        m.float().eval().requires_grad_(False)
    pipeline.update({
        "model": "sca-dm", "config": cfg.name, "image_size": cfg.image_size,
        "latent_size": cfg.latent_size, "latent_channels": cfg.unet.in_channels,
        "num_classes": cfg.unet.num_classes, "context_dim": cfg.unet.context_dim,
        "class_names": list(CLASS_NAMES), "scale_factor": cfg.scale_factor,
        "num_timesteps": cfg.schedule.num_timesteps,
        "alphas_cumprod": [float(a) for a in cfg.schedule.alphas_cumprod().tolist()],
    })
    return Loaded("sca-dm", scadm_graphs(modules, cfg), _weights_info(path, seed), pipeline)


def _stylegan2(path: Optional[Path], preset: Optional[str], seed: int,
               feature_res: Optional[int]) -> Loaded:
    from facegen_rt.models.stylegan2 import Generator, get_preset

    if path is not None:
        from facegen_rt.weights import load_nvlabs_generator

        generator, _ = load_nvlabs_generator(path, config=preset)
    elif preset is None:
        raise ValueError("stylegan2 needs --weights (an NVlabs .pkl or .pt state dict) or "
                         "--preset (random initialisation), e.g. --preset tiny")
    else:
        cfg = get_preset(preset)
        torch.manual_seed(seed)
        generator = Generator(cfg)
    generator = generator.float().eval().requires_grad_(False)
    cfg = generator.config
    pipeline = {"model": "stylegan2", "config": cfg.name, "z_dim": cfg.z_dim, "c_dim": cfg.c_dim,
                "w_dim": cfg.w_dim, "num_ws": generator.num_ws,
                "img_resolution": cfg.img_resolution, "noise_mode": "const"}
    return Loaded("stylegan2", stylegan2_graphs(generator, feature_res),
                  _weights_info(path, seed), pipeline)
