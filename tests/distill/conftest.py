"""Shared fixtures: a randomly initialised "tiny" SCA-DM teacher, a short distillation
run on a tiny random batch, and a student bundle written by the CLI.

The models are tiny, so the package runs on one intra-op thread: a second thread
saves little here and, on a machine busy with other jobs, OpenMP's waiting threads
can slow these many small ops down tenfold."""

from __future__ import annotations

import pytest

from facegen_rt.distill import DistillConfig, Distiller
from facegen_rt.distill.scadm import SCADMTask, random_source
from facegen_rt.pipelines.semantic import SemanticPipeline

from tests.conftest import torch_threads


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def teacher():
    return SemanticPipeline.from_preset("tiny", seed=0)


def make_distiller(teacher, **overrides) -> Distiller:
    """A distiller of the tiny teacher on 4 fixed random items."""
    task = SCADMTask(teacher.unet, teacher.style_encoder, teacher.prediction,
                     teacher.schedule.alphas_cumprod)
    opts = dict(mode="full", lr=2e-3, warmup=1, batch=4, guidance_min=1.0, guidance_max=4.0,
                guidance_embedding=True, lora_rank=4, seed=0)
    opts.update(overrides)
    return Distiller(task, random_source(teacher.config, 4, seed=0), teacher.schedule,
                     DistillConfig(**opts))


@pytest.fixture(scope="package")
def trained(teacher):
    """30 steps of full-weight distillation with a guidance embedding (fixed seed)."""
    d = make_distiller(teacher)
    d.run(max_steps=30, progress=False)
    return d


@pytest.fixture(scope="package")
def student_bundle(tmp_path_factory):
    """A student bundle from ``python -m facegen_rt.distill.train`` (3 steps, LoRA)."""
    from facegen_rt.distill.train import main

    out = tmp_path_factory.mktemp("student")
    rc = main(["--teacher", "preset:tiny", "--random-data", "4", "--max-steps", "2",
               "--batch", "2", "--mode", "lora", "--lora-rank", "2", "--guidance", "1", "3",
               "--out", str(out), "--no-progress", "--log-every", "1"])
    assert rc == 0
    return out
