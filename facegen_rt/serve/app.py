"""The drag editor's ASGI app: one page, a small JSON API, and a WebSocket of live frames.

Routes (every error is JSON ``{"error": message}`` with a 4xx status):

    GET  /                                 the editor page (static/index.html)
    GET  /static/<file>                    its script and style sheet
    GET  /api/info                         {"resolution", "generator", "max_upload_bytes"}
    POST /api/sessions                     {"seed": int}            -> 201 session
    POST /api/sessions/upload              raw image bytes          -> 201 session (inverted)
    GET  /api/sessions/<id>                                         -> session
    PUT  /api/sessions/<id>/points         {"points": [{"handle": [x, y], "target": [x, y]}]}
    PUT  /api/sessions/<id>/mask           {"mask": null | "data:image/png;base64,..."}
    POST /api/sessions/<id>/undo | reset
    WS   /api/sessions/<id>/drag           client: {"action": "start", "steps": N,
                                           "frame_every": k} | {"action": "stop"}
                                           server: {"type": "frame" | "finished" | "error"}

A session is {"id", "seed", "resolution", "steps", "points", "can_undo", "running",
"image": PNG data URL}. Drag steps run in a worker thread; the event loop only moves
messages, so "stop" is seen between two steps.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

from .sessions import (MAX_UPLOAD_BYTES, BadRequest, EditorSession, SessionStore, encode_png,
                       parse_mask, parse_points)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# A mask arrives as a base64 PNG: 4/3 of the image limit, plus the JSON around it.
MAX_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 4096
MAX_STEPS = 10_000
SESSION_PATH = re.compile(r"/api/sessions/([0-9a-zA-Z_-]+)(?:/(points|mask|undo|reset|drag))?")

Send = Callable[[dict], Awaitable[None]]


class EditorApp:
    """ASGI application around a :class:`SessionStore` (one generator, many sessions)."""

    def __init__(self, store: SessionStore, generator_name: str = "generator"):
        self.store = store
        self.generator_name = generator_name

    async def __call__(self, scope: dict, receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    # ------------------------------------------------------------------ HTTP
    async def _http(self, scope: dict, receive, send: Send) -> None:
        try:
            status, payload = await self._route(scope, receive)
        except BadRequest as exc:
            status, payload = exc.status, {"error": str(exc)}
        if isinstance(payload, tuple):  # a static file: (content type, bytes)
            ctype, body = payload
        else:
            ctype, body = "application/json", json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: dict, receive) -> tuple[int, Any]:
        method, path = scope["method"], scope["path"]
        if path == "/" or path.startswith("/static/"):
            _require(method, "GET")
            return 200, _static("index.html" if path == "/" else path[len("/static/"):])
        if path == "/api/info":
            _require(method, "GET")
            return 200, {"resolution": self.store.resolution, "generator": self.generator_name,
                         "max_upload_bytes": MAX_UPLOAD_BYTES}
        if path == "/api/sessions":
            _require(method, "POST")
            body = _json(await _read_body(receive))
            seed = body.get("seed", 0) if isinstance(body, dict) else None
            session = await asyncio.to_thread(self.store.create, seed)
            return 201, await asyncio.to_thread(session.describe)
        if path == "/api/sessions/upload":
            _require(method, "POST")
            data = await _read_body(receive, MAX_UPLOAD_BYTES)
            if not data:
                raise BadRequest("upload: the request body must hold the image file")
            session = await asyncio.to_thread(self.store.create_from_image, data)
            return 201, await asyncio.to_thread(session.describe)
        m = SESSION_PATH.fullmatch(path)
        if m is None or m.group(2) == "drag":
            raise BadRequest(f"no route {method} {path}", 404)
        session = self.store.get(m.group(1))
        action = m.group(2)
        if action is None:
            _require(method, "GET")
            return 200, await asyncio.to_thread(session.describe)
        _require(method, "PUT" if action in ("points", "mask") else "POST")
        body = _json(await _read_body(receive)) if action in ("points", "mask") else None
        return 200, await asyncio.to_thread(self._edit, session, action, body)

    def _edit(self, session: EditorSession, action: str, body: Any) -> dict:
        res = self.store.resolution
        change = {"points": lambda: session.set_points(parse_points(body, res)),
                  "mask": lambda: session.drag.set_mask(parse_mask(body, res)),
                  "undo": session.drag.undo,
                  "reset": lambda: session.drag.reset(keep_points=False)}[action]
        if not session.lock.acquire(blocking=False):
            raise BadRequest("the session is dragging; stop it first", 409)
        try:
            change()
            return session.describe()
        finally:
            session.lock.release()

    # ------------------------------------------------------------------ WebSocket
    async def _websocket(self, scope: dict, receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})

        async def send_json(message: dict) -> None:
            await send({"type": "websocket.send", "text": json.dumps(message)})

        m = SESSION_PATH.fullmatch(scope["path"])
        try:
            if m is None or m.group(2) != "drag":
                raise BadRequest(f"no WebSocket route {scope['path']}", 404)
            session = self.store.get(m.group(1))
        except BadRequest as exc:
            await send_json({"type": "error", "message": str(exc)})
            await send({"type": "websocket.close", "code": 4000 + exc.status})
            return
        task = None
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                session.stop.set()
                break
            try:
                cmd = _json((message.get("text") or "").encode())
                action = cmd.get("action") if isinstance(cmd, dict) else None
                if action == "stop":
                    session.stop.set()
                elif action == "start":
                    steps, every = _start_args(cmd)
                    if session.running:
                        raise BadRequest("the session is already dragging", 409)
                    session.stop.clear()
                    session.running = True
                    task = asyncio.create_task(self._drag(session, steps, every, send_json))
                else:
                    raise BadRequest(f"unknown action {action!r}; use 'start' or 'stop'")
            except BadRequest as exc:
                await send_json({"type": "error", "message": str(exc)})
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _drag(self, session: EditorSession, steps: int, every: int, send_json) -> None:
        """Run up to ``steps`` drag steps (one undo batch), sending a frame every ``every``."""
        loop = asyncio.get_running_loop()
        count = 0

        def on_step(result) -> bool:
            nonlocal count
            count += 1
            if session.stop.is_set():
                return False
            if count % every == 0 and count < steps and not result.done:  # last: 'finished'
                frame = _frame(session, result, "frame")
                asyncio.run_coroutine_threadsafe(send_json(frame), loop).result()
            return True

        def work():
            if not session.lock.acquire(blocking=False):
                raise BadRequest("the session is being edited; try again", 409)
            try:
                if not session.drag.points:
                    raise BadRequest("place at least one handle and target first")
                results = session.drag.run(steps, on_step)
                final = _frame(session, results[-1] if results else None, "finished")
            finally:
                session.lock.release()
            done = bool(results) and results[-1].done
            final["reason"] = "done" if done else "stopped" if session.stop.is_set() else "max_steps"
            return final

        try:
            final = await asyncio.to_thread(work)
            await send_json(final)
        except BadRequest as exc:
            await send_json({"type": "error", "message": str(exc)})
        except Exception as exc:  # the client went away, or a step failed: tell if we can
            try:
                await send_json({"type": "error", "message": f"drag failed: {exc}"})
            except Exception:
                pass
        finally:
            session.running = False


def _frame(session: EditorSession, result, kind: str) -> dict:
    d = session.drag
    points = d.points
    return {"type": kind, "step": d.steps,
            "handles": [list(p.handle) for p in points],
            "targets": [list(p.target) for p in points],
            "distances": [p.distance() for p in points],
            "done": bool(result is not None and result.done),
            "loss": None if result is None else result.loss,
            "image": encode_png(d.render_uint8())}


def _start_args(cmd: dict) -> tuple[int, int]:
    steps, every = cmd.get("steps", 200), cmd.get("frame_every", 1)
    for name, v, hi in (("steps", steps, MAX_STEPS), ("frame_every", every, MAX_STEPS)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise BadRequest(f"{name} must be an integer in [1, {hi}], got {v!r}")
    return steps, every


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise BadRequest(f"method {method} is not allowed here; use {allowed}", 405)


def _static(name: str) -> tuple[str, bytes]:
    path = STATIC / name
    if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
        raise BadRequest(f"no file {name!r}", 404)
    return STATIC_TYPES[path.suffix], path.read_bytes()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None


async def _read_body(receive, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the request body exceeds {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
