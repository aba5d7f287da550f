"""Keyset paging (search.html#paging): a page link carries the sort-key values of the row it
continues from, so pages stay free of gaps and repeats while resources are written."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import error


@dataclass(frozen=True)
class SortKey:
    """A SQL expression to order by, its direction, and its bound arguments."""

    sql: str
    desc: bool
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Cursor:
    """Continue after (forward) or before (backward) the row whose keys are `values`."""

    values: tuple[Any, ...]
    forward: bool = True

    def encode(self) -> str:
        raw = orjson.dumps([1 if self.forward else 0, *self.values])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor a page link carries; anything else (tampered, truncated) is a 400,
        including values SQLite cannot bind (objects, lists, integers beyond 64 bits)."""
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            data = None
        if (
            not isinstance(data, list)
            or data[:1] not in ([0], [1])
            or not all(_bindable(v) for v in data[1:])
        ):
            raise error(400, "invalid", "Invalid or expired page cursor", "_page")
        return cls(tuple(data[1:]), bool(data[0]))


def _bindable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return value is None or isinstance(value, (str, float))


def order_by(keys: list[SortKey], forward: bool) -> tuple[str, list[Any]]:
    """ORDER BY for the keys; backward pages read the exact reverse order (nulls stay last
    going forward)."""
    parts: list[str] = []
    args: list[Any] = []
    for k in keys:
        desc = k.desc if forward else not k.desc
        nulls = "LAST" if forward else "FIRST"
        parts.append(f"{k.sql} {'DESC' if desc else 'ASC'} NULLS {nulls}")
        args += k.args
    return "ORDER BY " + ", ".join(parts), args


def after(keys: list[SortKey], cursor: Cursor) -> tuple[str, list[Any]]:
    """The rows strictly beyond the cursor in its direction (a lexicographic row comparison
    spelt out, since keys mix directions and NULLs)."""
    if len(cursor.values) != len(keys):
        raise error(400, "invalid", "Page cursor does not fit this search", "_page")
    ors, args = [], []
    for i, (key, value) in enumerate(zip(keys, cursor.values, strict=True)):
        cond, cargs = _beyond(key, value, cursor.forward)
        if cond is None:
            continue
        same, same_args = [], []
        for k, v in zip(keys[:i], cursor.values[:i], strict=True):
            same.append(f"{k.sql} IS ?")
            same_args += [*k.args, v]
        ors.append(" AND ".join([*same, cond]))
        args += same_args + cargs
    return "(" + (" OR ".join(f"({o})" for o in ors) or "0") + ")", args


def _beyond(key: SortKey, value: Any, forward: bool) -> tuple[str | None, list[Any]]:
    a = list(key.args)
    if value is None:  # NULLs sort last going forward
        return (None, []) if forward else (f"{key.sql} IS NOT NULL", a)
    greater = (not key.desc) == forward
    op = ">" if greater else "<"
    if forward:
        return f"({key.sql} {op} ? OR {key.sql} IS NULL)", [*a, value, *a]
    return f"{key.sql} {op} ?", [*a, value]
