"""Reading NVlabs StyleGAN2 ``.pkl`` network pickles without running anything from them.

An NVlabs pickle (stylegan2-ada-pytorch, stylegan3, DragGAN) is a plain
``pickle.dump`` of ``{"G": ..., "D": ..., "G_ema": ..., "augment_pipe": ...,
"training_set_kwargs": ...}``. Every network is a ``torch_utils.persistence`` object:
unpickling calls ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where

    meta = {"type": "class", "version": 6, "module_src": <the module's source code>,
            "class_name": "Generator", "state": <the nn.Module's __dict__>}

and the official loader *executes* ``module_src`` to rebuild the class. Here a
restricted unpickler resolves every global through a fixed allow-list instead:

* the persistence hook becomes :class:`PersistentObject`, which keeps the class name,
  a SHA-256 of the source (never executed) and the state;
* ``dnnlib.EasyDict`` becomes a plain dict subclass;
* tensors are rebuilt by torch's own rebuild functions; each storage arrives as a
  ``torch.save`` blob, read with ``torch.load(weights_only=True)``;
* containers (OrderedDict, set, ...), torch dtypes/devices/sizes and numpy arrays,
  scalars and dtypes (under their numpy 1 names ``numpy.core.multiarray.*`` and their
  numpy 2 names ``numpy._core.multiarray.*``) are allowed.

Any other global (``os.system``, ``builtins.eval``, an unknown class, ...) stops the load
with :class:`UnsafeCheckpointError` naming it; nothing from the file is imported or run.

The module state is walked like ``nn.Module.state_dict``: ``_parameters``, then
persistent ``_buffers``, then ``_modules`` recursively, giving the official dotted names.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import hashlib
import io
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from facegen_rt.models.stylegan2 import Generator, MappingConfig, StyleGAN2Config, get_preset

from .report import LoadReport, assign_tensors
from .safe_torch_load import (DEFAULT_MAX_BYTES, CheckpointCorruptError, CheckpointError,
                              CheckpointTooLargeError, PathLike, UnsafeCheckpointError,
                              extract_state_dict, safe_torch_load)

# The first object of a legacy (non-zip) torch.save file: its magic number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class PersistentObject:
    """Stand-in for an unpickled NVlabs persistent object (its code is never run).

    Attributes:
        class_name: e.g. "Generator", "SynthesisLayer".
        version: torch_utils.persistence format version (6 in every known release).
        module_src_sha256: SHA-256 of the embedded module source code.
        state: the pickled nn.Module __dict__ (``_parameters``, ``_buffers``,
            ``_modules``, ``_init_args``, ``_init_kwargs``, plain attributes).
    """

    def __init__(self, class_name: str, version: Any, module_src_sha256: str, state: dict):
        self.class_name = class_name
        self.version = version
        self.module_src_sha256 = module_src_sha256
        self.state = state

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("a persistent object received unexpected extra state")

    def __repr__(self) -> str:
        return f"<persistent {self.class_name} (source sha256 {self.module_src_sha256[:12]}...)>"


class EasyDict(dict):
    """Stand-in for dnnlib.EasyDict: a dict whose keys read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Replaces torch_utils.persistence._reconstruct_persistent_obj: records, never executes."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("persistent object metadata is not a 'class' record")
    src = meta.get("module_src", "")
    digest = hashlib.sha256(src.encode("utf-8") if isinstance(src, str) else bytes(src)).hexdigest()
    state = meta.get("state")
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent {meta.get('class_name')!r} has no state dict")
    return PersistentObject(str(meta.get("class_name")), meta.get("version"), digest, dict(state))


def _load_storage(blob: bytes):
    """Replaces torch.storage._load_from_bytes, which calls torch.load(weights_only=False)."""
    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage is not a bytes blob")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TypedStorage is deprecated"
        storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a storage blob held a {type(storage).__name__}")
    return storage


def _no_hooks(hooks: Any) -> None:
    if hooks:  # hooks would be callables; tensors in checkpoints never carry any
        raise pickle.UnpicklingError("a pickled tensor carries backward hooks")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("a tensor is built on something other than a storage")
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False,
                                           collections.OrderedDict(), metadata)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride, False, None)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter wraps something other than a tensor")
    _no_hooks(backward_hooks)
    return data.detach()  # parameters come back as plain tensors


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if state:
        raise pickle.UnpicklingError("a pickled parameter carries extra Python state")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays can be rebuilt")
    return _NP_RECONSTRUCT(subtype, shape, dtype)


def _np_scalar(dtype, *data):
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("a numpy scalar without a dtype")
    return _NP_SCALAR(dtype, *data)


def _np_frombuffer(buf, dtype, shape, order):
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol 2 pickles bytes as _codecs.encode(latin-1 text, "latin1")."""
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode of a non-string")
    return text.encode(encoding)


def _copyreg_reconstructor(cls, base, state):
    """Protocol 0/1 objects: only the stand-in dict classes, with dict as the base."""
    if cls is not EasyDict or base is not dict:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} is not allowed")
    return copyreg._reconstructor(cls, base, state)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _np_module in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spellings
    _ALLOWED[(f"{_np_module}.multiarray", "_reconstruct")] = _np_reconstruct
    _ALLOWED[(f"{_np_module}.multiarray", "scalar")] = _np_scalar
    _ALLOWED[(f"{_np_module}.numeric", "_frombuffer")] = _np_frombuffer


# torch pickles a dtype as the global torch.<name>; a fixed table, so that no lookup on
# the torch module can trigger one of its lazy submodule imports.
_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "complex64", "complex128", "uint8", "int8",
    "int16", "int32", "int64", "bool", "float", "double", "half", "long", "int", "short")}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, qualified: str):
        super().__init__(qualified)
        self.qualified = qualified


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals through the allow-list only; persistent ids are refused."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles spell some modules the Python 2 way (__builtin__.set);
        # translate as pickle's own find_class does, then check the allow-list.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise _RefusedGlobal(f"{module}.{name}")


@dataclass
class PickledNetwork:
    """One network read from an NVlabs pickle (e.g. ``G_ema``).

    ``state_dict`` uses the official names (``mapping.fc0.weight``, ...), in
    nn.Module.state_dict order; parameters come back as plain tensors.
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    module_src_sha256: str
    version: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)


def read_nvlabs_pickle(path: PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Read an NVlabs network pickle with the restricted unpickler.

    Returns:
        {key: PickledNetwork for persistent networks (G, D, G_ema, augment_pipe),
         plain Python data (dicts, lists, numbers, numpy values) for the rest}.
    Raises:
        FileNotFoundError; CheckpointTooLargeError; UnsafeCheckpointError (a global
        outside the allow-list; nothing was imported or run); CheckpointCorruptError.
    """
    path = Path(path)
    return _networks(_read_raw(path, max_bytes), path)


def _networks(data: Any, path: Path) -> dict[str, Any]:
    if isinstance(data, PersistentObject):
        data = {data.class_name: data}
    if not isinstance(data, dict):
        raise CheckpointError(f"NVlabs pickle {path} holds a {type(data).__name__}, "
                              "expected a dict")
    return {str(k): _to_network(v, str(k)) if isinstance(v, PersistentObject) else _plain(v)
            for k, v in data.items()}


def _read_raw(path: Path, max_bytes: int) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointTooLargeError(
            f"checkpoint {path} is {size / 2**30:.2f} GiB, over the limit of "
            f"{max_bytes / 2**30:.2f} GiB (pass max_bytes to raise it)")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f).load()
        except _RefusedGlobal as exc:
            raise UnsafeCheckpointError(
                f"NVlabs pickle {path} refused: it references {exc.qualified}, which is outside "
                "the allow-list of safe globals; nothing from the file was imported or run"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, LookupError, RuntimeError, UnicodeDecodeError) as exc:
            raise CheckpointCorruptError(
                f"NVlabs pickle {path} is truncated, corrupt or not a network pickle: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            ) from None


def _to_network(obj: PersistentObject, where: str) -> PickledNetwork:
    state = obj.state
    sd: dict[str, torch.Tensor] = {}
    _flatten(obj, "", sd, where)
    skip = {"_parameters", "_buffers", "_modules", "_init_args", "_init_kwargs"}
    attributes = {k: _plain(v) for k, v in state.items()
                  if not k.startswith("_") and k not in skip
                  and isinstance(v, (bool, int, float, str, list, tuple, dict, type(None)))}
    return PickledNetwork(
        class_name=obj.class_name,
        init_args=tuple(_plain(a) for a in state.get("_init_args", ()) or ()),
        init_kwargs=_plain(dict(state.get("_init_kwargs", {}) or {})),
        state_dict=sd, module_src_sha256=obj.module_src_sha256, version=obj.version,
        attributes=attributes)


def _flatten(obj: PersistentObject, prefix: str, out: dict, where: str) -> None:
    """nn.Module.state_dict order: own parameters, persistent buffers, then submodules."""
    state = obj.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, t in (state.get("_parameters") or {}).items():
        if t is not None:
            out[prefix + name] = _tensor(t, f"{where}: {prefix}{name}")
    for name, t in (state.get("_buffers") or {}).items():
        if t is not None and name not in non_persistent:
            out[prefix + name] = _tensor(t, f"{where}: {prefix}{name}")
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"{where}: submodule {prefix}{name} is a {type(child).__name__}, "
                                  "not a persistent network object")
        _flatten(child, f"{prefix}{name}.", out, where)


def _tensor(t: Any, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{what} is a {type(t).__name__}, expected a tensor")
    return t


def _plain(value: Any) -> Any:
    """Stand-in dicts -> dict, recursively (numpy values and tensors are kept)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def load_nvlabs_generator(path: PathLike, which: str = "G_ema", *,
                          config: Union[str, StyleGAN2Config, None] = None, strict: bool = True,
                          dtype: Optional[torch.dtype] = torch.float32,
                          device: Union[str, torch.device] = "cpu",
                          max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Generator, LoadReport]:
    """Build a :class:`Generator` from an NVlabs pickle or a torch.save'd state dict.

    Args:
        path: an NVlabs ``.pkl``, or a ``.pt``/``.pth`` state dict with NVlabs key names
            (read with torch.load(weights_only=True)).
        which: the network to load from a pickle ("G_ema", "G").
        config: a StyleGAN2Config or preset name; None = the pickle's init kwargs (for a
            bare state dict, None infers the architecture from the tensor shapes, with
            NVlabs defaults conv_clamp 256 and fused_modconv "inference_only").
        strict: raise CheckpointMismatchError on missing keys or shape mismatches.
        dtype: cast the weights to this dtype (None keeps the file's).
        device: where the weights go.
    Returns:
        (generator in eval mode with requires_grad off, LoadReport).
    """
    path = Path(path)
    report = LoadReport(source=str(path))
    # A legacy torch.save file is a pickle too: its first object is torch's magic number.
    raw = None if zipfile.is_zipfile(path) else _read_raw(path, max_bytes)
    state_dict_file = raw is None or (type(raw) is int and raw == _TORCH_LEGACY_MAGIC)
    if state_dict_file:
        sd = extract_state_dict(safe_torch_load(path, max_bytes=max_bytes), path)
        cfg = _resolve(config) if config is not None else infer_config(sd)
        report.notes.append("plain state dict (torch.load weights_only=True)")
    else:
        networks = _networks(raw, path)
        net = networks.get(which)
        if not isinstance(net, PickledNetwork):
            found = sorted(k for k, v in networks.items() if isinstance(v, PickledNetwork))
            raise CheckpointError(f"NVlabs pickle {path} has no network {which!r}; it has {found}")
        if net.class_name != "Generator":
            raise CheckpointError(f"{path}: {which} is a {net.class_name}, not a Generator")
        sd = net.state_dict
        if config is not None:
            cfg = _resolve(config)
        else:
            try:
                cfg = StyleGAN2Config.from_init_kwargs(net.init_kwargs, net.init_args, name=which)
            except ValueError as exc:
                raise CheckpointError(
                    f"{path}: {which} is not a StyleGAN2 generator this package builds (a "
                    f"StyleGAN3 or a modified network?): {exc}") from None
        report.notes.append(f"{which}: NVlabs {net.class_name} (persistence v{net.version}, source "
                            f"sha256 {net.module_src_sha256[:16]}, not executed)")
    with torch.device("meta"):
        G = Generator(cfg)
    report.weights["G"] = f"{'state dict' if state_dict_file else which} from {path}"
    provided = {"G": {k: (k, t) for k, t in sd.items()}}
    assign_tensors({"G": G}, provided, report, strict=strict, dtype=dtype, device=device)
    return G, report


def _resolve(config: Union[str, StyleGAN2Config]) -> StyleGAN2Config:
    return get_preset(config) if isinstance(config, str) else config.validate()


def infer_config(sd: dict[str, torch.Tensor], name: str = "inferred") -> StyleGAN2Config:
    """A StyleGAN2Config from the shapes of an NVlabs-named generator state dict.

    Reads z_dim / c_dim / w_dim and the mapping depth from ``mapping.*``, resolution,
    channels, image channels, kernel size, noise and architecture from
    ``synthesis.b{res}.*``. What weights do not record takes NVlabs' values: conv_clamp
    256, the [1, 3, 3, 1] filter, fused_modconv "inference_only", lr multiplier 0.01.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(f"can't infer the StyleGAN2 architecture: {key} is missing")
        return tuple(sd[key].shape)

    num_layers = 0
    while f"mapping.fc{num_layers}.weight" in sd:
        num_layers += 1
    if num_layers == 0:
        raise CheckpointError("can't infer the StyleGAN2 architecture: no mapping.fc0.weight")
    w_dim = shape(f"mapping.fc{num_layers - 1}.weight")[0]
    hidden = shape("mapping.fc0.weight")[0]
    c_dim = embed = 0
    if "mapping.embed.weight" in sd:
        embed, c_dim = shape("mapping.embed.weight")
    z_dim = shape("mapping.fc0.weight")[1] - embed
    resolutions = sorted({int(k.split(".")[1][1:]) for k in sd
                          if k.startswith("synthesis.b") and k.split(".")[1][1:].isdigit()})
    if not resolutions:
        raise CheckpointError("can't infer the StyleGAN2 architecture: no synthesis.b* keys")
    top = resolutions[-1]
    channels = {r: shape(f"synthesis.b{r}.conv1.weight")[0] for r in resolutions}
    channel_max = max(channels.values())
    below = [channels[r] * r for r in resolutions if channels[r] < channel_max]
    channel_base = min(below) if below else channel_max * top
    mapping = MappingConfig(num_layers=num_layers,
                            layer_features=hidden if num_layers > 1 and hidden != w_dim else None,
                            embed_features=embed if c_dim and embed != w_dim else None,
                            w_avg_beta=0.998 if "mapping.w_avg" in sd else None)
    cfg = StyleGAN2Config(
        name=name, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=top,
        img_channels=shape(f"synthesis.b{top}.torgb.weight")[0], channel_base=channel_base,
        channel_max=channel_max, kernel_size=shape(f"synthesis.b{top}.conv1.weight")[-1],
        use_noise=f"synthesis.b{top}.conv1.noise_const" in sd,
        architecture="skip" if top == 4 or "synthesis.b4.torgb.weight" in sd else "orig",
        mapping=mapping)
    for r in resolutions:
        if cfg.channels(r) != channels[r]:
            raise CheckpointError(f"can't infer the StyleGAN2 architecture: {channels[r]} channels "
                                  f"at {r}^2 do not follow min(channel_base // res, channel_max)")
    return cfg.validate()
