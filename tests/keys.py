"""Official checkpoint key schemas (key -> shape), read off checkpoints that the
official code wrote. The loaders must match them exactly."""

import json
from pathlib import Path

KEYS_DIR = Path(__file__).resolve().parent / "fixtures" / "keys"


def official_schema(name: str) -> dict:
    """The whole schema file ``tests/fixtures/keys/<name>.json`` (keys under "keys")."""
    return json.loads((KEYS_DIR / f"{name}.json").read_text())
