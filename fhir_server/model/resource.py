"""Parsing request bodies and producing the stored (canonical) JSON of a resource version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import error


def parse_json(body: bytes) -> Any:
    """400 with the parser's position for anything that is not JSON."""
    if not body:
        raise error(400, "structure", "The request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise error(400, "structure", f"Malformed JSON: {exc}") from None


def now() -> str:
    """An instant with microseconds, so versions written in sequence sort in sequence."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def with_meta(
    resource: dict[str, Any], rid: str, version: int, last_updated: str
) -> dict[str, Any]:
    """A copy with id and meta.versionId/lastUpdated set by the server; other meta kept."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": rid, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


def dumps(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource)
