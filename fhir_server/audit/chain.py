"""Tamper evidence for the audit trail (security.md §4.2): a hash chain over the audit records
in write order, hash_n = SHA-256(hash_{n-1} || record_n), appended under the write lock in the
transaction that stores the record, and its verification, which also expands every record
again and compares the AuditEvents stored for it.

A recomputable chain detects an edited, deleted, inserted or reordered record or AuditEvent;
it cannot detect cutting off the newest records, nor a rewrite of the whole chain by someone
with write access to the file: that needs signed checkpoints kept elsewhere (§4.2, not built
yet). Databases of schema 4 chained AuditEvents one by one (audit_chain); the records continue
that chain, and verify checks both."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..storage.contract import AuditTables, Session
from .event import expand
from .record import Record, encode

#: the hash before the first link
GENESIS = bytes(32)


@dataclass(frozen=True)
class Appended:
    """A record as chained: its place, its hash (hex) and the record."""

    seq: int
    hash: str
    record: Record


def append(
    tables: AuditTables, session: Session, made: Iterable[Record], pending: bool
) -> list[Appended]:
    """Chain records after the current head, inside the write transaction (so the head
    cannot move meanwhile; only SHA-256 runs under the lock). `pending`: their AuditEvents
    are still to be expanded (the writer does it after the commit)."""
    head = tables.head(session)
    seq, previous = (head[0], bytes.fromhex(head[1])) if head else (0, GENESIS)
    rows: list[tuple[int, bytes, str]] = []
    out: list[Appended] = []
    for record in made:
        data = encode(record)
        previous = hashlib.sha256(previous + data).digest()
        seq += 1
        rows.append((seq, data, previous.hex()))
        out.append(Appended(seq, previous.hex(), record))
    if rows:
        tables.append(session, head, rows, time.time() if pending else None)
    return out


@dataclass(frozen=True)
class Verified:
    """What `audit verify` found: records and AuditEvents checked, records not expanded yet,
    and the first break described (None when the trail holds)."""

    records: int
    events: int
    pending: int
    broken: str | None


def verify(tables: AuditTables) -> Verified:
    """Check the schema-4 links, then every record's link and the AuditEvents expanded from it;
    last, that no AuditEvent is stored that neither names."""
    old, previous, broken = _verify_links(tables)
    if broken is not None:
        return Verified(0, old, 0, broken)
    count = events = pending = 0
    for (seq, data, digest), waiting in tables.records():
        name = f"record seq {seq}"
        if seq != count + 1:
            return Verified(count, old + events, pending, f"{name}: expected seq {count + 1}; "
                            "records are missing")  # fmt: skip
        previous = hashlib.sha256(previous + data).digest()
        if previous.hex() != digest:
            return Verified(count, old + events, pending, f"{name}: hash mismatch; the "
                            "record or an earlier one was changed")  # fmt: skip
        count += 1
        if waiting:
            pending += 1
            continue
        for event in expand(orjson.loads(data)):
            broken = _check_event(tables, event)
            if broken is not None:
                return Verified(count, old + events, pending, f"{name}: {broken}")
            events += 1
    stored = tables.event_count()
    if stored != old + events:
        extra = _unnamed(tables)
        return Verified(count, old + events, pending, f"{extra} is stored but not in the chain")
    return Verified(count, old + events, pending, None)


def _check_event(tables: AuditTables, event: dict[str, Any]) -> str | None:
    """Why the stored AuditEvent differs from its expansion `event`, or None."""
    name = f"AuditEvent/{event['id']}"
    found = tables.stored_event(event["id"])
    if found is None:
        return f"{name} is missing"
    history_json, json, version, deleted = found
    if json != history_json or version != 1 or deleted:
        return f"{name} was changed or deleted after it was stored"
    stored = orjson.loads(history_json) if history_json is not None else None
    if not isinstance(stored, dict) or not isinstance(stored.get("meta"), dict):
        return f"{name} is not an AuditEvent"
    meta = stored["meta"]  # when it was expanded: not part of the record
    expected = {**event, "meta": {"versionId": "1", "lastUpdated": meta.get("lastUpdated")}}
    if stored != expected:
        return f"{name} differs from its record"
    return None


def _unnamed(tables: AuditTables) -> str:
    """The first stored AuditEvent version that neither the schema-4 chain nor a record
    names (found the slow way: only when the counts disagree)."""
    named = {e["id"] for (_, data, _), _ in tables.records() for e in expand(orjson.loads(data))}
    for rid, version in tables.unchained_events():
        if version != 1 or rid not in named:
            return f"AuditEvent/{rid}/_history/{version}"
    return "an AuditEvent"


def _verify_links(tables: AuditTables) -> tuple[int, bytes, str | None]:
    """The schema-4 chain: (events checked, the last hash, the first broken link or None);
    hash_n = SHA-256(hash_{n-1} || RFC 8785 JSON of AuditEvent n)."""
    previous, count = GENESIS, 0
    for (seq, rtype, rid, version, digest), history_json, json, deleted in tables.chained():
        name = f"seq {seq} ({rtype}/{rid}/_history/{version})"
        if seq != count + 1:
            return count, previous, f"{name}: expected seq {count + 1}; links are missing"
        if history_json is None:
            return count, previous, f"{name}: the AuditEvent version is missing"
        if json != history_json or deleted:
            changed = f"{name}: the current AuditEvent differs from the chained version"
            return count, previous, changed
        try:
            canonical = encode(orjson.loads(history_json))
        except orjson.JSONDecodeError as exc:
            return count, previous, f"{name}: the stored AuditEvent is not valid JSON ({exc})"
        previous = hashlib.sha256(previous + canonical).digest()
        if previous.hex() != digest:
            mismatch = f"{name}: hash mismatch; the event or an earlier one was changed"
            return count, previous, mismatch
        count += 1
    return count, previous, None
