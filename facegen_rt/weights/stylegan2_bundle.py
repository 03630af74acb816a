"""Load a StyleGAN2 generator from any supported file: this project's safetensors bundle
(the bundled SynthFace generator by default), an NVlabs pickle, or a rosinality .pt."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from facegen_rt.models.stylegan2 import Generator, StyleGAN2Config

from .safe_torch_load import PathLike
from .safetensors_io import load_model

#: The generator trained on SynthFace that ships with the package (see its README).
BUNDLED_GENERATOR = Path(__file__).resolve().parent.parent / "assets" / "stylegan2" / "synthface256.safetensors"


def load_generator(path: Optional[PathLike] = None, *, fmt: str = "auto",
                   device: "str | torch.device" = "cpu") -> Generator:
    """A frozen generator in eval mode.

    Args:
        path: None = the bundled SynthFace generator; a ``.safetensors`` bundle; an NVlabs
            ``.pkl``; or a rosinality ``.pt`` (``fmt="rosinality"``; with ``fmt="auto"``
            a ``.pt``/``.pth`` is read as an NVlabs-keyed state dict).
        fmt: "auto", "bundle", "nvlabs" or "rosinality".
    Raises:
        FileNotFoundError: the file (or the bundled model, if not installed) is missing.
        ValueError: unknown ``fmt``. Checkpoint errors from the loaders pass through.
    """
    if fmt not in ("auto", "bundle", "nvlabs", "rosinality"):
        raise ValueError(f"generator format must be auto, bundle, nvlabs or rosinality, got {fmt!r}")
    p = Path(path) if path is not None else BUNDLED_GENERATOR
    if not p.exists():
        what = "the bundled SynthFace generator" if path is None else "generator file"
        raise FileNotFoundError(f"{what} {p} does not exist")
    if fmt == "bundle" or (fmt == "auto" and (p.suffix == ".safetensors" or p.is_dir())):
        modules, _, _ = load_model(
            p, lambda cfg, names: {"G": Generator(StyleGAN2Config.from_dict(cfg))}, device=device)
        G = modules["G"]
    elif fmt == "rosinality":
        from .rosinality import load_rosinality_generator
        G, _ = load_rosinality_generator(p, device=device)
    else:
        from .nvlabs_pickle import load_nvlabs_generator
        G, _ = load_nvlabs_generator(p, device=device)
    return G.eval().requires_grad_(False)


__all__ = ["BUNDLED_GENERATOR", "load_generator"]
