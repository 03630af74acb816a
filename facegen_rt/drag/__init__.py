"""DragGAN point dragging on StyleGAN2 generators.

:class:`DragSession` is the interactive engine (points, mask, step, run, render, undo);
:class:`OfficialDragLoop` computes the same step the way DragGAN's renderer does, for
benchmarks and parity tests; :func:`invert_image` finds a latent for a real photo.
"""

from .features import DEFAULT_FEATURE_RESOLUTION, resolve_feature_block
from .geometry import disk_pixels, scaled_radius, stop_distance, tracking_window
from .inversion import InversionResult, invert_image
from .official import OfficialDragLoop
from .points import DragPoint, UnknownPointError
from .session import LR_CODE, LR_PAPER, NUM_OPTIMIZED_WS, DragSession, to_uint8
from .state import StepResult

__all__ = [
    "DEFAULT_FEATURE_RESOLUTION", "DragPoint", "DragSession", "InversionResult", "LR_CODE",
    "LR_PAPER", "NUM_OPTIMIZED_WS", "OfficialDragLoop", "StepResult", "UnknownPointError",
    "disk_pixels", "invert_image", "resolve_feature_block", "scaled_radius", "stop_distance",
    "to_uint8", "tracking_window",
]
