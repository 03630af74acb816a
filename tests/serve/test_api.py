"""The editor's HTTP and WebSocket API on a tiny random generator: pages, sessions,
edits, live drags, and a clear error for every kind of bad request."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_rt.models.stylegan2 import Generator
from facegen_rt.serve import create_app
from facegen_rt.serve.sessions import MAX_UPLOAD_BYTES, MAX_UPLOAD_SIDE

from .conftest import running_server

websockets_client = pytest.importorskip("websockets.sync.client")


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    G = Generator.from_preset("tiny").eval()  # 32^2
    # DragGAN's radii scale with the image (r1 = 3 px at 512^2 is 0 px at 32^2): r1 = 48
    # gives a 3 px disk here, and a large step size makes a few steps visibly change it.
    with running_server(create_app(G, inversion_steps=3, lr=0.05, r1=48)) as url:
        yield url


def call(url, method, path, body=None, raw: bytes = None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def api(url, method, path, body=None, raw=None):
    status, ctype, data = call(url, method, path, body, raw)
    assert ctype == "application/json"
    return status, json.loads(data)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def data_url_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def new_session(url, seed=1) -> dict:
    status, s = api(url, "POST", "/api/sessions", {"seed": seed})
    assert status == 201, s
    return s


def drag(url, sid, messages, until=("finished", "error"), limit=500):
    """Send ``messages`` over the session's WebSocket; collect replies until one of ``until``."""
    got = []
    with websockets_client.connect(url.replace("http", "ws", 1) + f"/api/sessions/{sid}/drag",
                                   open_timeout=30) as ws:
        for m in messages:
            ws.send(json.dumps(m))
        while len(got) < limit:
            got.append(json.loads(ws.recv(timeout=60)))
            if got[-1]["type"] in until:
                return got, ws
    raise AssertionError(f"no {until} message: {got[-3:]}")


def test_page_and_static_files(server):
    status, ctype, body = call(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'<canvas id="canvas"' in body and b"/static/editor.js" in body
    for name, kind in (("editor.js", "text/javascript"), ("editor.css", "text/css")):
        status, ctype, _ = call(server, "GET", f"/static/{name}")
        assert status == 200 and ctype.startswith(kind)
    assert api(server, "GET", "/static/../app.py")[0] == 404
    assert api(server, "GET", "/static/nothing.js")[0] == 404
    assert api(server, "POST", "/")[0] == 405
    status, info = api(server, "GET", "/api/info")
    assert status == 200 and info["resolution"] == 32
    assert info["max_upload_bytes"] == MAX_UPLOAD_BYTES


def test_sessions_are_deterministic_per_seed(server):
    a, b, c = new_session(server, 5), new_session(server, 5), new_session(server, 6)
    assert a["id"] != b["id"] and a["resolution"] == 32 and a["steps"] == 0
    pa, pb, pc = (data_url_pixels(s["image"]) for s in (a, b, c))
    assert pa.shape == (32, 32, 3)
    assert np.array_equal(pa, pb) and not np.array_equal(pa, pc)
    status, again = api(server, "GET", f"/api/sessions/{a['id']}")
    assert status == 200 and again["id"] == a["id"]


@pytest.mark.parametrize("seed", [-1, 2**32, "7", 1.5, True, None])
def test_bad_seed(server, seed):
    status, err = api(server, "POST", "/api/sessions", {"seed": seed})
    assert status == 400 and "seed must be an integer" in err["error"]


@pytest.mark.parametrize("body, message", [
    ({"points": [{"handle": [3, 3]}]}, "exactly 'handle' and 'target'"),
    ({"points": [{"handle": [3, 3], "target": [40, 3]}]}, "outside the 32x32 image"),
    ({"points": [{"handle": [3, "a"], "target": [4, 3]}]}, "pair of numbers"),
    ({"points": [{"handle": [3, 3, 3], "target": [4, 3]}]}, "got 3 values"),
    ({"points": "here"}, '{"points": [{"handle"'),
    ([1, 2], '{"points": [{"handle"'),
])
def test_malformed_points(server, body, message):
    sid = new_session(server)["id"]
    status, err = api(server, "PUT", f"/api/sessions/{sid}/points", body)
    assert status == 400 and message in err["error"], err


def test_points_round_trip_and_invalid_json(server):
    sid = new_session(server)["id"]
    status, s = api(server, "PUT", f"/api/sessions/{sid}/points",
                    {"points": [{"handle": [3.4, 5.6], "target": [20, 7.5]}]})
    assert status == 200
    assert s["points"] == [{"id": 0, "handle": [3, 6], "target": [20.0, 7.5]}]
    status, _, body = call(server, "PUT", f"/api/sessions/{sid}/points", raw=b"{not json")
    assert status == 400 and b"not valid JSON" in body


def test_unknown_session_everywhere(server):
    for method, path, body in (("GET", "/api/sessions/nope", None),
                               ("PUT", "/api/sessions/nope/points", {"points": []}),
                               ("POST", "/api/sessions/nope/undo", None)):
        status, err = api(server, method, path, body)
        assert status == 404 and "unknown session 'nope'" in err["error"]
    got, _ = drag(server, "nope", [], until=("error",))
    assert "unknown session 'nope'" in got[0]["message"]


def test_mask_checks(server):
    sid = new_session(server)["id"]
    mask = np.zeros((32, 32, 4), np.uint8)
    mask[16:, :, 3] = 255
    url = "data:image/png;base64," + base64.b64encode(png_bytes(mask)).decode()
    assert api(server, "PUT", f"/api/sessions/{sid}/mask", {"mask": url})[0] == 200
    assert api(server, "PUT", f"/api/sessions/{sid}/mask", {"mask": None})[0] == 200
    small = "data:image/png;base64," + base64.b64encode(png_bytes(mask[:16])).decode()
    for body, message in (({"mask": small}, "it must be 32x32"),
                          ({"mask": "data:image/png;base64,@@@"}, "not valid base64"),
                          ({"mask": "hello"}, "data:image/...;base64 URL"),
                          ({}, '{"mask": null}')):
        status, err = api(server, "PUT", f"/api/sessions/{sid}/mask", body)
        assert status == 400 and message in err["error"], err


def test_upload_inverts_a_photo(server):
    rng = np.random.default_rng(0)
    photo = (rng.random((40, 56, 3)) * 255).astype(np.uint8)  # not square: centre crop
    status, s = api(server, "POST", "/api/sessions/upload", raw=png_bytes(photo))
    assert status == 201, s
    assert s["seed"] is None and np.isfinite(s["inversion_loss"]) and s["resolution"] == 32


def test_upload_errors(server):
    status, err = api(server, "POST", "/api/sessions/upload", raw=b"x" * (MAX_UPLOAD_BYTES + 1))
    assert status == 413 and "exceeds" in err["error"]
    wide = png_bytes(np.zeros((1, MAX_UPLOAD_SIDE + 1, 3), np.uint8))
    status, err = api(server, "POST", "/api/sessions/upload", raw=wide)
    assert status == 413 and f"limit is {MAX_UPLOAD_SIDE} px" in err["error"]
    status, err = api(server, "POST", "/api/sessions/upload", raw=b"not an image")
    assert status == 400 and "could not be decoded" in err["error"]
    status, err = api(server, "POST", "/api/sessions/upload", raw=b"")
    assert status == 400 and "must hold the image" in err["error"]


def test_drag_streams_frames_then_undo(server):
    s = new_session(server, 2)
    sid = s["id"]
    api(server, "PUT", f"/api/sessions/{sid}/points",
        {"points": [{"handle": [10, 10], "target": [22, 14]}]})
    got, _ = drag(server, sid, [{"action": "start", "steps": 4, "frame_every": 1}])
    kinds = [m["type"] for m in got]
    assert kinds == ["frame"] * 3 + ["finished"], kinds
    assert [m["step"] for m in got] == [1, 2, 3, 4]
    final = got[-1]
    assert final["reason"] == "max_steps" and final["targets"] == [[22.0, 14.0]]
    assert final["distances"][0] == pytest.approx(np.hypot(22 - final["handles"][0][0],
                                                           14 - final["handles"][0][1]))
    assert not np.array_equal(data_url_pixels(final["image"]), data_url_pixels(s["image"]))
    status, after = api(server, "GET", f"/api/sessions/{sid}")
    assert after["steps"] == 4 and after["can_undo"]
    status, undone = api(server, "POST", f"/api/sessions/{sid}/undo")
    assert status == 200 and undone["steps"] == 0
    assert np.array_equal(data_url_pixels(undone["image"]), data_url_pixels(s["image"]))


def test_stop_and_bad_commands(server):
    sid = new_session(server, 3)["id"]
    got, _ = drag(server, sid, [{"action": "start"}], until=("error",))
    assert "place at least one handle" in got[0]["message"]
    api(server, "PUT", f"/api/sessions/{sid}/points",
        {"points": [{"handle": [4, 4], "target": [30, 30]}]})
    for cmd, message in (({"action": "start", "steps": 0}, "steps must be an integer"),
                         ({"action": "start", "steps": 5, "frame_every": "x"}, "frame_every"),
                         ({"action": "jump"}, "unknown action 'jump'")):
        got, _ = drag(server, sid, [cmd], until=("error",))
        assert message in got[0]["message"]
    url = server.replace("http", "ws", 1) + f"/api/sessions/{sid}/drag"
    with websockets_client.connect(url) as ws:
        ws.send(json.dumps({"action": "start", "steps": 5000}))
        first = json.loads(ws.recv(timeout=60))
        assert first["type"] == "frame"
        # While it drags, edits are refused and a second start is rejected.
        status, err = api(server, "PUT", f"/api/sessions/{sid}/points", {"points": []})
        assert status == 409 and "stop it first" in err["error"]
        status, state = api(server, "GET", f"/api/sessions/{sid}")
        assert status == 200 and state["running"] and "image" not in state
        ws.send(json.dumps({"action": "start", "steps": 5}))
        ws.send(json.dumps({"action": "stop"}))
        seen = []
        while not seen or seen[-1]["type"] != "finished":
            seen.append(json.loads(ws.recv(timeout=60)))
    assert any(m["type"] == "error" and "already dragging" in m["message"] for m in seen)
    assert seen[-1]["reason"] == "stopped" and seen[-1]["step"] < 5000


def test_serve_cli_refuses_a_missing_generator(tmp_path, capsys):
    from facegen_rt.serve.cli import serve_main
    assert serve_main(["--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert serve_main(["--inversion-steps", "0"]) == 2
