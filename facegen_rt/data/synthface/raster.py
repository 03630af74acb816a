"""Rasterisation core: a canvas addressed in face coordinates, soft coverage, noise.

Coordinates
-----------
* normalised image coordinates: x, y in [-1, 1] across the image, y pointing down;
* pixel coordinates: (x, y) in [0, res], pixel (col c, row r) covers [c, c+1) x [r, r+1)
  and its centre is (c + 0.5, r + 0.5);
* face frame: origin at the face centre, 1 unit = half the face height, y down.
  ``image = centre + scale * R(roll) @ face``.

Painting model
--------------
Every layer is an implicit shape ``f <= 0`` evaluated on the pixel centres of a small
window around the shape. Its coverage is ``clip(0.5 - f / |grad f|, 0, 1)`` (distance
to the edge in pixels, the gradient taken by finite differences over the pixel grid),
which anti-aliases the edge over about one pixel. A layer blends its colour with
``alpha = coverage * opacity`` and, when it has a class, writes that class wherever
``coverage >= 0.5``. Layers are painted back to front, so the label of a pixel is
the class of the topmost classed layer covering at least half of it, and
``coverage >= 0.5`` is the same as ``f <= 0`` at the pixel centre.

Edge labels (optional): a label is a hard threshold of a coverage that the pixel's colour
shows only as a blend, so a canvas can also keep, per pixel, the class on the other side
of its nearest edge (``edge_other``) and the coverage of the pixel's own class
(``edge_conf``, 0.5..1; 1 inside a region). They tell how hard a pixel's label is to
read: at coverage 0.55 the colour differs from the 50/50 blend by 5 % of the contrast
across the edge. The evaluator report sorts the parser's errors by them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

F32 = np.float32


def face_to_pixels(pts, res: int, scale: float, roll: float, cx: float, cy: float) -> np.ndarray:
    """Face-frame points [N, 2] -> pixel coordinates (x, y) [N, 2] (float64):
    ``image = centre + scale * R(roll) @ face``, then [-1, 1] -> [0, res]."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    c, s = math.cos(roll), math.sin(roll)
    xn = cx + scale * (c * p[:, 0] - s * p[:, 1])
    yn = cy + scale * (s * p[:, 0] + c * p[:, 1])
    return np.stack([(xn + 1.0) * 0.5 * res, (yn + 1.0) * 0.5 * res], axis=1)


@dataclass
class Window:
    """A rectangular block of the canvas: rows ``rs``, cols ``cs`` and the face-frame
    coordinates ``x``, ``y`` (float32 [h, w]) of its pixel centres."""

    rs: slice
    cs: slice
    x: np.ndarray
    y: np.ndarray


class Canvas:
    """RGB image (float32 [res, res, 3], 0..1) and label map (uint8 [res, res])."""

    def __init__(self, res: int, scale: float, roll: float, cx: float, cy: float,
                 edge_labels: bool = False):
        self.res = res
        self.scale = scale            # normalised image units per face unit
        self.roll = roll
        self.cx, self.cy = cx, cy     # face centre, normalised image coordinates
        self.px = 2.0 / (res * scale)  # one pixel in face units
        self.img = np.zeros((res, res, 3), F32)
        self.label = np.zeros((res, res), np.uint8)
        # edge_other uint8 [res, res], edge_conf float32 [res, res]; see the module docstring
        self.edge_other = np.zeros((res, res), np.uint8) if edge_labels else None
        self.edge_conf = np.ones((res, res), F32) if edge_labels else None
        c, s = math.cos(roll), math.sin(roll)
        self._cos, self._sin = c, s
        centres = (np.arange(res, dtype=np.float64) + 0.5) * (2.0 / res) - 1.0
        dx = (centres - cx) / scale    # per column
        dy = (centres - cy) / scale    # per row
        # inverse similarity: face = R(-roll) (p - centre) / scale, split per axis
        self._xc, self._xs = (c * dx).astype(F32), (s * dx).astype(F32)
        self._yc, self._ys = (c * dy).astype(F32), (s * dy).astype(F32)

    # ------------------------------------------------------------------ transforms
    def to_pixels(self, pts) -> np.ndarray:
        """Face-frame points [N, 2] -> pixel coordinates [N, 2] (float64)."""
        return face_to_pixels(pts, self.res, self.scale, self.roll, self.cx, self.cy)

    def _bounds(self, x0: float, y0: float, x1: float, y1: float, pad: int):
        """Pixel row/col bounds (r0, r1, c0, c1) of a face-frame box, clipped."""
        c, s, k = self._cos, self._sin, self.scale * 0.5 * self.res
        # the bounding box of a rotated box: centre +- rotated half extents
        mx, my, hx, hy = (x0 + x1) * 0.5, (y0 + y1) * 0.5, (x1 - x0) * 0.5, (y1 - y0) * 0.5
        pxc = (self.cx + self.scale * (c * mx - s * my) + 1.0) * 0.5 * self.res
        pyc = (self.cy + self.scale * (s * mx + c * my) + 1.0) * 0.5 * self.res
        ex = k * (abs(c) * hx + abs(s) * hy)
        ey = k * (abs(s) * hx + abs(c) * hy)
        c0 = max(int(math.floor(pxc - ex)) - pad, 0)
        c1 = min(int(math.ceil(pxc + ex)) + pad, self.res)
        r0 = max(int(math.floor(pyc - ey)) - pad, 0)
        r1 = min(int(math.ceil(pyc + ey)) + pad, self.res)
        return r0, r1, c0, c1

    def window(self, x0: float, y0: float, x1: float, y1: float, pad: int = 2):
        """Window covering the face-frame box [x0, x1] x [y0, y1] plus ``pad`` pixels,
        clipped to the image; None when it is empty."""
        r0, r1, c0, c1 = self._bounds(x0, y0, x1, y1, pad)
        if c1 - c0 < 2 or r1 - r0 < 2:   # finite differences need two samples per axis
            return None
        x = self._xc[None, c0:c1] + self._ys[r0:r1, None]
        y = self._yc[r0:r1, None] - self._xs[None, c0:c1]
        return Window(slice(r0, r1), slice(c0, c1), x, y)

    def sub(self, w: Window, x0: float, y0: float, x1: float, y1: float, pad: int = 1):
        """Index (rows, cols) into the arrays of window ``w`` that covers the face-frame
        box, or None when the box misses the window; lets small effects skip the rest."""
        r0, r1, c0, c1 = self._bounds(x0, y0, x1, y1, pad)
        r0, r1 = max(r0, w.rs.start) - w.rs.start, min(r1, w.rs.stop) - w.rs.start
        c0, c1 = max(c0, w.cs.start) - w.cs.start, min(c1, w.cs.stop) - w.cs.start
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def subwindow(self, w: Window, idx) -> Window:
        """The part ``idx`` (from :meth:`sub`) of window ``w`` as a Window."""
        rs, cs = idx
        return Window(slice(w.rs.start + rs.start, w.rs.start + rs.stop),
                      slice(w.cs.start + cs.start, w.cs.start + cs.stop), w.x[idx], w.y[idx])

    def full(self) -> Window:
        """The whole image as a window."""
        return self.window(-1e4, -1e4, 1e4, 1e4)

    # ------------------------------------------------------------------ painting
    def paint(self, w: Window, cov: np.ndarray, color, cls: int | None = None,
              opacity: float = 1.0) -> None:
        """Blend ``color`` ((3,) or [h, w, 3]) with alpha ``cov * opacity``; write ``cls``
        into the label map where ``cov >= 0.5``."""
        sub = self.img[w.rs, w.cs]
        a = cov if opacity == 1.0 else cov * F32(opacity)
        sub += a[..., None] * (np.asarray(color, F32) - sub)
        if cls is not None:
            self.write_label(w, cov, cls)

    def write_label(self, w: Window, cov: np.ndarray, cls: int) -> None:
        """Write ``cls`` where ``cov >= 0.5`` (cov float32 [h, w] over window ``w``), and
        keep the edge labels when the canvas has them."""
        lab = self.label[w.rs, w.cs]
        took = cov >= 0.5
        if self.edge_other is not None:
            other, conf = self.edge_other[w.rs, w.cs], self.edge_conf[w.rs, w.cs]
            # pixels this layer takes: the class below becomes the other side
            other[took] = np.where(cov[took] < 1.0, lab[took], cls)
            conf[took] = cov[took]
            # pixels it half misses keep their class, unless an earlier edge is nearer
            near = (cov > 0.0) & ~took & (F32(1.0) - cov < conf)
            other[near] = cls
            conf[near] = F32(1.0) - cov[near]
        lab[took] = cls

    def shade(self, w: Window, amount: np.ndarray, cls: int | None = None,
              cov: np.ndarray | None = None) -> None:
        """Multiply the image by ``1 + amount`` (amount [h, w] or [h, w, 3]): a colour-only
        effect that keeps whatever is under it, unless ``cls``/``cov`` are given."""
        sub = self.img[w.rs, w.cs]
        if amount.ndim == 2:
            amount = amount[..., None]
        sub *= 1.0 + amount
        if cls is not None:
            self.write_label(w, cov, cls)


# ---------------------------------------------------------------------- coverage

def coverage(f: np.ndarray) -> np.ndarray:
    """Soft coverage of the implicit shape ``f <= 0`` sampled on a pixel grid [h, w].

    The signed pixel distance is ``f / |grad f|`` with the gradient per pixel from
    central differences, so any smooth implicit function anti-aliases correctly.
    """
    # central differences inside, one-sided at the border (all scaled by 2)
    gx = np.empty_like(f)
    gx[:, 1:-1] = f[:, 2:] - f[:, :-2]
    gx[:, 0] = (f[:, 1] - f[:, 0]) * F32(2.0)
    gx[:, -1] = (f[:, -1] - f[:, -2]) * F32(2.0)
    gy = np.empty_like(f)
    gy[1:-1] = f[2:] - f[:-2]
    gy[0] = (f[1] - f[0]) * F32(2.0)
    gy[-1] = (f[-1] - f[-2]) * F32(2.0)
    g = gx * gx
    g += gy * gy
    np.sqrt(g, out=g)
    np.maximum(g, F32(1e-6), out=g)
    return clip01(F32(0.5) - F32(2.0) * f / g)


def coverage_sdf(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage from a true signed distance ``d`` in face units (pixel size ``px``)."""
    return clip01(F32(0.5) - d * F32(1.0 / px))


def clip01(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place (np.clip's wrapper costs more than the work here)."""
    np.maximum(x, F32(0.0), out=x)
    return np.minimum(x, F32(1.0), out=x)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at e0 to 1 at e1 (e0 > e1 gives a falling step)."""
    t = clip01((x - F32(e0)) * F32(1.0 / (e1 - e0)))
    return t * t * (F32(3.0) - F32(2.0) * t)


def gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-(x / sigma)^2), a soft bump used for shading."""
    t = x * F32(1.0 / sigma)
    return np.exp(-(t * t))


# ---------------------------------------------------------------------- noise

@lru_cache(maxsize=64)
def _interp_matrix(res: int, g: int) -> np.ndarray:
    """[res, g] matrix that resamples g lattice values to res pixel centres with a
    smoothstep-weighted linear interpolation (no visible lattice creases)."""
    t = (np.arange(res) + 0.5) / res * (g - 1)
    i0 = np.minimum(np.floor(t).astype(int), g - 2)
    fr = t - i0
    fr = fr * fr * (3 - 2 * fr)
    m = np.zeros((res, g), np.float64)
    m[np.arange(res), i0] = 1 - fr
    m[np.arange(res), i0 + 1] = fr
    return m.astype(F32)


def value_noise(rng: np.random.Generator, res: int, g: int) -> np.ndarray:
    """Smooth noise float32 [res, res] in [-1, 1] from a g x g random lattice.

    The lattice spans the image whatever ``res`` is, so the same rng state gives the
    same pattern at every resolution. Two small matrix products do the resampling.
    """
    lattice = rng.uniform(-1.0, 1.0, (g, g)).astype(F32)
    m = _interp_matrix(res, g)
    return m @ lattice @ m.T
