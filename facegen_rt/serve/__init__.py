"""`facegen-rt serve`: the drag editor in the browser.

:func:`create_app` builds the ASGI app (:mod:`.app`) around a generator; the page lives
in ``static/``; :mod:`.sessions` parses requests and holds the drag sessions.
"""

from __future__ import annotations

from .app import EditorApp
from .sessions import BadRequest, SessionStore, UnknownSession


def create_app(generator, generator_name: str = "generator", **store_kwargs) -> EditorApp:
    """The editor app for ``generator``; ``store_kwargs`` go to :class:`SessionStore`
    (max_sessions, inversion_steps, and DragSession options such as lr or dtype)."""
    return EditorApp(SessionStore(generator, **store_kwargs), generator_name)


__all__ = ["BadRequest", "EditorApp", "SessionStore", "UnknownSession", "create_app"]
