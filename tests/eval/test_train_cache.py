"""The evaluator trainer's render cache is reused only for the renderer that wrote it."""

import numpy as np

from facegen_rt.eval import train as T


def test_cache_is_rerendered_when_the_renderer_changes(tmp_path, monkeypatch):
    fresh = np.array(T.build_cache(tmp_path, 4, 64, seed=0, workers=1, log=None)["image"])
    stored = np.load(tmp_path / "image.npy", mmap_mode="r+")
    stored[:] = 0          # stands for pictures an older renderer drew
    stored.flush()
    del stored
    assert not T.build_cache(tmp_path, 4, 64, seed=0, workers=1, log=None)["image"].any()  # reused
    monkeypatch.setattr(T, "_renderer_fingerprint", lambda seed, res: "another renderer")
    again = T.build_cache(tmp_path, 4, 64, seed=0, workers=1, log=None)["image"]
    assert np.array_equal(again, fresh)
