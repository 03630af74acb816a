"""A live editor server on a free loopback port, run by uvicorn in a thread."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="the editor tests need uvicorn (pip install 'facegen_rt[serve]')")
pytest.importorskip("websockets", reason="the editor tests need websockets")


@contextlib.contextmanager
def running_server(app):
    """Yields the base URL (http://127.0.0.1:PORT) of ``app`` served by uvicorn."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
