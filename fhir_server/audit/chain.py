"""Tamper evidence for the audit trail (security.md §4.2): a hash chain over every stored
AuditEvent in write order, hash_n = SHA-256(hash_{n-1} || JCS(AuditEvent_n)), appended under
the write lock in the transaction that stores the event, and its verification.

A recomputable chain detects an edited, deleted, inserted or reordered event; it cannot detect
cutting off the newest events, nor a rewrite of the whole chain by someone with write access
to the file: that needs signed checkpoints kept elsewhere (§4.2, not built yet)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from ..storage.sqlite import Session, Stored
from ..storage.sqlite.audit import Link, append_links, chain_head, chained, unchained

#: the hash before the first event
GENESIS = bytes(32)


def canonical(resource: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value, for the JSON an AuditEvent can hold.

    orjson with sorted keys writes what JCS writes when (a) there are no floating-point
    numbers (JCS prints numbers as ECMAScript does; AuditEvents hold only strings, booleans
    and small integers, which both print alike) and (b) keys are ASCII (JCS sorts by UTF-16
    code units, orjson by code points: the same order for ASCII). Strings are escaped alike:
    `"`, `\\\\` and the control characters (\\b \\t \\n \\f \\r short, the rest \\u00xx),
    everything else as UTF-8. Both conditions are checked, so the shortcut cannot silently
    differ from JCS."""
    _check_jcs_safe(resource)
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def _check_jcs_safe(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("a float in an AuditEvent: canonical() would not be JCS")
    if isinstance(value, dict):
        for key, item in value.items():
            if not key.isascii():
                raise ValueError(f"a non-ASCII key in an AuditEvent: {key!r}")
            _check_jcs_safe(item)
    elif isinstance(value, list):
        for item in value:
            _check_jcs_safe(item)


def link(previous: bytes, stored_json: bytes) -> bytes:
    """hash_n from hash_{n-1} and the stored JSON of event n."""
    return hashlib.sha256(previous + canonical(orjson.loads(stored_json))).digest()


def append(session: Session, written: Iterable[Stored]) -> None:
    """Chain every AuditEvent version among `written` (in write order) after the current
    head. Runs inside the write transaction, so the head cannot move meanwhile. The stored
    JSON of an AuditEvent is already canonical (trail.versions), so it is hashed as it is:
    under the lock only SHA-256 runs; verify() checks it against the recomputed form."""
    events = [s for s in written if s.type == "AuditEvent" and s.json is not None]
    if not events:
        return
    head = chain_head(session)
    seq, previous = (head[0], bytes.fromhex(head[1])) if head else (0, GENESIS)
    links: list[Link] = []
    for stored in events:
        assert stored.json is not None
        previous = hashlib.sha256(previous + stored.json).digest()
        seq += 1
        links.append((seq, stored.type, stored.id, stored.version, previous.hex()))
    append_links(session, links)


def verify(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """(events checked, the first broken link described, or None when the chain holds)."""
    previous, count = GENESIS, 0
    for (seq, rtype, rid, version, digest), history_json, json, deleted in chained(conn):
        name = f"seq {seq} ({rtype}/{rid}/_history/{version})"
        if seq != count + 1:
            return count, f"{name}: expected seq {count + 1}; links are missing"
        if history_json is None:
            return count, f"{name}: the AuditEvent version is missing"
        if json != history_json or deleted:
            return count, f"{name}: the current AuditEvent differs from the chained version"
        try:
            previous = link(previous, history_json)
        except ValueError as exc:
            return count, f"{name}: the stored AuditEvent is not valid JSON ({exc})"
        if previous.hex() != digest:
            return count, f"{name}: hash mismatch; the event or an earlier one was changed"
        count += 1
    extra = unchained(conn)
    if extra:
        rtype, rid, version = extra[0]
        return count, f"{rtype}/{rid}/_history/{version} is stored but not in the chain"
    return count, None
