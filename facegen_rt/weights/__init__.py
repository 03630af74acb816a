"""Weight loading: safe checkpoint reading, the official SCA-DM loader, the NVlabs and
rosinality StyleGAN2 loaders (and :func:`load_generator` over all of them), this project's safetensors bundles, and load reports."""

from .nvlabs_pickle import (PickledNetwork, load_nvlabs_generator, read_nvlabs_pickle)
from .report import CheckpointMismatchError, LoadReport, ShapeMismatch, assign_tensors
from .safe_torch_load import (DEFAULT_MAX_BYTES, CheckpointCorruptError, CheckpointError,
                              CheckpointTooLargeError, UnsafeCheckpointError, extract_state_dict,
                              safe_torch_load)
from .rosinality import load_rosinality_generator, rosinality_to_nvlabs
from .safetensors_io import bundle_paths, load_model, read_bundle, save_model
from .stylegan2_bundle import BUNDLED_GENERATOR, load_generator
from .scadm_loader import (ema_key_map, load_scadm, load_scadm_official, load_vq, save_scadm)

__all__ = [
    "BUNDLED_GENERATOR", "load_generator",
    "CheckpointCorruptError", "CheckpointError", "CheckpointMismatchError",
    "CheckpointTooLargeError",
    "DEFAULT_MAX_BYTES", "LoadReport", "PickledNetwork", "ShapeMismatch", "UnsafeCheckpointError", "assign_tensors",
    "bundle_paths", "ema_key_map", "extract_state_dict", "load_model", "load_nvlabs_generator",
    "load_rosinality_generator", "load_scadm",
    "load_scadm_official", "load_vq", "read_bundle", "read_nvlabs_pickle",
    "rosinality_to_nvlabs", "safe_torch_load", "save_model", "save_scadm",
]
