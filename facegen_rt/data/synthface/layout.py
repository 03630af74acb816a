"""Face geometry in the face frame, shared by the renderer and the landmarks.

:func:`make_layout` turns :class:`~.factors.Factors` into a :class:`Layout` of small
geometry records. Each record has an ``implicit(x, y)`` method (negative inside; x, y
float32 arrays of face-frame coordinates, any shape) and, where landmarks need them,
methods that return exact points on the same curves, so landmarks and pixels agree.

Yaw is approximated in the face frame: a feature at frontal position ``x0`` with depth
``d`` (how far it sticks out towards the camera) moves to ``yaw_x(x0, d)``: the far side
(the side the features move to) is compressed, the near side slightly stretched, and
every feature shifts by ``yaw * d``. Widths of far-side features shrink the same way.
Left/right: ``l_`` / ``left`` means image-left (viewer's left), as in CelebA landmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .factors import Factors, threshold
from .raster import F32, smoothstep

BASE_SCALE = 0.55  # normalised image units per face unit at factors.scale == 1
FACE_CY = -0.12    # face centre height in normalised image units before the shift
YAW_FAR = 0.5       # far-side compression per unit |yaw|
YAW_NEAR = 0.08     # near-side stretch per unit |yaw|
CRANIUM_N = 2.35    # superellipse exponent of the upper face: a broad skull, not an egg


def _side_factor(x0: float, yaw: float) -> float:
    """Width factor for a feature on the side of x0 (far side shrinks)."""
    return 1.0 - YAW_FAR * abs(yaw) if x0 * yaw > 0 else 1.0 + YAW_NEAR * abs(yaw)


def yaw_x(x0: float, depth: float, yaw: float) -> float:
    """Frontal x of a feature at depth ``depth`` -> its x under the approximate yaw."""
    return x0 * _side_factor(x0, yaw) + yaw * depth


# ---------------------------------------------------------------------------- records

@dataclass
class FaceGeom:
    """Face oval: superellipse with exponent CRANIUM_N above the centre line, ``jaw`` at
    the chin; separate half-widths per side; the lower face is sheared by yaw."""

    a_left: float
    a_right: float
    top: float
    bot: float
    jaw: float
    full: float    # relative widening of the jaw
    shear: float   # x shift per unit of y below the centre line

    def _params(self, xs, y):
        s = smoothstep(0.0, 0.6, y)
        a = np.where(xs < 0, F32(self.a_left), F32(self.a_right)) * (1 + F32(self.full) * s)
        n = F32(CRANIUM_N) + F32(self.jaw - CRANIUM_N) * s
        b = np.where(y < 0, F32(self.top), F32(self.bot))
        return a, n, b

    def implicit(self, x, y):
        xs = x - F32(self.shear) * np.maximum(y, 0)
        a, n, b = self._params(xs, y)
        t = y / b
        return np.power(np.abs(xs) / a, n) + t * t - F32(1.0)

    def edge_x(self, y: float, side: int) -> float:
        """x of the outline at height y on the side ``side`` (-1 left, +1 right)."""
        t = min(max(y / 0.6, 0.0), 1.0)
        s = t * t * (3 - 2 * t)
        a = (self.a_left if side < 0 else self.a_right) * (1 + self.full * s)
        n = CRANIUM_N + (self.jaw - CRANIUM_N) * s
        b = self.top if y < 0 else self.bot
        r = max(0.0, 1.0 - (y / b) ** 2) ** (1.0 / n)
        return self.shear * max(y, 0.0) + side * a * r


@dataclass
class EyeGeom:
    """Almond eye opening between two lid curves meeting at the corners."""

    cx: float
    cy: float
    w: float       # half-width (corner to centre)
    hu: float      # upper lid height at the centre
    hl: float      # lower lid depth at the centre
    tilt: float    # radians, outer corner up
    side: int      # -1 image-left eye, +1 image-right eye
    iris_x: float
    iris_y: float
    iris_r: float

    def _axes(self):
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        return (self.side * c, -s), (self.side * s, c)   # outward axis, downward axis

    def local(self, x, y):
        (ex, ey), (nx, ny) = self._axes()
        dx, dy = x - F32(self.cx), y - F32(self.cy)
        return dx * F32(ex) + dy * F32(ey), dx * F32(nx) + dy * F32(ny)

    def lids(self, u):
        """Upper and lower lid v at outward coordinate u (arrays or floats)."""
        un = u / self.w
        q = np.maximum(1 - un * un, 0)
        return -self.hu * q * (1 - 0.15 * un), self.hl * q * (1 + 0.12 * un)

    def implicit(self, x, y):
        u, v = self.local(x, y)
        vu, vl = self.lids(u)
        return np.maximum(np.maximum(vu - v, v - vl), np.abs(u) - F32(self.w))

    def point(self, u: float, v: float) -> tuple:
        (ex, ey), (nx, ny) = self._axes()
        return (self.cx + u * ex + v * nx, self.cy + u * ey + v * ny)


@dataclass
class BrowGeom:
    """Brow: a tapered stroke from the inner end (xi, yi) to the outer end (xo, yo)."""

    xi: float
    yi: float
    xo: float
    yo: float
    arch: float
    thick: float

    def centre(self, t):
        tc = np.clip(t, 0, 1)
        return self.yi + (self.yo - self.yi) * tc - self.arch * np.sin(np.pi * tc ** 1.5)

    def implicit(self, x, y):
        length = abs(self.xo - self.xi)
        t = (x - F32(self.xi)) * F32(1.0 / (self.xo - self.xi))
        tc = np.clip(t, 0, 1)
        # a rounded head near the inner end, fullest at about a third, a thin tail
        th = F32(self.thick) * (F32(0.8) + F32(0.5) * tc - F32(0.9) * tc * tc)
        d = np.abs(y - self.centre(t).astype(F32)) - th * F32(0.5)
        return np.maximum(d, np.maximum(-t, t - 1) * F32(length))

    def point(self, t: float) -> tuple:
        return (self.xi + (self.xo - self.xi) * t, float(self.centre(np.float64(t))))


@dataclass
class NoseGeom:
    """Nose: a tapering bridge from (bx, by) joined to an ellipse around the tip."""

    bx: float
    by: float
    tx: float
    ty: float
    wb: float        # bridge half-width
    w_left: float    # half-width at the nostrils, image-left side
    w_right: float
    ht: float        # tip ellipse half-height

    def implicit(self, x, y):
        t = (y - F32(self.by)) * F32(1.0 / (self.ty - self.by))
        cl = F32(self.bx) + F32(self.tx - self.bx) * t
        dx = x - cl
        wn = np.where(dx < 0, F32(self.w_left), F32(self.w_right))
        tc = np.clip(t, 0, 1)
        wid = F32(self.wb) + (wn * F32(0.75) - F32(self.wb)) * tc * tc
        f_bridge = np.maximum(np.abs(dx) - wid, np.maximum(F32(self.by) - y, y - F32(self.ty)))
        ex = (x - F32(self.tx)) / np.where(x < self.tx, F32(self.w_left), F32(self.w_right))
        ey = (y - F32(self.ty)) * F32(1.0 / self.ht)
        f_tip = (np.sqrt(ex * ex + ey * ey) - F32(1.0)) * F32(self.ht)
        return np.minimum(f_bridge, f_tip)

    def nostrils(self) -> list:
        """[(cx, cy, rx, ry)] for the image-left and image-right nostril."""
        y = self.ty + 0.45 * self.ht
        return [(self.tx - 0.5 * self.w_left, y, 0.3 * self.w_left, 0.2 * self.ht),
                (self.tx + 0.5 * self.w_right, y, 0.3 * self.w_right, 0.2 * self.ht)]


@dataclass
class MouthGeom:
    """Lips and mouth opening, all curves over the normalised coordinate xn in [-1, 1].

    m: centre line; gt/gb: top/bottom of the opening; u: top of the upper lip;
    l: bottom of the lower lip. The opening (class mouth) lies between gt and gb.
    """

    mx: float
    my: float
    wl: float
    wr: float
    lift: float    # how much the corners rise (smile)
    gap: float     # opening height at the centre
    tu: float
    tl: float

    def xn(self, x):
        dx = x - F32(self.mx) if isinstance(x, np.ndarray) else x - self.mx
        if isinstance(dx, np.ndarray):
            return dx / np.where(dx < 0, F32(self.wl), F32(self.wr))
        return dx / (self.wl if dx < 0 else self.wr)

    def curves(self, x):
        xn = self.xn(x)
        q = np.maximum(1 - xn * xn, 0)
        m = self.my - self.lift * xn * xn
        gh = self.gap * q ** 0.7
        gt, gb = m - 0.35 * gh, m + 0.65 * gh
        bow = np.exp(-(xn / 0.22) ** 2)   # cupid's bow: dip in the middle of the upper lip
        u = gt - self.tu * q ** 0.5 * (1 - 0.3 * bow)
        lo = gb + self.tl * q ** 0.55
        return xn, m, gt, gb, u, lo

    def corner(self, side: int) -> tuple:
        w = self.wl if side < 0 else self.wr
        return (self.mx + side * w, self.my - self.lift)


@dataclass
class EarGeom:
    cx: float
    cy: float
    w: float
    h: float
    side: int

    def implicit(self, x, y):
        ex = (x - F32(self.cx)) * F32(1.0 / self.w)
        ey = (y - F32(self.cy)) * F32(1.0 / self.h)
        return (np.sqrt(ex * ex + ey * ey) - F32(1.0)) * F32(min(self.w, self.h))

    def lobe(self) -> tuple:
        return (self.cx, self.cy + 0.85 * self.h)


@dataclass
class NeckGeom:
    cx: float
    w: float
    top: float
    flare_y: float

    def half_width(self, y):
        d = np.maximum(y - F32(self.flare_y), 0)
        return F32(self.w) + F32(0.9) * d * d

    def implicit(self, x, y):
        return np.maximum(np.abs(x - F32(self.cx)) - self.half_width(y), F32(self.top) - y)


@dataclass
class ClothGeom:
    cx: float
    shoulder_y: float
    half_w: float
    half_h: float
    neckline: str
    neck_w: float

    def implicit(self, x, y):
        h = F32(self.half_h)
        tx = np.abs(x - F32(self.cx)) * F32(1.0 / self.half_w)
        ty = (y - F32(self.shoulder_y) - h) / h
        tx3 = tx * tx * tx
        f_torso = (tx3 * tx3 + ty * ty - F32(1.0)) * (h * F32(0.5))   # flat top, round shoulders
        dx = np.abs(x - F32(self.cx))
        sy = self.shoulder_y
        if self.neckline == "v":
            f_hole = (dx - (F32(sy + 0.38) - y) * F32(0.55)) * F32(0.876)
        else:
            cy, hw, hh = ((sy - 0.02, self.neck_w * 1.45, 0.26) if self.neckline == "round"
                          else (sy - 0.1, self.neck_w * 1.15, 0.17))
            ex, ey = dx * F32(1.0 / hw), (y - F32(cy)) * F32(1.0 / hh)
            f_hole = (np.sqrt(ex * ex + ey * ey) - F32(1.0)) * F32(hh)
        return np.maximum(f_torso, -f_hole)


@dataclass
class HairGeom:
    """Hair outline (back layer) and hairline (front layer)."""

    style: str
    cx: float
    half_w: float     # outline half-width at the centre line
    top: float        # outline top (positive distance above the centre)
    bottom: float     # y of the hair ends (long/bob) or nape (others)
    flare: float
    wave: float
    phase: float
    hairline: float   # y of the hairline at the parting (no bangs)
    bangs: bool
    bang_y: float
    sweep: float
    part: float
    side_x0: float
    side_drop: float
    bun: tuple | None  # (cx, cy, r)

    def outline(self, x, y):
        dx = x - F32(self.cx)
        ytop = y * F32(1.0 / self.top)
        f_top = np.sqrt((dx * F32(1.0 / self.half_w)) ** 2 + ytop * ytop) - F32(1.0)
        if self.style in ("long", "bob"):
            wv = F32(0.06 * self.wave) * np.sin(y * F32(11.0) + F32(self.phase))
            side = (np.abs(dx) - (F32(self.half_w) + F32(self.flare) * y + wv)) * F32(1.0 / self.half_w)
            end_y = (F32(self.bottom) - F32(0.12 if self.style == "long" else -0.06)
                     * (dx * F32(1.0 / self.half_w)) ** 2
                     + F32(0.035) * np.abs(np.sin(dx * F32(23.0) + F32(self.phase))))
            f_low = np.maximum(side, (y - end_y) * F32(1.0 / self.half_w))
        else:
            yb = y * F32(1.0 / self.bottom)
            f_low = np.sqrt((dx * F32(1.0 / self.half_w)) ** 2 + yb * yb) - F32(1.0)
        f = np.where(y < 0, f_top, f_low)
        if self.bun is not None:
            bx, by, br = self.bun
            f_bun = (np.sqrt((x - F32(bx)) ** 2 + (y - F32(by)) ** 2) - F32(br)) * F32(1.0 / self.half_w)
            f = np.minimum(f, f_bun)
        return f

    def hairline_y(self, x):
        """y of the lower edge of the front hair at x."""
        dx = x - F32(self.cx)
        if self.bangs:
            hc = (F32(self.bang_y) + F32(0.12) * (dx * F32(1.0 / self.half_w)) ** 2
                  + F32(self.sweep) * dx
                  + F32(0.025) * np.abs(np.sin(dx * F32(26.0) + F32(self.phase))))
        else:
            hc = F32(self.hairline) + F32(0.35) * ((x - F32(self.part)) * F32(1.0 / self.half_w)) ** 2
        return hc + F32(self.side_drop) * smoothstep(self.side_x0, self.side_x0 + 0.1, np.abs(dx))

    def front(self, x, y):
        return np.maximum(self.outline(x, y), (y - self.hairline_y(x)) * F32(1.0 / self.half_w))


@dataclass
class HatGeom:
    style: str
    cx: float
    bottom: float    # y of the hat's lower edge at the forehead
    half_w: float
    top: float       # y of the crown top (negative)

    def implicit(self, x, y):
        dx = x - F32(self.cx)
        hb = F32(self.bottom)
        if self.style == "brim":
            cy, hh = (self.top + self.bottom) / 2 - 0.05, (self.bottom - self.top) / 2 + 0.05
            tx, ty = dx * F32(1.0 / (0.82 * self.half_w)), (y - F32(cy)) * F32(1.0 / hh)
            crown = (np.sqrt(np.sqrt(tx ** 4 + ty ** 4)) - F32(1.0)) * F32(hh)
            bx, by = dx * F32(1.0 / (1.55 * self.half_w)), (y - hb) * F32(1.0 / 0.12)
            brim = (np.sqrt(bx * bx + by * by) - F32(1.0)) * F32(0.12)
            return np.minimum(crown, brim)
        hh = self.bottom - self.top
        tx, ty = dx * F32(1.0 / self.half_w), (y - hb) * F32(1.0 / hh)
        dome = np.maximum((np.sqrt(tx * tx + ty * ty) - F32(1.0)) * F32(hh), y - hb)
        if self.style == "cap":
            vx, vy = dx * F32(1.0 / (0.9 * self.half_w)), (y - hb) * F32(1.0 / 0.16)
            visor = np.maximum((np.sqrt(vx * vx + vy * vy) - F32(1.0)) * F32(0.16), hb - F32(0.02) - y)
            return np.minimum(dome, visor)
        return dome


@dataclass
class GlassesGeom:
    lenses: list     # [(cx, cy, half_w, half_h)] image-left then image-right
    power: float     # superellipse exponent of the lens shape
    thick: float     # frame thickness
    bridge_y: float
    arm_x: tuple     # (left end x, right end x) of the temple arms
    sunglasses: bool

    def lens(self, x, y, i):
        cx, cy, hw, hh = self.lenses[i]
        n = F32(self.power)
        tx = np.abs(x - F32(cx)) * F32(1.0 / hw)
        ty = np.abs(y - F32(cy)) * F32(1.0 / hh)
        return (np.power(np.power(tx, n) + np.power(ty, n), F32(1.0) / n) - F32(1.0)) * F32(hh)

    def frame(self, x, y):
        """Distance-like implicit of both rims, the bridge and the temple arms."""
        half = F32(self.thick * 0.5)
        rims = np.minimum(np.abs(self.lens(x, y, 0)), np.abs(self.lens(x, y, 1))) - half
        (lx, _, lw, _), (rx, _, rw, _) = self.lenses
        by = F32(self.bridge_y)
        bridge = np.maximum(np.abs(y - by) - half, np.maximum(F32(lx + lw * 0.9) - x, x - F32(rx - rw * 0.9)))
        left_arm = np.maximum(np.abs(y - by) - half, np.maximum(F32(self.arm_x[0]) - x, x - F32(lx - lw * 0.9)))
        right_arm = np.maximum(np.abs(y - by) - half, np.maximum(F32(rx + rw * 0.9) - x, x - F32(self.arm_x[1])))
        return np.minimum(np.minimum(rims, bridge), np.minimum(left_arm, right_arm))


@dataclass
class Layout:
    """All geometry of one face plus the face-frame -> image transform."""

    scale: float
    roll: float
    cx: float
    cy: float
    face: FaceGeom
    eyes: tuple        # (image-left, image-right) EyeGeom
    brows: tuple       # (image-left, image-right) BrowGeom
    nose: NoseGeom
    mouth: MouthGeom
    ears: tuple        # (image-left, image-right) EarGeom
    neck: NeckGeom
    cloth: ClothGeom
    hair: HairGeom | None
    hat: HatGeom | None
    glasses: GlassesGeom | None
    earrings: list     # [(side, style, (x, y))] lobe anchor per visible ear
    necklace: tuple | None  # (cx, y_low, k, span_y, thick, style)
    light: tuple       # unit light direction (x, y, z) in the face frame


# --------------------------------------------------------------------------- builder

def make_layout(f: Factors) -> Layout:
    """Geometry of the face described by ``f`` (all values in face units)."""
    yaw = f.yaw
    ay = abs(yaw)
    far_l = yaw < 0   # features move left when yaw < 0, so the left side is far
    a = f.face_width
    face = FaceGeom(
        a_left=a * (1 - 0.22 * ay if far_l else 1 + 0.03 * ay),
        a_right=a * (1 + 0.03 * ay if far_l else 1 - 0.22 * ay),
        top=f.forehead, bot=f.face_length, jaw=f.jaw,
        # Chubby faces (fullness past its attribute margin) get a visibly wider jaw
        full=0.08 * (f.fullness - 0.3) + (0.1 if f.fullness > threshold("fullness") else 0.0), shear=0.22 * yaw)

    # eyes
    eyes = []
    for side in (-1, 1):
        x0 = side * f.eye_spacing
        k = _side_factor(x0, yaw)
        w = f.eye_width * k
        hu = f.eye_width * f.eye_ratio * f.eye_open
        cx, cy = yaw_x(x0, 0.22, yaw), -0.02
        iris_r = 0.47 * f.eye_width * (0.75 + 0.25 * k)
        eyes.append(EyeGeom(cx=cx, cy=cy, w=w, hu=hu, hl=0.72 * hu, tilt=f.eye_tilt, side=side,
                            iris_x=cx + 0.33 * w * f.gaze, iris_y=cy + 0.05 * hu, iris_r=iris_r))

    # brows
    brows = []
    by = -0.22 + f.brow_height - 0.05 * f.brow_raise
    for side in (-1, 1):
        xi0, xo0 = side * (f.eye_spacing - 0.95 * f.eye_width), side * (f.eye_spacing + 1.2 * f.eye_width)
        brows.append(BrowGeom(xi=yaw_x(xi0, 0.25, yaw), yi=by + 0.01,
                              xo=yaw_x(xo0, 0.25, yaw), yo=by + 0.035 - 0.4 * f.eye_tilt * f.eye_width,
                              arch=f.brow_arch, thick=f.brow_thickness))

    # nose
    nw = f.nose_width
    nose = NoseGeom(bx=yaw_x(0.0, 0.3, yaw), by=-0.02, tx=yaw_x(0.0, 0.5, yaw), ty=f.nose_length,
                    wb=0.035, w_left=nw * _side_factor(-1, yaw), w_right=nw * _side_factor(1, yaw),
                    ht=0.07)

    # mouth: the corners rise and the mouth widens with the smile
    mw = f.mouth_width * (1 + 0.15 * f.smile)
    mouth = MouthGeom(mx=yaw_x(0.0, 0.32, yaw), my=f.nose_length + 0.26,
                      wl=mw * _side_factor(-1, yaw), wr=mw * _side_factor(1, yaw),
                      lift=0.1 * f.smile - 0.02, gap=0.12 * f.mouth_open,
                      tu=0.75 * f.lip_fullness, tl=f.lip_fullness)

    # ears: behind the face (negative depth); the far ear tucks behind the cheek
    ears = []
    for side in (-1, 1):
        s = f.ear_size
        edge = face.edge_x(0.1, side)
        far = side * yaw > 0
        cx = edge + side * (0.035 * s - (0.09 if far else -0.02) * ay)
        ears.append(EarGeom(cx=cx, cy=0.1, w=0.085 * s * (1 - 0.5 * ay if far else 1.0), h=0.19 * s,
                            side=side))

    neck = NeckGeom(cx=-0.06 * yaw, w=f.neck_width, top=0.3, flare_y=f.face_length + 0.12)
    cloth = ClothGeom(cx=-0.06 * yaw, shoulder_y=f.face_length + 0.42,
                      half_w=2.0 + (0.15 if f.male else 0.0), half_h=1.4, neckline=f.neckline,
                      neck_w=f.neck_width)

    hair = _hair_layout(f, face) if f.hair_style != "bald" else None
    hat = None
    if f.hat:
        vol = f.hair_volume if hair is not None else 0.0
        hat = HatGeom(style=f.hat_style, cx=-0.05 * yaw, bottom=-0.5 if f.hat_style != "brim" else -0.58,
                      half_w=max(face.a_left, face.a_right) + 0.1 + vol,
                      top=-(f.forehead + vol + 0.14))

    glasses = None
    if f.glasses:
        lenses = []
        for e in eyes:
            hw = e.w * 1.45 + 0.02
            lenses.append((e.cx, e.cy + 0.005, hw, 0.1 + 0.3 * f.eye_width))
        power = {"round": 2.0, "rect": 4.5, "cat": 3.0}[f.glasses_shape]
        glasses = GlassesGeom(lenses=lenses, power=power, thick=0.028 if f.glasses_shape != "round" else 0.022,
                              bridge_y=eyes[0].cy - 0.045,
                              arm_x=(face.edge_x(-0.05, -1) - 0.02, face.edge_x(-0.05, 1) + 0.02),
                              sunglasses=f.sunglasses)

    earrings = []
    if f.earrings:
        for e in ears:
            earrings.append((e.side, f.earring_style, e.lobe()))

    necklace = None
    if f.necklace:
        y_low = f.face_length + 0.42 + (0.12 if f.necklace_style == "pendant" else 0.06)
        span_y = f.face_length + 0.18
        k = (y_low - span_y) / (neck.w + 0.05) ** 2
        necklace = (neck.cx, y_low, k, span_y, 0.03 if f.necklace_style == "chain" else 0.045,
                    f.necklace_style)

    lx = 0.65 * f.light_dir
    ln = math.sqrt(lx * lx + 0.35 ** 2 + 0.8 ** 2)
    return Layout(scale=BASE_SCALE * f.scale, roll=f.roll, cx=f.shift_x, cy=FACE_CY + f.shift_y,
                  face=face, eyes=tuple(eyes), brows=tuple(brows), nose=nose, mouth=mouth,
                  ears=tuple(ears), neck=neck, cloth=cloth, hair=hair, hat=hat, glasses=glasses,
                  earrings=earrings, necklace=necklace, light=(lx / ln, -0.35 / ln, 0.8 / ln))


def _hair_layout(f: Factors, face: FaceGeom) -> HairGeom:
    """Outline and hairline of the hair for one of the non-bald styles."""
    st = f.hair_style
    vol = f.hair_volume
    amax = max(face.a_left, face.a_right)
    half_w = amax + 0.04 + vol
    top = f.forehead + vol
    receding = 0.15 if (f.male and f.age > threshold("age")) else 0.0
    hairline = -0.74 + receding
    side_x0, side_drop = 0.84 * amax, 0.62
    bottom, flare = 0.3, 0.0
    if st == "long":
        bottom, flare = f.hair_length, 0.08 + 0.06 * f.hair_wave
        side_x0, side_drop = 0.8 * amax, 0.75
    elif st == "bob":
        bottom, flare = f.hair_length, 0.1
        side_x0, side_drop = 0.8 * amax, 0.72
    elif st == "buzz":
        half_w, top, bottom = amax + 0.015 + vol, f.forehead + vol, 0.25
        hairline = -0.7 + receding
    bun = None
    if st == "bun":
        bun = (-0.05 * f.yaw, -top - 0.08, 0.27)
    phase = 6.283 * ((f.texture_seed % 997) / 997.0)
    return HairGeom(style=st, cx=-0.06 * f.yaw, half_w=half_w, top=top, bottom=bottom, flare=flare,
                    wave=f.hair_wave, phase=phase, hairline=hairline, bangs=f.bangs,
                    bang_y=-0.44 + 0.12 * f.hair_wave, sweep=0.25 * f.hair_part,
                    part=f.hair_part * 0.6 * amax, side_x0=side_x0, side_drop=side_drop, bun=bun)
