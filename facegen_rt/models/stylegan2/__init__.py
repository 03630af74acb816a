"""StyleGAN2 generator with NVlabs parameter names (the network DragGAN edits with).

``Generator(get_preset("paper256"))`` builds the 256^2 generator of the reference key
list; ``Generator.from_init_kwargs(kwargs)`` builds one from the init kwargs stored in
an NVlabs pickle (see facegen_rt.weights.nvlabs_pickle).
"""

from .config import PRESETS, MappingConfig, StyleGAN2Config, get_preset
from .layers import FullyConnectedLayer, SynthesisLayer, ToRGBLayer, normalize_2nd_moment
from .mapping import MappingNetwork
from .synthesis import Generator, SynthesisBlock, SynthesisNetwork

__all__ = [
    "FullyConnectedLayer", "Generator", "MappingConfig", "MappingNetwork", "PRESETS",
    "StyleGAN2Config", "SynthesisBlock", "SynthesisLayer", "SynthesisNetwork", "ToRGBLayer",
    "get_preset", "normalize_2nd_moment",
]
