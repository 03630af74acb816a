"""Loading .ckpt / .pt files without ever running code from them.

Everything goes through ``torch.load(weights_only=True)``: its unpickler builds only
tensors and plain containers and refuses any other global. On top of that:

* a size limit checked before reading (default 8 GiB);
* clear errors for truncated or corrupt files, for refused pickles (naming the
  offending globals) and for files that do not hold a dict;
* PyTorch Lightning 1.x checkpoints key their ``callbacks`` entry by callback *classes*
  (e.g. ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``), which
  weights_only refuses. A short, fixed list of such class names is mapped to inert
  placeholder classes defined here (Lightning is never imported and none of its code
  runs), so those checkpoints load; any other global is still refused.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

DEFAULT_MAX_BYTES = 8 * 1024 ** 3

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint could not be read as requested."""


class CheckpointCorruptError(CheckpointError):
    """The file is truncated, damaged, or not a PyTorch checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle references code or objects outside the safe allow-list."""


class CheckpointTooLargeError(CheckpointError):
    """The file is larger than the configured limit."""


class InertGlobal:
    """Placeholder for an allow-listed foreign class: accepts and discards everything."""

    qualified_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.qualified_name}>"


# Classes Lightning 1.x pickles by reference (as dict keys of "callbacks"); their state
# is plain data. Only these names get placeholders.
LIGHTNING_INERT_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
)


def _placeholder(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (InertGlobal,), {"qualified_name": name})


_PLACEHOLDERS = [(_placeholder(n), n) for n in LIGHTNING_INERT_GLOBALS]


def safe_torch_load(path: PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    map_location: Union[str, torch.device] = "cpu", mmap: bool = True) -> dict:
    """Read a checkpoint with the weights-only unpickler.

    Args:
        path: a .ckpt / .pt / .pth file (zip or legacy torch.save format).
        max_bytes: refuse files larger than this.
        map_location: where tensors go.
        mmap: memory-map zip-format files (tensors are read lazily from disk).
    Returns:
        The top-level dict.
    Raises:
        FileNotFoundError; CheckpointTooLargeError; CheckpointCorruptError;
        UnsafeCheckpointError; CheckpointError (not a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointTooLargeError(
            f"checkpoint {path} is {size / 2**30:.2f} GiB, over the limit of "
            f"{max_bytes / 2**30:.2f} GiB (pass max_bytes to raise it)")
    if size == 0:
        raise CheckpointCorruptError(
            f"checkpoint {path} is truncated or corrupt: the file is empty")
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_PLACEHOLDERS):
            obj = torch.load(path, map_location=map_location, weights_only=True,
                             mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        raise _classify_unpickling_error(path, exc, is_zip) from None
    except Exception as exc:  # noqa: BLE001
        # Bad bytes fail in many ways: a bad zip, EOF, RuntimeError from the reader,
        # and in the unpickler whatever its stack or memo lookups raise (IndexError,
        # KeyError, ...; ~7 % of random 2 kB files).
        raise CheckpointCorruptError(
            f"checkpoint {path} is truncated or corrupt: {type(exc).__name__}: "
            f"{_first_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict "
                              "(a state_dict or a Lightning checkpoint)")
    return obj


def _classify_unpickling_error(path: Path, exc: Exception, is_zip: bool) -> CheckpointError:
    msg = str(exc)
    names = re.findall(r"GLOBAL ([\w.]+)", msg)
    if is_zip:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path) or names
        except Exception:  # the opcode scan itself failed: keep what the message named
            pass
    names = [n for n in names if n not in LIGHTNING_INERT_GLOBALS]
    if names or re.search(r"[Gg]lobal|Unsupported class|Can only build", msg):
        listed = ", ".join(sorted(set(names))) or _detail(msg)
        return UnsafeCheckpointError(
            f"checkpoint {path} refused: the checkpoint contains code or objects outside the "
            f"safe allow-list ({listed}); it was not executed. Export a plain state_dict "
            "(tensors only) from a trusted environment, or convert it to safetensors.")
    return CheckpointCorruptError(f"checkpoint {path} is truncated or corrupt: {_detail(msg)}")


def _detail(msg: str) -> str:
    """The specific part of torch's weights-only error message."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", msg, re.S)
    return (m.group(1) if m else msg).strip().splitlines()[0][:300]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def extract_state_dict(ckpt: dict, path: PathLike = "") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: ``ckpt["state_dict"]`` when present, else ``ckpt``
    itself (a bare state_dict); entries that are not tensors under string keys are
    left out. Raises CheckpointError when no tensor remains.
    """
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, dict):
        raise CheckpointError(
            f"checkpoint {path}: 'state_dict' is a {type(sd).__name__}, expected a dict")
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"checkpoint {path} holds no tensors (keys: {sorted(map(str, sd))[:8]})")
    return tensors
