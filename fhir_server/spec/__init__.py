"""The R4 definitions the server needs at run time, as compact data files made by
scripts/build_spec_data.py from the official R4 package."""

from __future__ import annotations

from pathlib import Path

import orjson

SPEC_DIR = Path(__file__).parent


def load(name: str) -> object:
    return orjson.loads((SPEC_DIR / name).read_bytes())


def _resource_types() -> frozenset[str]:
    data = load("resource_types.json")
    assert isinstance(data, dict)
    return frozenset(data["types"])


RESOURCE_TYPES: frozenset[str] = _resource_types()
