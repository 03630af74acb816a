"""The editor's sessions: one :class:`~facegen_rt.drag.DragSession` per browser tab, and
the parsing of what the page sends (points, masks, uploads), with clear errors.

Everything here is synchronous and framework-free; :mod:`facegen_rt.serve.app` calls it
from worker threads so the event loop stays free to stream frames.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import threading
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from facegen_rt.drag import DragSession
from facegen_rt.drag.points import check_mask, check_xy, round_xy

#: Largest upload accepted, in bytes and in pixels per side (decoding cost is bounded too).
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOAD_SIDE = 4096


class BadRequest(ValueError):
    """The request is malformed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class UnknownSession(BadRequest):
    def __init__(self, session_id: str):
        super().__init__(f"unknown session {session_id!r} (it may have expired; start a new one)",
                         status=404)


def encode_png(image_uint8: torch.Tensor) -> str:
    """[H, W, 3] uint8 -> a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    Image.fromarray(image_uint8.numpy()).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_data_url(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("data:image/") or "," not in value:
        raise BadRequest(f"{what} must be a data:image/...;base64 URL")
    try:
        return base64.b64decode(value.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def decode_image(data: bytes, what: str = "image") -> Image.Image:
    """Image bytes (PNG, JPEG, ...) -> RGBA-or-RGB PIL image, checked against the limits."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"{what} is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}", 413)
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if max(w, h) > MAX_UPLOAD_SIDE:
            raise BadRequest(f"{what} is {w}x{h}; the limit is {MAX_UPLOAD_SIDE} px per side", 413)
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"{what} could not be decoded as an image ({exc})") from None
    return img


def center_square(img: Image.Image) -> np.ndarray:
    """The largest centred square of an image, as uint8 [S, S, 3]."""
    rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(rgb[top:top + s, left:left + s])


def parse_points(body: Any, res: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """``{"points": [{"handle": [x, y], "target": [x, y]}, ...]}`` -> [(handle, target)]."""
    if not isinstance(body, dict) or not isinstance(body.get("points"), list):
        raise BadRequest('points: send {"points": [{"handle": [x, y], "target": [x, y]}, ...]}')
    pairs = []
    for i, p in enumerate(body["points"]):
        if not isinstance(p, dict) or set(p) != {"handle", "target"}:
            raise BadRequest(f"points[{i}] must be an object with exactly 'handle' and 'target'")
        try:
            pairs.append((check_xy(f"points[{i}].handle", p["handle"], res, res),
                          check_xy(f"points[{i}].target", p["target"], res, res)))
        except ValueError as exc:
            raise BadRequest(str(exc).removeprefix("drag: ")) from None
    return pairs


def parse_mask(body: Any, res: int) -> Optional[torch.Tensor]:
    """``{"mask": null}`` (no mask) or ``{"mask": "data:image/png;base64,..."}``: a res x res
    image whose alpha (or grey level, without alpha) > 0 marks the editable region."""
    if not isinstance(body, dict) or "mask" not in body:
        raise BadRequest('mask: send {"mask": null} or {"mask": "data:image/png;base64,..."}')
    if body["mask"] is None:
        return None
    img = decode_image(_decode_data_url(body["mask"], "mask"), "mask")
    if img.size != (res, res):
        raise BadRequest(f"mask is {img.size[0]}x{img.size[1]}; it must be {res}x{res}")
    channel = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
    return check_mask(torch.from_numpy(np.asarray(channel) > 0), res, res)


class EditorSession:
    """A drag session plus what the server needs around it: an id, a lock (held by the
    request or drag that is changing it), and the stop flag of a running drag."""

    def __init__(self, session_id: str, drag: DragSession, seed: Optional[int]):
        self.id = session_id
        self.drag = drag
        self.seed = seed
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.running = False

    def describe(self, image: bool = True) -> dict:
        d = self.drag
        out = {"id": self.id, "seed": self.seed, "resolution": d.h, "steps": d.steps,
               "points": [{"id": p.id, "handle": list(p.handle), "target": list(p.target)}
                          for p in d.points],
               "can_undo": d.can_undo, "running": self.running}
        if d.inversion_loss is not None:
            out["inversion_loss"] = d.inversion_loss
        # The image only when no drag holds the session (a render beside a running step
        # could read a half-updated latent); a running drag streams its own frames.
        if image and self.lock.acquire(blocking=False):
            try:
                out["image"] = encode_png(d.render_uint8())
            finally:
                self.lock.release()
        return out

    def set_points(self, pairs) -> None:
        """Replace the points; re-sending the current ones changes nothing (so tracking
        references survive a restart of the same drag)."""
        current = [(p.handle, p.target) for p in self.drag.points]
        if current == [(round_xy(h), tuple(t)) for h, t in pairs]:
            return
        for p in self.drag.points:
            self.drag.remove_point(p.id)
        for handle, target in pairs:
            self.drag.add_point(handle, target)


class SessionStore:
    """Sessions by id, oldest evicted past ``max_sessions`` (each holds a latent and Adam
    state, a few MB at most, but an open server should not grow without bound)."""

    def __init__(self, generator, max_sessions: int = 16, inversion_steps: int = 100,
                 **session_kwargs):
        self.generator = generator
        self.max_sessions = max_sessions
        self.inversion_steps = inversion_steps
        self.session_kwargs = session_kwargs
        self._sessions: "OrderedDict[str, EditorSession]" = OrderedDict()
        self._lock = threading.Lock()

    @property
    def resolution(self) -> int:
        return int(self.generator.img_resolution)

    def _add(self, drag: DragSession, seed: Optional[int]) -> EditorSession:
        session = EditorSession(secrets.token_hex(8), drag, seed)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def create(self, seed: Any) -> EditorSession:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise BadRequest(f"seed must be an integer in [0, 2^32), got {seed!r}")
        return self._add(DragSession(self.generator, seed=seed, **self.session_kwargs), seed)

    def create_from_image(self, data: bytes) -> EditorSession:
        square = center_square(decode_image(data))
        drag = DragSession.from_image(self.generator, square, steps=self.inversion_steps,
                                      progress=False, **self.session_kwargs)
        return self._add(drag, None)

    def get(self, session_id: str) -> EditorSession:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(session_id)
        return session
