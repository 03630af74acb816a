"""Write SynthFace samples to disk as PNG + JSON files.

Per sample ``NNNNN`` (zero-padded item index, at least 5 digits) the writer makes:

* ``NNNNN.png``: the RGB image;
* ``NNNNN_label.png``: the label map as a palette PNG whose pixel values are the class
  ids (open it with Pillow and ``np.asarray`` to get the ids; the palette only colours it);
* ``NNNNN.json``: seed, index, res, split, z, factors, landmarks (names and pixel x, y),
  attributes and caption.

``meta.json`` lists the class, landmark and attribute names once for the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .attributes import ATTRIBUTE_NAMES, ATTRIBUTE_RULES
from .classes import CLASS_NAMES, PALETTE
from .dataset import SPLITS, split_index
from .factors import HELDOUT_OFFSET, Z_DIM, Z_NAMES
from .landmarks import LANDMARK_NAMES
from .render import check_res
from .sample import SynthSample, sample

try:   # Pillow is optional; a minimal zlib PNG writer stands in for it
    from PIL import Image
except ImportError:   # pragma: no cover - depends on the environment
    Image = None


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    import struct
    import zlib
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _write_png_fallback(path: Path, arr: np.ndarray, palette=None) -> None:
    """Minimal PNG encoder: 8-bit RGB, or 8-bit palette when ``palette`` is given."""
    import struct
    import zlib
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 3
    raw = b"".join(b"\x00" + arr[r].tobytes() for r in range(h))
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    if palette is not None:
        data += _png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    data += _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)


def save_png(path, arr: np.ndarray, palette=None) -> None:
    """Save uint8 [H, W, 3] RGB, or uint8 [H, W] ids with an RGB ``palette`` (P mode)."""
    path = Path(path)
    arr = np.ascontiguousarray(arr, np.uint8)
    if Image is None:
        _write_png_fallback(path, arr, palette)
        return
    if palette is None:
        Image.fromarray(arr).save(path)
    else:
        # raw bytes as palette indices: the stored values are exactly the class ids
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
        im.putpalette([c for rgb in palette for c in rgb])
        im.save(path)


def sample_record(s: SynthSample, split: str = "train") -> dict:
    """The JSON record of a sample."""
    return {
        "seed": s.seed, "index": s.index, "split": split, "res": s.res,
        "z": [float(v) for v in s.z],
        "factors": s.factors.to_dict(),
        "landmarks": {name: [float(x), float(y)] for name, (x, y) in zip(LANDMARK_NAMES, s.landmarks)},
        "attributes": s.attributes,
        "caption": s.caption,
    }


def _check_args(n, res, out_dir, seed, split) -> Path:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n > HELDOUT_OFFSET:
        raise ValueError(f"n must be <= {HELDOUT_OFFSET}")
    check_res(res)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path exists and is not a directory: {out}")
    return out


def write_dataset(n: int, res: int, out_dir, seed: int = 0, progress: bool = True,
                  split: str = "train") -> Path:
    """Render ``n`` samples of ``split`` at ``res`` and write them under ``out_dir``
    (created if missing; existing files with the same names are overwritten)."""
    out = _check_args(n, res, out_dir, seed, split)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "facegen_rt.data.synthface", "seed": int(seed), "split": split, "n": int(n),
        "res": int(res), "classes": list(CLASS_NAMES), "palette": [list(c) for c in PALETTE],
        "landmarks": list(LANDMARK_NAMES), "attributes": list(ATTRIBUTE_NAMES),
        "attribute_rules": {k: v[1] for k, v in ATTRIBUTE_RULES.items()},
        "z_dim": Z_DIM, "z_names": list(Z_NAMES),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    width = max(5, len(str(n - 1)))
    items = range(n)
    if progress:
        from tqdm import tqdm
        items = tqdm(items, total=n, desc=f"synthface {res}px", unit="img")
    for i in items:
        s = sample(int(seed), split_index(split, i), res)
        stem = f"{i:0{width}d}"
        save_png(out / f"{stem}.png", s.image)
        save_png(out / f"{stem}_label.png", s.label, palette=PALETTE)
        (out / f"{stem}.json").write_text(json.dumps(sample_record(s, split)))
    return out
