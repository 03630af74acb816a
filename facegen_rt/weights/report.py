"""What a checkpoint load did, key by key, and the step that maps checked tensors onto
modules while filling that record."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn

from .safe_torch_load import CheckpointError

_SHOW = 8  # names listed per group before "... and N more"


@dataclass
class ShapeMismatch:
    """A key present on both sides with different shapes."""

    key: str
    expected: tuple[int, ...]
    found: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.key}: model {list(self.expected)}, checkpoint {list(self.found)}"


@dataclass
class LoadReport:
    """The outcome of mapping a checkpoint onto modules.

    Keys are named as in the checkpoint file (for keys of a second file, such as the
    separate VQ checkpoint, as ``"<label>:<key>"``); ``missing`` names model
    parameters as ``"<module>.<parameter>"``.

    Attributes:
        source: the file(s) read.
        ema: True when the UNet weights came from the EMA copy (model_ema.*).
        weights: one line per module saying which weights it received.
        loaded: checkpoint keys copied into a module.
        missing: model parameters the checkpoint did not provide.
        unexpected: checkpoint keys that matched nothing and are not known to be unused.
        ignored: checkpoint key -> why it was deliberately skipped.
        shape_mismatch: keys whose shapes disagree.
        notes: other observations (schedule check, dtype conversion, ...).
    """

    source: str = ""
    ema: bool = False
    weights: dict[str, str] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    shape_mismatch: list[ShapeMismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No missing, unexpected or mismatched key."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def merge(self, other: "LoadReport", label: str) -> None:
        """Fold the report of a second file in, its keys qualified by ``label``."""
        self.source = f"{self.source}; {label}: {other.source}" if self.source else other.source
        self.weights.update(other.weights)
        self.loaded += [f"{label}:{k}" for k in other.loaded]
        self.missing += other.missing
        self.unexpected += [f"{label}:{k}" for k in other.unexpected]
        self.ignored.update({f"{label}:{k}": why for k, why in other.ignored.items()})
        self.shape_mismatch += [ShapeMismatch(f"{label}:{m.key}", m.expected, m.found)
                                for m in other.shape_mismatch]
        self.notes += other.notes

    def __str__(self) -> str:
        lines = [f"load report for {self.source or '<unknown source>'}",
                 f"  loaded: {len(self.loaded)} tensors"]
        for module, what in self.weights.items():
            lines.append(f"  {module}: {what}")
        lines += _group("missing (model parameters not in the checkpoint)", self.missing)
        lines += _group("unexpected (checkpoint keys that match nothing)", self.unexpected)
        if self.shape_mismatch:
            lines.append(f"  shape mismatch: {len(self.shape_mismatch)}")
            lines += [f"    {m}" for m in self.shape_mismatch[:_SHOW]]
            if len(self.shape_mismatch) > _SHOW:
                lines.append(f"    ... and {len(self.shape_mismatch) - _SHOW} more")
        by_reason: dict[str, list[str]] = defaultdict(list)
        for key, why in self.ignored.items():
            by_reason[why].append(key)
        for why, keys in by_reason.items():
            lines += _group(f"ignored ({why})", keys, show=3)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _group(title: str, keys: list[str], show: int = _SHOW) -> list[str]:
    if not keys:
        return []
    out = [f"  {title}: {len(keys)}"]
    out += [f"    {k}" for k in keys[:show]]
    if len(keys) > show:
        out.append(f"    ... and {len(keys) - show} more")
    return out


class CheckpointMismatchError(CheckpointError):
    """Keys or shapes of a checkpoint do not fit the model; ``report`` has the details."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


# provided[module][parameter] = (key in the file, tensor)
Provided = Mapping[str, Mapping[str, tuple[str, torch.Tensor]]]


def assign_tensors(modules: Mapping[str, nn.Module], provided: Provided, report: LoadReport, *,
                   strict: bool = True, dtype: Optional[torch.dtype] = None,
                   device: Union[str, torch.device] = "cpu") -> None:
    """Check ``provided`` against the modules' state_dicts, then make them the modules' weights.

    The modules may live on the meta device (nothing allocated yet): each parameter is
    replaced by a copy of its checkpoint tensor (``assign=True``), owned by the module,
    never a view of a memory-mapped file.

    Args:
        modules: name -> module (names match the keys of ``provided``).
        provided: what the checkpoint offers for each module parameter.
        report: filled with loaded / missing / unexpected / shape_mismatch.
        strict: raise :class:`CheckpointMismatchError` (report in the message) on any
            missing parameter or shape mismatch. Unexpected keys only warn.
            Non-strict loads fill what is missing or mismatched with zeros.
        dtype: cast floating tensors to this dtype (None keeps the checkpoint's).
        device: where the weights go.
    """
    for mname, module in modules.items():
        given = provided.get(mname, {})
        expected = module.state_dict()
        for pname, ref in expected.items():
            entry = given.get(pname)
            if entry is None:
                report.missing.append(f"{mname}.{pname}")
            elif tuple(entry[1].shape) != tuple(ref.shape):
                report.shape_mismatch.append(
                    ShapeMismatch(entry[0], tuple(ref.shape), tuple(entry[1].shape)))
        report.unexpected += [src for pname, (src, _) in given.items() if pname not in expected]
    if strict and (report.missing or report.shape_mismatch):
        raise CheckpointMismatchError(
            f"checkpoint does not fit the model ({len(report.missing)} missing, "
            f"{len(report.shape_mismatch)} shape mismatches); pass strict=False to load anyway\n"
            f"{report}", report)
    if report.unexpected:
        warnings.warn(f"{len(report.unexpected)} unexpected checkpoint keys were not loaded, e.g. "
                      f"{report.unexpected[:3]} (see the LoadReport)", stacklevel=3)

    for mname, module in modules.items():
        given = provided.get(mname, {})
        state = {}
        for pname, ref in module.state_dict().items():
            entry = given.get(pname)
            if entry is not None and tuple(entry[1].shape) == tuple(ref.shape):
                src, t = entry
                report.loaded.append(src)
            else:  # only reachable with strict=False
                t = torch.zeros(ref.shape, dtype=ref.dtype)
            want = dtype if dtype is not None and t.is_floating_point() else t.dtype
            state[pname] = t.to(device=device, dtype=want, copy=True).contiguous()
        module.load_state_dict(state, strict=True, assign=True)
        module.eval().requires_grad_(False)
