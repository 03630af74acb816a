"""Pre-rendered SynthFace training data for the SCA-DM trainers.

Rendering a 128^2 SynthFace sample costs ~50 ms of Python, far more than a training
step needs per image, so the trainers read uint8 memmaps rendered once:

    <root>/image.npy   uint8 [N, res, res, 3]   item i = train stream (seed, i)
    <root>/label.npy   uint8 [N, res, res]      its 19-class label map
    <root>/meta.json   {"n", "res", "seed", "split": "train"}   written last (= complete)

This is the layout of ``facegen_rt.eval.train.build_cache`` too (which also stores
landmarks and attributes), so one rendered cache serves both. Pairs (the same identity
re-rendered in another pose, :func:`facegen_rt.data.synthface.render_pair`'s second
image) live in their own directory, so a cache rendered by someone else is only read:

    <pair_root>/pair_image.npy, pair_label.npy   for items 0..n_pairs-1;  pair_meta.json

Only the "train" split is ever rendered here; the held-out split is for evaluation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from facegen_rt.data.synthface import sample, sample_from_z, split_index
from facegen_rt.data.synthface.factors import PAIR_STREAM, with_new_pose_expression

SPLIT = "train"


def _render_item(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, stream, res = args
    s = sample(seed, stream, res)
    return s.image, s.label


def _render_partner(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The second image of ``render_pair(seed, stream, res)`` without re-rendering the first."""
    seed, stream, res = args
    from facegen_rt.data.synthface import sample_z

    z = sample_z(seed, stream)
    z2 = with_new_pose_expression(z, np.random.default_rng([int(seed), int(stream), PAIR_STREAM]))
    b = sample_from_z(z2, res)
    return b.image, b.label


def _render_into(jobs, fn, images, labels, workers: int, log: Callable[[str], None],
                 what: str) -> None:
    t0 = time.time()
    n = len(jobs)
    with mp.get_context("fork").Pool(workers) as pool:
        for i, (img, lab) in enumerate(pool.imap(fn, jobs, chunksize=16)):
            images[i], labels[i] = img, lab
            if (i + 1) % 2000 == 0 or i + 1 == n:
                log(f"{what}: {i + 1}/{n} rendered, {time.time() - t0:.0f} s")
    images.flush()
    labels.flush()


class ImageCache:
    """Read-only view of a rendered cache: ``images`` [N, res, res, 3] and ``labels``
    [N, res, res] uint8 memmaps, plus ``pair_images`` / ``pair_labels`` (first
    ``n_pairs`` items) when present."""

    def __init__(self, root: "str | Path", pair_root: "str | Path | None" = None):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.root} holds no complete cache (no meta.json)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("split") != SPLIT:
            raise ValueError(f"{self.root}: cache split is {self.meta.get('split')!r}; "
                             "the trainers only read the 'train' split")
        self.n, self.res, self.seed = int(self.meta["n"]), int(self.meta["res"]), int(self.meta["seed"])
        self.images = np.load(self.root / "image.npy", mmap_mode="r")
        self.labels = np.load(self.root / "label.npy", mmap_mode="r")
        self.n_pairs = 0
        self.pair_images = self.pair_labels = None
        pair_meta = Path(pair_root) / "pair_meta.json" if pair_root is not None else None
        if pair_meta is not None and pair_meta.is_file():
            pm = json.loads(pair_meta.read_text())
            if pm.get("seed") == self.seed and pm.get("res") == self.res:
                self.n_pairs = min(int(pm["n"]), self.n)
                self.pair_images = np.load(pair_meta.parent / "pair_image.npy", mmap_mode="r")
                self.pair_labels = np.load(pair_meta.parent / "pair_label.npy", mmap_mode="r")

    def describe(self) -> str:
        return (f"cache {self.root}: {self.n} train items at {self.res}^2 (seed {self.seed}), "
                f"{self.n_pairs} pairs")


def build_cache(root: "str | Path", n: int, res: int = 128, seed: int = 0, workers: int = 2,
                log: Callable[[str], None] = print) -> ImageCache:
    """Render train items 0..n-1 into ``root`` (reused when a complete cache with the
    same seed and resolution and at least ``n`` items is already there)."""
    root = Path(root)
    done = root / "meta.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        if (meta.get("split") == SPLIT and meta.get("seed") == seed and meta.get("res") == res
                and int(meta.get("n", 0)) >= n):
            log(f"cache: reusing {root} ({meta['n']} items)")
            return ImageCache(root)
        done.unlink()
    root.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(root / "image.npy", mode="w+", dtype=np.uint8,
                                       shape=(n, res, res, 3))
    labels = np.lib.format.open_memmap(root / "label.npy", mode="w+", dtype=np.uint8,
                                       shape=(n, res, res))
    jobs = [(seed, split_index(SPLIT, i), res) for i in range(n)]
    _render_into(jobs, _render_item, images, labels, workers, log, "cache")
    done.write_text(json.dumps({"n": n, "res": res, "seed": seed, "split": SPLIT}))
    return ImageCache(root)


def build_pairs(pair_root: "str | Path", n_pairs: int, res: int = 128, seed: int = 0,
                workers: int = 2, log: Callable[[str], None] = print) -> Path:
    """Render into ``pair_root`` the pose/expression partner of train items 0..n_pairs-1
    (independent of the main cache, so both can be rendered at the same time)."""
    root = Path(pair_root)
    meta = root / "pair_meta.json"
    if meta.is_file():
        pm = json.loads(meta.read_text())
        if pm.get("seed") == seed and pm.get("res") == res and int(pm.get("n", 0)) >= n_pairs:
            log(f"pairs: reusing {pm['n']} pairs in {root}")
            return root
        meta.unlink()
    root.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(root / "pair_image.npy", mode="w+", dtype=np.uint8,
                                       shape=(n_pairs, res, res, 3))
    labels = np.lib.format.open_memmap(root / "pair_label.npy", mode="w+", dtype=np.uint8,
                                       shape=(n_pairs, res, res))
    jobs = [(seed, split_index(SPLIT, i), res) for i in range(n_pairs)]
    _render_into(jobs, _render_partner, images, labels, workers, log, "pairs")
    meta.write_text(json.dumps({"n": n_pairs, "res": res, "seed": seed}))
    return root


def find_cache(candidates: list, n: int, res: int, seed: int) -> Optional[Path]:
    """The first complete train cache among ``candidates`` matching res/seed with >= n items."""
    for c in candidates:
        meta = Path(c) / "meta.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            if (m.get("split") == SPLIT and m.get("res") == res and m.get("seed") == seed
                    and int(m.get("n", 0)) >= n):
                return Path(c)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m facegen_rt.train.data_cache",
                                description="Render the SynthFace train cache (and pairs).")
    p.add_argument("root")
    p.add_argument("--n", type=int, default=32000)
    p.add_argument("--pairs", type=int, default=0)
    p.add_argument("--pair-root", default=None, help="directory of the pairs (default: root)")
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.n:
        build_cache(a.root, a.n, a.res, a.seed, a.workers)
    if a.pairs:
        build_pairs(a.pair_root or a.root, a.pairs, a.res, a.seed, a.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
