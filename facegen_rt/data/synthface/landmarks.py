"""Named facial landmarks, computed from the same geometry the renderer draws.

Landmarks are pixel coordinates (x, y), float32 [K, 2], with the convention of
raster.py (pixel (c, r) covers [c, c+1) x [r, r+1)): the pixel holding landmark
(x, y) is ``label[int(y), int(x)]``. ``l_`` / ``r_`` mean image-left / image-right, as
in the CelebA landmark files. Points are geometric and may be hidden (an ear under
hair, an eye behind dark glasses) or outside the image (a cropped jaw).
"""

from __future__ import annotations

import numpy as np

from .layout import Layout
from .raster import face_to_pixels

LANDMARK_NAMES = (
    # eyes: corners, top/bottom of the lids at the eye centre, eye centre, pupil
    "l_eye_outer", "l_eye_inner", "l_eye_top", "l_eye_bottom", "l_eye_center", "l_pupil",
    "r_eye_inner", "r_eye_outer", "r_eye_top", "r_eye_bottom", "r_eye_center", "r_pupil",
    # brows: ends and the middle of the arch
    "l_brow_outer", "l_brow_peak", "l_brow_inner", "r_brow_inner", "r_brow_peak", "r_brow_outer",
    # nose
    "nose_bridge", "nose_tip", "l_nostril", "r_nostril",
    # mouth: corners, outer and inner lip edges on the mouth's centre line
    "mouth_l_corner", "mouth_r_corner", "upper_lip_top", "upper_lip_bottom",
    "lower_lip_top", "lower_lip_bottom",
    # face outline
    "chin", "l_jaw_upper", "l_jaw_mid", "l_jaw_lower", "r_jaw_upper", "r_jaw_mid", "r_jaw_lower",
    # ears
    "l_ear", "r_ear", "l_ear_lobe", "r_ear_lobe",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)
LANDMARK_INDEX = {n: i for i, n in enumerate(LANDMARK_NAMES)}

# heights of the jaw points, as fractions of the centre-to-chin distance
_JAW_Y = (0.35, 0.62, 0.86)


def face_landmarks(lay: Layout) -> np.ndarray:
    """Landmarks in the face frame, float64 [K, 2], in LANDMARK_NAMES order."""
    pts = []
    for e in lay.eyes:   # image-left eye first; its "outer" corner is at u = +w
        outer, inner = e.point(e.w, 0.0), e.point(-e.w, 0.0)
        vu, vl = e.lids(0.0)
        top, bottom = e.point(0.0, float(vu)), e.point(0.0, float(vl))
        corners = [outer, inner] if e.side < 0 else [inner, outer]
        pts += corners + [top, bottom, (e.cx, e.cy), (e.iris_x, e.iris_y)]
    lb, rb = lay.brows
    pts += [lb.point(1.0), lb.point(0.63), lb.point(0.0), rb.point(0.0), rb.point(0.63), rb.point(1.0)]
    n = lay.nose
    pts += [(n.bx, n.by), (n.tx, n.ty)] + [(cx, cy) for cx, cy, _, _ in n.nostrils()]
    m = lay.mouth
    _, _, gt, gb, u, lo = (float(v) for v in m.curves(m.mx))
    pts += [m.corner(-1), m.corner(1), (m.mx, u), (m.mx, gt), (m.mx, gb), (m.mx, lo)]
    fg = lay.face
    pts.append((fg.shear * fg.bot, fg.bot))
    for side in (-1, 1):
        pts += [(fg.edge_x(k * fg.bot, side), k * fg.bot) for k in _JAW_Y]
    pts += [(e.cx, e.cy) for e in lay.ears] + [e.lobe() for e in lay.ears]
    out = np.asarray(pts, np.float64)
    assert out.shape == (NUM_LANDMARKS, 2)
    return out


def landmarks(lay: Layout, res: int) -> np.ndarray:
    """Landmarks in pixel coordinates (x, y), float32 [K, 2], at resolution ``res``."""
    return face_to_pixels(face_landmarks(lay), res, lay.scale, lay.roll, lay.cx, lay.cy).astype(np.float32)
