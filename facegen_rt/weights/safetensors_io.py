"""This project's weight bundles: ``model.safetensors`` + ``config.json``.

Layout: a directory holding both files, or ``<name>.safetensors`` with ``<name>.json``
beside it. Tensor keys are ``<module>.<parameter>`` (e.g. ``unet.out.2.weight``); the
JSON records the format version, the config dataclass (as a dict) and, per module, its
class, parameter count and dtype. Reading is safetensors only: no pickle, no code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .report import LoadReport, assign_tensors
from .safe_torch_load import (DEFAULT_MAX_BYTES, CheckpointCorruptError, CheckpointError,
                              CheckpointTooLargeError, PathLike)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "facegen_rt"
FORMAT_VERSION = 1


def bundle_paths(path: PathLike) -> tuple[Path, Path]:
    """(weights file, config file) for a bundle directory or a ``.safetensors`` path."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    return p / WEIGHTS_NAME, p / CONFIG_NAME


def _config_dict(config: Any) -> dict:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")


def save_model(path: PathLike, modules: Mapping[str, nn.Module], config: Any) -> Path:
    """Write ``modules`` and ``config`` as a bundle; returns the weights path.

    Both files are written to temporary names and renamed into place, so a crash never
    leaves a half-written bundle under the final names.
    """
    weights, cfg_path = bundle_paths(path)
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, dict] = {}
    for name, module in modules.items():
        if not name or "." in name:
            raise ValueError(f"save_model: module name {name!r} must be non-empty and dot-free")
        state = module.state_dict()
        for key, t in state.items():
            if t.is_meta:
                raise ValueError(
                    f"save_model: {name}.{key} is on the meta device (no data to save)")
            tensors[f"{name}.{key}"] = t.detach().to("cpu").contiguous()
        dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()})
        info[name] = {"class": type(module).__name__, "tensors": len(state),
                      "parameters": sum(t.numel() for t in state.values()),
                      "dtype": ",".join(dtypes)}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "modules": ",".join(modules)}
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "config_class": type(config).__name__, "config": _config_dict(config),
           "modules": info, "weights": weights.name}
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_w = weights.with_name(weights.name + ".tmp")
    tmp_c = cfg_path.with_name(cfg_path.name + ".tmp")
    save_file(tensors, str(tmp_w), metadata=meta)
    tmp_c.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_w, weights)
    os.replace(tmp_c, cfg_path)
    return weights


def read_bundle(path: PathLike,
                max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json contents, {key: tensor}) of a bundle, with the checks of :func:`load_model`."""
    weights, cfg_path = bundle_paths(path)
    for p in (weights, cfg_path):
        if not p.is_file():
            raise FileNotFoundError(f"bundle {path}: {p} does not exist")
    size = weights.stat().st_size
    if size > max_bytes:
        raise CheckpointTooLargeError(
            f"bundle {path}: {weights.name} is {size / 2**30:.2f} GiB, over the limit of "
            f"{max_bytes / 2**30:.2f} GiB")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(
            f"bundle {path}: {cfg_path.name} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"bundle {path}: {cfg_path.name} is not a {FORMAT} config "
                              f"(format={doc.get('format') if isinstance(doc, dict) else None!r})")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"bundle {path}: format_version {doc['format_version']} is newer than this reader "
            f"({FORMAT_VERSION}); upgrade facegen_rt")
    for field_name in ("config", "modules"):
        if not isinstance(doc.get(field_name), dict):
            raise CheckpointError(f"bundle {path}: {cfg_path.name} lacks the '{field_name}' object")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise CheckpointCorruptError(
            f"bundle {path}: {weights.name} is truncated or corrupt: {exc}") from None
    return doc, tensors


def load_model(path: PathLike, build: Callable[[dict, list[str]], Mapping[str, nn.Module]], *,
               strict: bool = True, dtype: Optional[torch.dtype] = None,
               device: Union[str, torch.device] = "cpu", max_bytes: int = DEFAULT_MAX_BYTES):
    """Read a bundle and load it into the modules ``build`` makes.

    Args:
        path: bundle directory or ``.safetensors`` path.
        build: ``build(config_dict, module_names) -> {name: module}``; modules may be on
            the meta device (they receive the bundle's tensors).
        strict: raise CheckpointMismatchError on missing keys or shape mismatches.
        dtype: cast floating weights (None keeps the stored dtype).
        device: where the weights go.
        max_bytes: size limit of the weights file.
    Returns:
        ({name: module}, config dict, LoadReport).
    """
    doc, tensors = read_bundle(path, max_bytes)
    names = list(doc["modules"])
    modules = dict(build(doc["config"], names))
    report = LoadReport(source=str(path))
    provided: dict[str, dict[str, tuple[str, torch.Tensor]]] = {m: {} for m in modules}
    for key, t in tensors.items():
        mname, _, pname = key.partition(".")
        if mname in provided:
            provided[mname][pname] = (key, t)
        else:
            report.unexpected.append(key)
    for name in modules:
        cls = doc["modules"].get(name, {}).get("class", "?")
        report.weights[name] = f"{cls} from {bundle_paths(path)[0].name}"
    assign_tensors(modules, provided, report, strict=strict, dtype=dtype, device=device)
    return modules, doc["config"], report
