"""The procedural renderer: :func:`render` paints a face from its factors.

Painter's order, back to front (classed layers write the label map, see raster.py):

    background(0) neck(17) cloth(18) necklace(16) hair_back(13) ears(8, 9)
    earrings(15) skin(1) nose(2) lips(11, 12) mouth(10) clear lenses(3)
    eyes(4, 5) brows(6, 7) frame and dark lenses(3) hair_front(13) hat(14)

Shading (lighting, sockets, blush, stubble, lash lines, teeth, ...) is done either in a
layer's own colour or as colour-only effects that keep the label of what is below.
Clear lenses sit below the eyes in this order, so eyes stay labelled through glasses,
which is how the CelebAMask-HQ masks are usually merged too.
"""

from __future__ import annotations

import math

import numpy as np

from . import classes as C
from .factors import DYED_COLORS, Factors, threshold
from .layout import Layout, make_layout
from .raster import F32, Canvas, clip01, coverage, coverage_sdf, gauss, smoothstep, value_noise

MIN_RES, MAX_RES = 64, 512


def check_res(res) -> int:
    """Validate a resolution: an int in [MIN_RES, MAX_RES]."""
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)):
        raise TypeError(f"res must be an int, got {type(res).__name__}")
    if not MIN_RES <= int(res) <= MAX_RES:
        raise ValueError(f"res must be in [{MIN_RES}, {MAX_RES}], got {res}")
    return int(res)


def render(factors: Factors, res: int, layout: Layout | None = None):
    """Render a face.

    Returns ``(image, label)``: image uint8 [res, res, 3] (RGB), label uint8 [res, res]
    with the class ids of :data:`classes.CLASS_NAMES`.
    """
    r = _run(factors, res, layout, edge_labels=False)
    return _to_uint8(r.cv.img), r.cv.label


def render_with_edges(factors: Factors, res: int, layout: Layout | None = None):
    """:func:`render` plus the edge labels of raster.py (how near each label is to its
    coverage threshold).

    Returns ``(image, label, other, conf)``: the image and label of :func:`render` (same
    bytes), other uint8 [res, res] (class across the pixel's nearest edge) and conf uint8
    [res, res] (the label's coverage, 0.5..1, times 255, rounded).
    """
    r = _run(factors, res, layout, edge_labels=True)
    conf = np.round(r.cv.edge_conf * F32(255.0)).astype(np.uint8)
    return _to_uint8(r.cv.img), r.cv.label, r.cv.edge_other, conf


def _run(factors: Factors, res: int, layout: Layout | None, edge_labels: bool) -> "_Renderer":
    res = check_res(res)
    lay = layout if layout is not None else make_layout(factors)
    r = _Renderer(factors, lay, res, edge_labels)
    r.run()
    return r


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * F32(255.0) + F32(0.5), 0, 255).astype(np.uint8)


def _rgb(c) -> np.ndarray:
    return np.asarray(c, F32)


class _Renderer:
    """One render: canvas, layout, factors and the per-identity texture noise."""

    def __init__(self, f: Factors, lay: Layout, res: int, edge_labels: bool = False):
        self.f, self.lay, self.res = f, lay, res
        self.cv = Canvas(res, lay.scale, lay.roll, lay.cx, lay.cy, edge_labels)
        rng = np.random.default_rng([f.texture_seed, 7])
        # lattice sizes are fixed so textures look the same at every resolution
        self.n_lo = value_noise(rng, res, 5)
        self.n_mid = value_noise(rng, res, 14)
        self.n_hi = value_noise(rng, res, 44)
        self.skin = _rgb(f.skin_rgb)
        self.L = lay.light
        self.c = F32(f.light_contrast)
        self._hair = None

    def run(self):
        self.background()
        self.neck()
        self.cloth()
        self.necklace()
        self.hair()
        for e in self.lay.ears:
            self.ear(e)
        self.earrings()
        self.face()
        self.nose()
        self.mouth()
        if self.lay.glasses is not None and not self.lay.glasses.sunglasses:
            self.lenses(clear=True)
        for e in self.lay.eyes:
            self.eye(e)
        for i, b in enumerate(self.lay.brows):
            self.brow(b, C.L_BROW if i == 0 else C.R_BROW)
        if self.lay.glasses is not None:
            if self.lay.glasses.sunglasses:
                self.lenses(clear=False)
            self.frame()
        self.hair_front()
        self.hat()

    # ------------------------------------------------------------------ helpers
    def noise(self, w, which="hi"):
        return {"lo": self.n_lo, "mid": self.n_mid, "hi": self.n_hi}[which][w.rs, w.cs]

    def lambert(self, nx, ny):
        """Shade factor of a ball-like surface with normal xy ``(nx, ny)``: ambient plus
        wrapped diffuse light, scaled by the light contrast."""
        nz = np.sqrt(np.maximum(F32(1.0) - nx * nx - ny * ny, 0))
        lx, ly, lz = self.L
        d = nx * F32(lx) + ny * F32(ly) + nz * F32(lz)
        d = clip01((d + F32(0.35)) * F32(1 / 1.35))
        return F32(1.0) - self.c + self.c * F32(1.35) * d

    # ------------------------------------------------------------------ layers
    def background(self):
        """Two-colour gradient along bg_angle (image axes, so it ignores the head pose),
        bent by low-frequency noise, with a vignette and mottling."""
        f = self.f
        t = (np.arange(self.res, dtype=F32) + F32(0.5)) * F32(2.0 / self.res) - F32(1.0)
        g = (t[None, :] * F32(math.sin(f.bg_angle)) + t[:, None] * F32(math.cos(f.bg_angle))) * F32(0.5) + F32(0.5)
        g = clip01(g + F32(0.12) * self.n_lo)
        top, bot = _rgb(f.bg_rgb_top), _rgb(f.bg_rgb_bottom)
        r2 = t[None, :] ** 2 + t[:, None] ** 2
        light = F32(1.0) - F32(0.18) * r2 + F32(0.04) * self.n_mid
        self.cv.img[:] = (top + g[..., None] * (bot - top)) * light[..., None]

    def neck(self):
        n, f = self.lay.neck, self.f
        w = self.cv.window(n.cx - n.w - 1.2, n.top, n.cx + n.w + 1.2, f.face_length + 1.5)
        if w is None:
            return
        fn = n.implicit(w.x, w.y)
        cov = coverage(fn)
        dx = (w.x - F32(n.cx)) / n.half_width(w.y)
        shadow = F32(0.42) * smoothstep(f.face_length + 0.3, f.face_length - 0.05, w.y)
        shade = self.lambert(dx * F32(0.85), np.zeros_like(dx)) * (F32(0.9) - shadow)
        shade *= F32(1.0) + F32(0.03) * self.noise(w, "mid")
        self.cv.paint(w, cov, self.skin * shade[..., None], C.NECK)

    def cloth(self):
        g, f = self.lay.cloth, self.f
        w = self.cv.window(g.cx - g.half_w, g.shoulder_y - 0.4, g.cx + g.half_w, g.shoulder_y + 2 * g.half_h)
        if w is None:
            return
        fc = g.implicit(w.x, w.y)
        cov = coverage(fc)
        c1, c2 = _rgb(f.cloth_rgb), _rgb(f.cloth_rgb2)
        px = F32(self.cv.px)
        if f.cloth_pattern == "solid":
            col = np.broadcast_to(c1, w.x.shape + (3,))
        else:
            k = F32(2 * math.pi / f.cloth_scale)
            # anti-aliased stripes: sin(k y) / k is the distance to the nearest stripe
            # edge; stripes near the pixel size fade to their mean instead of aliasing
            soft = F32(1.0 / (1.5 * k * px))
            contrast = F32(min(1.0, max(0.0, 1.5 - 0.5 * float(k * px))))
            m = clip01(F32(0.5) + np.sin(w.y * k) * soft)
            if f.cloth_pattern == "checks":
                m2 = clip01(F32(0.5) + np.sin((w.x - F32(g.cx)) * k) * soft)
                m = F32(0.5) * (m + m2)   # plaid: overlapping semi-transparent bands
            col = c1 + (F32(0.5) + (m - F32(0.5)) * contrast)[..., None] * (c2 - c1) * F32(0.85)
        dx = (w.x - F32(g.cx)) * F32(1.0 / g.half_w)
        neck_shadow = F32(0.3) * gauss(w.x - F32(g.cx), 0.45) * gauss(w.y - F32(g.shoulder_y), 0.35)
        shade = self.lambert(dx * F32(0.9), np.full_like(dx, -0.3)) * (F32(1.0) - neck_shadow)
        shade *= F32(1.0) + F32(0.07) * self.noise(w, "mid") + F32(0.03) * self.noise(w, "hi")
        self.cv.paint(w, cov, col * shade[..., None], C.CLOTH)

    def necklace(self):
        if self.lay.necklace is None:
            return
        cx, y_low, k, span_y, th, style = self.lay.necklace
        n = self.lay.neck
        half = math.sqrt(max(y_low - span_y, 1e-3) / k) + 0.05
        w = self.cv.window(cx - half - 0.1, span_y - 0.1, cx + half + 0.1, y_low + 0.25)
        if w is None:
            return
        dx = w.x - F32(cx)
        curve = F32(y_low) - F32(k) * dx * dx
        slope = F32(2 * k) * dx
        d = np.abs(w.y - curve) / np.sqrt(F32(1.0) + slope * slope)
        # keep the chain on the front of the neck and chest: it ends at the neck outline
        ends = np.abs(dx) - n.half_width(w.y) - F32(0.02)
        fch = np.maximum(d - F32(th * 0.5), np.where(w.y < span_y + 0.25, ends, F32(-1.0)))
        metal = _rgb(self.f.necklace_rgb)
        sparkle = F32(1.0) + F32(0.35) * np.sin(dx * F32(90.0)) * (style != "beads")
        if style == "beads":
            # bead chain: round beads along the curve as a periodic width modulation
            bead = np.abs(np.sin(dx * F32(math.pi / 0.07)))
            fch = fch - F32(0.02) * bead + F32(0.01)
            metal = _rgb((0.93, 0.91, 0.86)) if self.f.necklace_rgb[2] > 0.5 else metal
            sparkle = F32(0.8) + F32(0.4) * bead
        if style == "pendant":
            pd = np.sqrt(dx * dx + (w.y - F32(y_low + 0.06)) ** 2) - F32(0.065)
            fch = np.minimum(fch, pd)
        cov = coverage_sdf(fch, self.cv.px)
        hl = F32(1.0) + F32(0.5) * gauss(fch + F32(th * 0.25), th * 0.3)
        self.cv.paint(w, cov, metal * (sparkle * hl)[..., None], C.NECK_L)

    def _hair_texture(self):
        """Window over the whole hair and its colour field (back, front), computed once
        and shared by both hair layers."""
        h, f = self.lay.hair, self.f
        y0 = -h.top - (0.45 if h.bun else 0.1)
        w = self.cv.window(h.cx - h.half_w - 0.5, y0, h.cx + h.half_w + 0.5, h.bottom + 0.3)
        if w is None:
            return None
        # strands radiate from the crown; waviness bends them with distance from it
        crx, cry = h.cx + 0.4 * h.part, -1.1 * h.top   # crown just behind the top of the head
        dx, dy = w.x - F32(crx), w.y - F32(cry)
        ang = np.arctan2(dx, dy)
        rad = np.sqrt(dx * dx + dy * dy)
        freq = 60.0 if h.style != "buzz" else 120.0
        # wavy strands: phase-modulate the strand pattern by up to ~1.6 rad, and light
        # bands across the waves (strands are finer than a pixel at 128^2; bands are not)
        wave_phase = rad * F32(14.0) + F32(h.phase)
        ang += F32(1.6 / freq * f.hair_wave) * np.sin(wave_phase)
        spacing_px = (2 * math.pi / freq) * 0.8 / self.cv.px   # strand period at radius 0.8
        amp = min(1.0, spacing_px / 4.0) * (0.09 if h.style != "buzz" else 0.05)
        patch = F32(amp) * (F32(0.6) + F32(0.4) * self.noise(w, "mid"))
        strands = F32(1.0) + patch * np.sin(ang * F32(freq) + F32(1.2) * self.noise(w, "hi"))
        strands += F32(0.05) * self.noise(w, "mid")
        nx = (w.x - F32(h.cx)) * F32(1.0 / h.half_w)
        ny = np.minimum(np.maximum(w.y * F32(1.0 / h.top), F32(-1.0)), F32(1.0))
        shade = self.lambert(nx * F32(0.9), ny * F32(0.9)) * strands
        shade *= F32(1.0) + F32(0.2 * f.hair_wave ** 2) * np.sin(wave_phase)
        # sheen: a soft highlight band around the top of the head
        sheen = gauss(rad - F32(0.62 * h.top), 0.09) * (w.y < 0) * F32(0.2 + 0.15 * (1 - f.hair_wave))
        base = _rgb(f.hair_rgb)
        front = base * shade[..., None] + (sheen * F32(0.55))[..., None] * (F32(1.0) - base * F32(0.5))
        back = base * (shade * F32(0.68))[..., None] + (sheen * F32(0.2))[..., None]
        return w, clip01(front), clip01(back)

    def hair(self):
        """Back hair (behind the face, in front of the clothes)."""
        h = self.lay.hair
        if h is None:
            return
        self._hair = self._hair_texture()
        if self._hair is None:
            return
        w, _, back = self._hair
        # hair hangs behind the neck: cut the neck column out of the back hair
        fh = np.maximum(h.outline(w.x, w.y), -self.lay.neck.implicit(w.x, w.y))
        self.cv.paint(w, coverage(fh), back, C.HAIR)

    def hair_front(self):
        """Front hair: the part of the hair above the hairline, over the forehead."""
        h = self.lay.hair
        if h is None or self._hair is None:
            return
        wb, front, _ = self._hair
        xs = np.linspace(h.cx - h.half_w - 0.3, h.cx + h.half_w + 0.3, 64, dtype=F32)
        y1 = min(float(h.hairline_y(xs).max()) + 0.05, h.bottom + 0.3)
        idx = self.cv.sub(wb, h.cx - h.half_w - 0.5, -h.top - (0.45 if h.bun else 0.1), h.cx + h.half_w + 0.5, y1)
        if idx is None or idx[0].stop - idx[0].start < 2 or idx[1].stop - idx[1].start < 2:
            return
        w = self.cv.subwindow(wb, idx)
        fh = h.front(w.x, w.y)
        cov = coverage(fh)
        # hair thins out right at the hairline, so it is a little lighter and more see-through
        edge = smoothstep(0.0, -0.05, fh)
        opacity = (F32(0.9) if h.style == "buzz" else F32(1.0)) * (F32(0.85) + F32(0.15) * edge)
        self.cv.paint(w, cov * opacity, front[idx], None)
        self.cv.write_label(w, cov, C.HAIR)

    def ear(self, e):
        w = self.cv.window(e.cx - e.w, e.cy - e.h, e.cx + e.w, e.cy + e.h)
        if w is None:
            return
        fe = e.implicit(w.x, w.y)
        cov = coverage(fe)
        ex = (w.x - F32(e.cx)) * F32(1.0 / e.w)
        ey = (w.y - F32(e.cy)) * F32(1.0 / e.h)
        # concha: a darker inner bowl offset towards the head, with a rim (helix) around it
        ix, iy = ex + F32(0.25 * e.side), (ey + F32(0.12)) * F32(1.25)
        inner = gauss(np.sqrt(ix * ix + iy * iy), 0.55)
        shade = self.lambert(ex * F32(0.7), ey * F32(0.7)) * (F32(0.92) - F32(0.28) * inner)
        self.cv.paint(w, cov, self.skin * shade[..., None], C.L_EAR if e.side < 0 else C.R_EAR)

    def earrings(self):
        metal = _rgb(self.f.earring_rgb)
        for side, style, (lx, ly) in self.lay.earrings:
            w = self.cv.window(lx - 0.15, ly - 0.06, lx + 0.15, ly + 0.26)
            if w is None:
                continue
            dx = w.x - F32(lx)
            if style == "stud":
                d = np.sqrt(dx * dx + (w.y - F32(ly)) ** 2) - F32(0.048)
            elif style == "hoop":
                rr, th = 0.085, 0.032
                d = np.abs(np.sqrt(dx * dx + (w.y - F32(ly + rr)) ** 2) - F32(rr)) - F32(th / 2)
            else:
                drop = np.sqrt(dx * dx + ((w.y - F32(ly + 0.13)) * F32(0.8)) ** 2) - F32(0.055)
                wire = np.maximum(np.abs(dx) - F32(0.012), np.abs(w.y - F32(ly + 0.04)) - F32(0.05))
                d = np.minimum(drop, wire)
            cov = coverage_sdf(d, self.cv.px)
            hl = F32(0.85) + F32(0.6) * gauss(d + F32(0.015), 0.012)
            self.cv.paint(w, cov, clip01(metal * hl[..., None]), C.EAR_R)

    def face(self):
        fg, f, lay, cv = self.lay.face, self.f, self.lay, self.cv
        amax = max(fg.a_left, fg.a_right) * (1 + max(fg.full, 0))
        w = cv.window(-amax - abs(fg.shear) - 0.05, -fg.top - 0.05, amax + abs(fg.shear) + 0.05, fg.bot + 0.05)
        if w is None:
            return
        x, y = w.x, w.y
        ff = fg.implicit(x, y)
        cov = coverage(ff)
        xs = x - F32(fg.shear) * np.maximum(y, 0)
        nx = xs * F32(1.0 / max(fg.a_left, fg.a_right))
        ny = y * F32(1.0 / fg.top)
        shade = self.lambert(nx * F32(0.85), ny * F32(0.6))
        shade *= F32(1.0) - F32(0.12) * smoothstep(-0.35, 0.0, ff)       # darker towards the rim
        shade *= F32(1.0) + F32(0.025) * self.noise(w, "mid") + F32(0.012) * self.noise(w, "hi")
        m, n = lay.mouth, lay.nose

        def local(x0, y0, x1, y1):
            """(index, x, y) of a small part of the face window, or None."""
            idx = cv.sub(w, x0, y0, x1, y1)
            return None if idx is None else (idx, x[idx], y[idx])

        # eye sockets
        for e in lay.eyes:
            if (p := local(e.cx - 0.4, e.cy - 0.3, e.cx + 0.4, e.cy + 0.3)) is not None:
                i, xl, yl = p
                dxe, dye = xl - F32(e.cx), yl - F32(e.cy + 0.01)
                shade[i] -= F32(0.09) * gauss(np.sqrt(dxe * dxe * F32(0.6) + dye * dye), 0.16)
        # shadows under the nose and under the lower lip
        yn = n.ty + n.ht + 0.02
        if (p := local(n.tx - 0.2, yn - 0.08, n.tx + 0.2, yn + 0.08)) is not None:
            i, xl, yl = p
            shade[i] -= F32(0.12) * gauss(xl - F32(n.tx), 0.07) * gauss(yl - F32(yn), 0.03)
        yl0 = m.my + m.gap * 0.65 + m.tl + 0.045
        if (p := local(m.mx - 0.3, yl0 - 0.08, m.mx + 0.3, yl0 + 0.08)) is not None:
            i, xl, yl = p
            shade[i] -= F32(0.1) * gauss(xl - F32(m.mx), 0.1) * gauss(yl - F32(yl0), 0.03)
        # nasolabial folds: nostril wing to just outside the mouth corner
        fold = F32(0.04 + 0.12 * f.smile + (0.1 if f.age > threshold("age") else 0.03) * f.age)
        for side in (-1, 1):
            ax, ay_ = n.tx + side * (n.w_right if side > 0 else n.w_left) * 1.05, n.ty + 0.02
            bx, by_ = m.corner(side)
            bx += side * 0.035
            if (p := local(min(ax, bx) - 0.06, ay_ - 0.06, max(ax, bx) + 0.06, by_ + 0.06)) is not None:
                i, xl, yl = p
                shade[i] -= fold * _segment_glow(xl, yl, ax, ay_, bx, by_, 0.018)
        col = self.skin * shade[..., None]
        # blush and eyeshadow: cubic in blush, so that rosy cheeks (blush > 0.75) stand out
        blush = F32(0.45 * f.blush ** 3 + 0.06 * f.makeup)
        for e in lay.eyes:
            if (p := local(e.cx - 0.35, 0.0, e.cx + 0.35, 0.6)) is not None:
                i, xl, yl = p
                g = gauss(np.sqrt((xl - F32(e.cx)) ** 2 + (yl - F32(0.3)) ** 2), 0.17)
                col[i] += (blush * g)[..., None] * (_rgb((0.9, 0.35, 0.4)) - col[i])
        if f.makeup > 0.2:
            shadow_rgb = _rgb(f.lip_rgb) * F32(0.6) + _rgb((0.2, 0.15, 0.3)) * F32(0.4)
            for e in lay.eyes:
                ys = e.cy - e.hu - 0.03
                if (p := local(e.cx - 2.5 * e.w, ys - 0.12, e.cx + 2.5 * e.w, ys + 0.12)) is not None:
                    i, xl, yl = p
                    g = gauss(xl - F32(e.cx), e.w * 1.1) * gauss(yl - F32(ys), 0.045)
                    heavy = f.makeup > threshold("makeup", 1)   # Heavy_Makeup: strong eyeshadow
                    col[i] += (F32(0.6 * f.makeup if heavy else 0.15 * f.makeup) * g)[..., None] * (shadow_rgb - col[i])
        if f.beard != "none":
            if (p := local(m.mx - 0.8, n.ty, m.mx + 0.8, fg.bot + 0.05)) is not None:
                i, xl, yl = p
                col[i] = self._beard(cv.subwindow(w, i), xl, yl, col[i])
        if f.age > threshold("age"):   # old (not Young): forehead lines and lines under the eyes
            k = F32(0.45 + 0.6 * (f.age - 0.6))
            if (p := local(-0.7, -0.6, 0.7, -0.35)) is not None:
                i, xl, yl = p
                for y_line in (-0.42, -0.5):
                    col[i] *= (F32(1.0) - k * gauss(yl - F32(y_line) - F32(0.02) * np.cos(xl * F32(4.0)), 0.008)
                               * gauss(xl, 0.35))[..., None]
            for e in lay.eyes:
                yb = e.cy + e.hl + 0.05
                if (p := local(e.cx - 1.2 * e.w, yb - 0.05, e.cx + 1.2 * e.w, yb + 0.05)) is not None:
                    i, xl, yl = p
                    dx = xl - F32(e.cx)
                    lift = F32(0.03 / (e.w * e.w)) * dx * dx    # the line curves up at its ends
                    arc = gauss(yl - F32(yb) + lift, 0.01) * gauss(dx, 0.6 * e.w)
                    col[i] *= (F32(1.0) - F32(0.8) * k * arc)[..., None]
        cv.paint(w, cov, clip01(col), C.SKIN)

    def _beard(self, w, x, y, col):
        f, m, n = self.f, self.lay.mouth, self.lay.nose
        dyed = f.hair_style == "bald" or f.hair_color in DYED_COLORS
        hair = _rgb((0.13, 0.1, 0.08) if dyed else f.hair_rgb)
        if f.beard == "stubble":
            # a smooth shadow, not hairs: at these resolutions single hairs only alias
            mask = smoothstep(n.ty + 0.02, n.ty + 0.22, y) * smoothstep(0.78, 0.42, np.abs(x - F32(m.mx)))
            amt = F32(0.3) * mask * (F32(0.9) + F32(0.1) * self.noise(w, "hi"))
            tint = _rgb((0.25, 0.22, 0.22)) * F32(0.5) + hair * F32(0.5)
            return col + amt[..., None] * (tint * F32(0.8) - col)
        texture = F32(0.85) + F32(0.15) * self.noise(w, "hi")
        tx = gauss(x - F32(m.mx), max(m.wl, m.wr) * 0.9)
        ym = m.my - m.lift * 0.5 - m.gap * 0.35 - m.tu - 0.035
        amt = F32(0.85) * tx * gauss(y - F32(ym), 0.032)
        if f.beard == "goatee":   # mustache plus a patch on the chin
            chin = gauss(x - F32(m.mx), 0.14) * smoothstep(m.my + m.gap * 0.65 + m.tl + 0.02, m.my + m.gap * 0.65 + m.tl + 0.1, y)
            amt = np.maximum(amt, F32(0.85) * chin)
        amt = amt * texture
        return col + amt[..., None] * (hair * F32(0.8) - col)

    def nose(self):
        n = self.lay.nose
        wmax = max(n.w_left, n.w_right)
        w = self.cv.window(min(n.bx, n.tx) - wmax - 0.05, n.by - 0.02, max(n.bx, n.tx) + wmax + 0.05, n.ty + n.ht + 0.03)
        if w is None:
            return
        x, y = w.x, w.y
        fn = n.implicit(x, y)
        cov = coverage(fn)
        lx = self.L[0]
        t = clip01((y - F32(n.by)) * F32(1.0 / (n.ty - n.by)))
        cl = F32(n.bx) + F32(n.tx - n.bx) * t
        side = (x - cl) * F32(1.0 / wmax)
        # the side away from the light is darker, the bridge and the tip catch light
        dark = clip01(-side * F32(np.sign(lx) if lx else 1.0))
        amount = F32(-0.24) * dark * (F32(0.3) + F32(0.7) * t)
        amount += F32(0.12) * gauss(x - cl + F32(0.01 * lx), 0.02) * (F32(1.0) - F32(0.5) * t)
        amount += F32(0.14) * gauss(np.sqrt((x - F32(n.tx + 0.2 * wmax * lx)) ** 2 + (y - F32(n.ty - 0.02)) ** 2), 0.04)
        for (ncx, ncy, rx, ry) in n.nostrils():
            ex, ey = (x - F32(ncx)) * F32(1.0 / rx), (y - F32(ncy)) * F32(1.0 / ry)
            rr = np.sqrt(ex * ex + ey * ey)
            amount -= F32(0.4) * coverage_sdf((rr - F32(1.0)) * F32(ry), self.cv.px)
            # crease around the nostril wing
            amount -= F32(0.12) * gauss(rr - F32(2.2), 0.6)
        self.cv.shade(w, amount * cov, C.NOSE, cov)

    def mouth(self):
        m, f = self.lay.mouth, self.f
        wmax = max(m.wl, m.wr)
        w = self.cv.window(m.mx - wmax - 0.03, m.my - m.lift - m.tu - 0.06, m.mx + wmax + 0.03, m.my + m.gap + m.tl + 0.05)
        if w is None:
            return
        x, y = w.x, w.y
        xn, cm, gt, gb, cu, cl = m.curves(x)
        wside = np.where(xn < 0, F32(m.wl), F32(m.wr))
        ends = (np.abs(xn) - F32(1.0)) * wside
        lip = _rgb(f.lip_rgb)
        ax = np.abs(xn)
        corner_dark = F32(1.0) - F32(0.3) * ax ** 3
        # upper lip, overlapping the lower one a little so no seam shows
        fu = np.maximum(np.maximum(cu - y, y - cm - F32(0.004)), ends)
        cov_u = coverage(fu)
        shade_u = F32(0.8) * corner_dark * (F32(1.0) + F32(0.05) * self.noise(w, "hi"))
        self.cv.paint(w, cov_u, lip * shade_u[..., None], C.U_LIP)
        fl = np.maximum(np.maximum(cm - y, y - cl), ends)
        cov_l = coverage(fl)
        mid = (gb + cl) * F32(0.5)
        gloss = F32(0.18 + 0.2 * f.makeup) * gauss(y - mid + F32(0.008), 0.012) * gauss(xn, 0.35)
        shade_l = F32(0.98) * corner_dark * (F32(1.0) + F32(0.05) * self.noise(w, "hi"))
        self.cv.paint(w, cov_l, clip01(lip * shade_l[..., None] + gloss[..., None]), C.L_LIP)
        # lip line: where the lips meet, darker
        line = F32(0.45) * gauss(y - cm, 0.01) * (ax < 1.02)
        self.cv.shade(w, -line)
        if m.gap * 0.65 / self.cv.px > 0.2:   # opening big enough to matter at this res
            fm = np.maximum(np.maximum(gt - y, y - gb), ends)
            cov_m = coverage(fm)
            if cov_m.any():
                span = np.maximum(gb - gt, F32(1e-4))
                tt = (y - gt) / span
                col = np.broadcast_to(_rgb((0.25, 0.07, 0.08)), x.shape + (3,)).copy()
                teeth = (tt < F32(0.42)) & (ax < F32(0.78))
                tooth_gap = F32(0.9) + F32(0.1) * np.abs(np.sin(xn * F32(9.0)))
                col[teeth] = (_rgb((0.94, 0.91, 0.85)) * tooth_gap[teeth][:, None])
                tongue = gauss(tt - F32(1.0), 0.35) * gauss(xn, 0.5)
                col += (F32(0.8) * tongue)[..., None] * (_rgb((0.62, 0.24, 0.25)) - col)
                col *= (F32(0.75) + F32(0.25) * clip01(F32(1.0) - ax))[..., None]
                self.cv.paint(w, cov_m, col, C.MOUTH)

    def lenses(self, clear: bool):
        gl = self.lay.glasses
        for i, (cx, cy, hw, hh) in enumerate(gl.lenses):
            w = self.cv.window(cx - hw, cy - hh, cx + hw, cy + hh)
            if w is None:
                continue
            fl = gl.lens(w.x, w.y, i)
            cov = coverage(fl)
            if clear:
                self.cv.paint(w, cov, _rgb((0.85, 0.9, 0.95)), C.EYE_G, opacity=0.12)
            else:
                ty = (w.y - F32(cy - hh)) * F32(1.0 / (2 * hh))
                col = _rgb((0.04, 0.045, 0.06)) + ty[..., None] * _rgb((0.12, 0.1, 0.08))
                glare = F32(0.25) * gauss(w.x - F32(cx) + (w.y - F32(cy)) * F32(0.8) + F32(hw * 0.3), hw * 0.12)
                self.cv.paint(w, cov, col + glare[..., None], C.EYE_G, opacity=0.96)

    def frame(self):
        gl = self.lay.glasses
        (lx, ly, lw, lh), (rx, ry, rw, rh) = gl.lenses
        w = self.cv.window(gl.arm_x[0] - 0.02, min(ly, ry) - max(lh, rh) - 0.03, gl.arm_x[1] + 0.02, max(ly, ry) + max(lh, rh) + 0.03)
        if w is None:
            return
        ff = gl.frame(w.x, w.y)
        cov = coverage_sdf(ff, self.cv.px)
        col = _rgb(self.f.glasses_rgb)
        hl = F32(1.0) + F32(0.6) * gauss(ff + F32(gl.thick * 0.3), gl.thick * 0.25) * (w.y < F32(ly))
        self.cv.paint(w, cov, clip01(col[None, None, :] * hl[..., None] + F32(0.05)), C.EYE_G)

    def eye(self, e):
        w = self.cv.window(e.cx - e.w - 0.08, e.cy - e.hu - 0.08, e.cx + e.w + 0.08, e.cy + e.hl + 0.06)
        if w is None:
            return
        x, y = w.x, w.y
        u, v = e.local(x, y)
        vu, vl = e.lids(u)
        fe = np.maximum(np.maximum(vu - v, v - vl), np.abs(u) - F32(e.w))
        cov = coverage(fe)
        px = self.cv.px
        # lid crease: a faint dark curve above the upper lid on the skin
        crease = F32(0.12) * gauss(v - (vu * F32(1.45) - F32(0.025)), 0.012) * (np.abs(u) < F32(e.w))
        self.cv.shade(w, -crease)
        if cov.max() > 0:
            un = np.abs(u) * F32(1.0 / e.w)
            sclera = _rgb((0.95, 0.93, 0.9)) * (F32(1.0) - F32(0.3) * smoothstep(0.5, 1.0, un))[..., None]
            caruncle = gauss(u + F32(e.w), e.w * 0.18)
            sclera += (F32(0.5) * caruncle)[..., None] * (_rgb((0.85, 0.5, 0.5)) - sclera)
            ix, iy = x - F32(e.iris_x), y - F32(e.iris_y)
            r = np.sqrt(ix * ix + iy * iy)
            rn = r * F32(1.0 / e.iris_r)
            cov_i = coverage_sdf(r - F32(e.iris_r), px)
            streak = F32(1.0) + F32(0.12) * np.sin(np.arctan2(iy, ix) * F32(13.0) + F32(3.0) * self.noise(w, "hi"))
            iris = _rgb(self.f.iris_rgb) * ((F32(1.25) - F32(0.65) * smoothstep(0.55, 1.0, rn)) * streak)[..., None]
            col = sclera + cov_i[..., None] * (iris - sclera)
            cov_p = coverage_sdf(r - F32(0.42 * e.iris_r), px)
            col += cov_p[..., None] * (_rgb((0.02, 0.02, 0.025)) - col)
            # the upper lid casts a shadow on the eyeball
            lid_sh = F32(1.0) - F32(0.45) * np.exp(-np.maximum(v - vu, 0) * F32(1.0 / (0.35 * e.hu + 0.01)))
            col *= lid_sh[..., None]
            lx, ly = self.L[0], self.L[1]
            hx, hy = x - F32(e.iris_x + 0.35 * e.iris_r * lx), y - F32(e.iris_y - 0.35 * e.iris_r)
            cov_h = coverage_sdf(np.sqrt(hx * hx + hy * hy) - F32(0.2 * e.iris_r), px) * F32(0.9)
            col += cov_h[..., None] * (F32(1.0) - col)
            self.cv.paint(w, cov, col, C.L_EYE if e.side < 0 else C.R_EYE)
        # lash line along the upper lid (thicker with makeup, and a small wing)
        th = 0.011 + 0.004 * (not self.f.male) + 0.01 * self.f.makeup
        wing = np.clip(u * F32(1.0 / e.w) - F32(0.75), 0, None) * F32(0.03 * (self.f.makeup > 0.5))
        d = np.maximum(np.abs(v - vu + wing) - F32(th / 2), np.abs(u) - F32(e.w * (1.02 + 0.15 * (self.f.makeup > 0.5))))
        lash = coverage_sdf(d, px) * F32(0.85)
        self.cv.paint(w, lash, _rgb((0.06, 0.04, 0.04)))
        dl = np.maximum(np.abs(v - vl) - F32(0.004), np.abs(u) - F32(e.w))
        self.cv.paint(w, coverage_sdf(dl, px) * F32(0.3), _rgb((0.3, 0.2, 0.18)))

    def brow(self, b, cls):
        x0, x1 = min(b.xi, b.xo), max(b.xi, b.xo)
        y0 = min(b.yi, b.yo) - b.arch - b.thick
        w = self.cv.window(x0 - 0.02, y0 - 0.02, x1 + 0.02, max(b.yi, b.yo) + b.thick + 0.02)
        if w is None:
            return
        fb = b.implicit(w.x, w.y)
        cov = coverage(fb)
        t = clip01((w.x - F32(b.xi)) * F32(1.0 / (b.xo - b.xi)))
        shade = (F32(0.9) + F32(0.25) * self.noise(w, "hi")) * (F32(1.0) + F32(0.25) * t)
        self.cv.paint(w, cov, clip01(_rgb(self.f.brow_rgb) * shade[..., None]), cls, opacity=0.92)

    def hat(self):
        h, f = self.lay.hat, self.f
        if h is None:
            return
        wide = 1.6 if h.style == "brim" else 1.0
        w = self.cv.window(h.cx - h.half_w * wide - 0.05, h.top - 0.2, h.cx + h.half_w * wide + 0.05, h.bottom + 0.2)
        if w is None:
            return
        x, y = w.x, w.y
        fh = h.implicit(x, y)
        cov = coverage(fh)
        base = _rgb(f.hat_rgb)
        nx = (x - F32(h.cx)) * F32(1.0 / (h.half_w * wide))
        ny = np.clip((y - F32(h.bottom)) * F32(1.0 / (h.bottom - h.top)), -1, 1)
        shade = self.lambert(nx * F32(0.9), ny * F32(0.7))
        if h.style == "beanie":
            rib = F32(1.0) + F32(0.08) * np.sin(x * F32(70.0)) * (y > F32(h.bottom - 0.17))
            knit = F32(1.0) + F32(0.05) * self.noise(w, "hi")
            shade = shade * rib * knit * (F32(1.0) - F32(0.12) * gauss(y - F32(h.bottom - 0.17), 0.012))
        elif h.style == "brim":
            band = gauss(y - F32(h.bottom - 0.1), 0.04) * (np.abs(nx) < F32(0.55))
            shade = shade * (F32(1.0) - F32(0.45) * band) * (F32(1.0) - F32(0.2) * gauss(y - F32(h.bottom + 0.06), 0.04))
        else:
            seam = gauss(x - F32(h.cx), 0.01) * (y < F32(h.bottom - 0.03))
            shade = shade * (F32(1.0) - F32(0.25) * seam) * (F32(1.0) - F32(0.25) * (y > F32(h.bottom - 0.02)))
        shade *= F32(1.0) + F32(0.04) * self.noise(w, "mid")
        self.cv.paint(w, cov, clip01(base * shade[..., None]), C.HAT)


def _segment_glow(x, y, ax, ay, bx, by, sigma):
    """gauss(distance from (x, y) to the segment a-b, sigma)."""
    vx, vy = bx - ax, by - ay
    ll = vx * vx + vy * vy
    t = clip01(((x - F32(ax)) * F32(vx) + (y - F32(ay)) * F32(vy)) * F32(1.0 / ll))
    dx, dy = x - F32(ax) - t * F32(vx), y - F32(ay) - t * F32(vy)
    return gauss(np.sqrt(dx * dx + dy * dy), sigma)
