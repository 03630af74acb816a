"""facegen_rt: an inference engine for controllable face and human image generation."""

__version__ = "0.1.0"
