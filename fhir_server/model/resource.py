"""Parsing request bodies and producing the stored (canonical) JSON of a resource version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import error
from .literal import dumps as _dumps
from .literal import loads


def parse_json(body: bytes) -> Any:
    """400 with the parser's position for anything that is not JSON, for an object that
    repeats a name (RFC 8259 §4: names SHOULD be unique; a FHIR resource never repeats one),
    and for nesting deeper than 255 levels, which bounds every walker of a body. Numbers keep
    their written form (literal.py)."""
    if not body:
        raise error(400, "structure", "The request body is empty")
    try:
        value = loads(body)
    except RecursionError:
        raise error(400, "structure", "The JSON is too deeply nested") from None
    except ValueError as exc:
        raise error(400, "structure", f"Malformed JSON: {exc}") from None
    if _may_repeat_a_name(body, value):
        _refuse_repeated_names(body)
    return value


def _may_repeat_a_name(body: bytes, value: Any) -> bool:
    """A cheap test that is never wrong when it says no. A colon is a name's end or a character
    of a string; without \\u escapes the body spells each such character `:`, as orjson does.
    A repeated name is a member (with its colon) that the parsed object no longer has, so equal
    colon counts in the body and in orjson's output prove that no name repeats."""
    try:
        again = _dumps(value)
    except (orjson.JSONEncodeError, ValueError) as exc:
        # nested deeper than orjson writes (255: no FHIR is), or a lone surrogate (\\ud800)
        raise error(400, "structure", f"Malformed JSON: {exc}") from None
    return b"\\u" in body or body.count(b":") != again.count(b":")


def _refuse_repeated_names(body: bytes) -> None:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in pairs:
            if name in out:
                raise error(400, "structure", f"Duplicate JSON key '{name}' in an object")
            out[name] = value
        return out

    try:
        json.loads(body, object_pairs_hook=unique)
    except (ValueError, RecursionError):
        raise error(400, "structure", "Malformed JSON") from None


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
    """The stored form: compact JSON, numbers as they were written."""
    return _dumps(resource)


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the meta stamps, numbers compared as written (`80.0` is not `80.00`),
    names in any order."""
    sort = orjson.OPT_SORT_KEYS
    return _dumps(without_stamps(a), sort) == _dumps(without_stamps(b), sort)


def without_stamps(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without the server's meta.versionId and meta.lastUpdated."""
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out
