"""Environment variables that every op call reads, read cheaply.

An op call reads up to three variables (FACEGEN_BACKEND_<OP>, FACEGEN_BACKEND,
FACEGEN_CHECK_NAN). ``os.environ.get`` encodes the name and decodes the value on every
call: 1.5 us each on this project's 2-core CPU, a tenth of a small op's whole Python
overhead. ``os.environ`` keeps its variables in an encoded-key dict that every
``os.environ`` update (``os.environ[k] = v``, ``pop``, ``monkeypatch.setenv``) keeps
current, so :class:`EnvVar` looks its pre-encoded key up there (0.07 us). It reads the
same state ``os.environ.get`` reads: neither sees a bare ``os.putenv``.
"""

from __future__ import annotations

import os
from typing import Optional

# os._Environ's encoded view; absent on some other Python, where we use the public API.
_DATA = getattr(os.environ, "_data", None)
_FAST = isinstance(_DATA, dict) and hasattr(os.environ, "encodekey") \
    and hasattr(os.environ, "decodevalue")


class EnvVar:
    """One environment variable by name; :meth:`get` equals ``os.environ.get(name)``."""

    __slots__ = ("name", "_key")

    def __init__(self, name: str):
        self.name = name
        self._key = os.environ.encodekey(name) if _FAST else name

    def get(self) -> Optional[str]:
        if not _FAST:
            return os.environ.get(self.name)
        raw = _DATA.get(self._key)
        return None if raw is None else os.environ.decodevalue(raw)
