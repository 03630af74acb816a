"""facegen_rt.runtime.ort: the onnxruntime-only sampling loop reproduces the torch
pipeline's images (same seed, same steps), in this environment and in a fresh venv
that has numpy and onnxruntime but no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from facegen_rt.runtime.ort import OrtSemanticPipeline, torch_randn

REPO = Path(__file__).resolve().parents[2]
MIN_PSNR = 40.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _inputs(seed: int):
    g = np.random.default_rng(seed)
    return (g.integers(0, 19, (64, 64)), g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            g.integers(0, 19, (64, 64)))


def _torch_images(mask, ref, ref_mask, **kw) -> np.ndarray:
    from facegen_rt.pipelines.semantic import SemanticPipeline

    from .conftest import SEED

    pipe = SemanticPipeline.from_preset("tiny", seed=SEED)
    return pipe.generate(mask, reference=ref, reference_mask=ref_mask, **kw).images.numpy()


@pytest.mark.parametrize("shape,seed", [((1, 3, 16, 16), 0), ((2, 3, 7, 5), 12345),
                                        ((3, 3, 32, 32), 2 ** 40 + 7)])
def test_torch_randn_matches_torch(shape, seed):
    want = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
    got = torch_randn(shape, np.random.RandomState(seed % 2 ** 32))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("flavour,sampler,guidance,batch", [
    ("portable", "ddim", 1.0, 1), ("fused", "dpmpp2m", 2.5, 2)])
def test_ort_loop_reproduces_torch_pipeline(scadm_export, flavour, sampler, guidance, batch):
    out, _, _ = scadm_export
    mask, ref, ref_mask = _inputs(batch)
    kw = dict(steps=5, seed=7, sampler=sampler, guidance=guidance, batch=batch)
    want = _torch_images(mask, ref, ref_mask, **kw)
    got = OrtSemanticPipeline(out, flavour=flavour, threads=1).generate(mask, ref, ref_mask, **kw)
    assert got.shape == want.shape == (batch, 3, 64, 64)
    assert psnr(got, want) >= MIN_PSNR


def test_ort_loop_bad_inputs(scadm_export):
    out, _, _ = scadm_export
    with pytest.raises(ValueError, match="pass flavour="):
        OrtSemanticPipeline(out)
    pipe = OrtSemanticPipeline(out, flavour="portable")
    mask, ref, ref_mask = _inputs(0)
    with pytest.raises(ValueError, match="mask"):
        pipe.generate(mask[:32], ref, ref_mask, steps=2)
    with pytest.raises(ValueError, match="class ids"):
        pipe.generate(mask + 19, ref, ref_mask, steps=2)
    with pytest.raises(ValueError, match="sampler"):
        pipe.generate(mask, ref, ref_mask, steps=2, sampler="euler")


RUNNER = textwrap.dedent("""
    import importlib.util, sys
    sys.path.insert(0, sys.argv[1])
    assert importlib.util.find_spec("torch") is None, "this venv must not have torch"
    import numpy as np
    from facegen_rt.runtime.ort import OrtSemanticPipeline
    d = np.load(sys.argv[3])
    pipe = OrtSemanticPipeline(sys.argv[2], flavour="portable", threads=1)
    images = pipe.generate(d["mask"], d["ref"], d["ref_mask"], steps=4, seed=11, guidance=2.0)
    assert "torch" not in sys.modules
    np.save(sys.argv[4], images)
""")


@pytest.fixture(scope="session")
def torchless_python(tmp_path_factory):
    """A venv with only numpy and onnxruntime (the versions of this environment)."""
    import onnxruntime

    venv = tmp_path_factory.mktemp("torchless") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", f"numpy=={np.__version__}",
                           f"onnxruntime=={onnxruntime.__version__}"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip("could not install numpy + onnxruntime into a fresh venv (no network or "
                    f"package index?): {proc.stderr.strip()[-400:]}")
    return python


def test_ort_loop_in_a_venv_without_torch(scadm_export, torchless_python, tmp_path):
    out, _, _ = scadm_export
    mask, ref, ref_mask = _inputs(3)
    np.savez(tmp_path / "in.npz", mask=mask, ref=ref, ref_mask=ref_mask)
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    proc = subprocess.run([str(torchless_python), str(script), str(REPO), str(out),
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = _torch_images(mask, ref, ref_mask, steps=4, seed=11, guidance=2.0)
    assert psnr(np.load(tmp_path / "out.npy"), want) >= MIN_PSNR
