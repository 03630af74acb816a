"""Inference pipelines. :mod:`.semantic`: SCA-DM face synthesis from label maps
(``SemanticPipeline``); :mod:`.generate_cli`: the ``facegen-rt generate`` command."""

from .semantic import GenerationResult, SemanticPipeline, mix_contexts, region_ids

__all__ = ["GenerationResult", "SemanticPipeline", "mix_contexts", "region_ids"]
