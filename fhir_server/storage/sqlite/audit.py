"""The SQL of the audit trail (audit/chain.py, audit/trail.py): the chained records, which of
them are not expanded into AuditEvents yet, and reading both back for verification. Also the
chain of schema 4 (audit_chain: AuditEvents chained one by one), which records continue."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from .store import Session

#: one record as stored: (seq, record bytes, hash hex)
Row = tuple[int, bytes, str]
#: one link of the schema-4 chain: (seq, type, id, version, hash)
Link = tuple[int, str, str, int, str]


def record_head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the last record; with no record yet, seq 0 and the hash of the last
    schema-4 link; None for an empty trail."""
    conn = session.conn
    row = conn.execute("SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        return row[0], row[1]
    old = conn.execute("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, old[0]) if old else None


def append_records(session: Session, rows: list[Row], pending_since: float | None) -> None:
    """Insert chained records; with `pending_since`, as not expanded yet."""
    conn = session.conn
    conn.executemany("INSERT INTO audit_record (seq, record, hash) VALUES (?, ?, ?)", rows)
    if pending_since is not None:
        conn.executemany(
            "INSERT INTO audit_pending (seq, since) VALUES (?, ?)",
            [(seq, pending_since) for seq, _, _ in rows],
        )


def take_pending(session: Session, wanted: dict[int, str]) -> list[int]:
    """Of the records `wanted` (seq -> hash), those still pending with that very hash (not
    expanded meanwhile by another process, not rolled back and their seq reused), marked
    expanded in this transaction."""
    if not wanted:
        return []
    rows = session.conn.execute(
        "SELECT p.seq, r.hash FROM audit_pending p JOIN audit_record r ON r.seq = p.seq "
        "WHERE p.seq BETWEEN ? AND ?",
        (min(wanted), max(wanted)),
    ).fetchall()
    taken = [seq for seq, digest in rows if wanted.get(seq) == digest]
    session.conn.executemany("DELETE FROM audit_pending WHERE seq = ?", [(s,) for s in taken])
    return taken


def stale_pending(conn: sqlite3.Connection, before: float, limit: int) -> list[Row]:
    """Records pending since before `before` (their writer died or fell behind), oldest first."""
    return conn.execute(
        "SELECT r.seq, r.record, r.hash FROM audit_pending p JOIN audit_record r "
        "ON r.seq = p.seq WHERE p.since < ? ORDER BY p.seq LIMIT ?",
        (before, limit),
    ).fetchall()


def records(conn: sqlite3.Connection) -> Iterator[tuple[Row, bool]]:
    """Every record in seq order, and whether it is still pending."""
    cursor = conn.execute(
        "SELECT r.seq, r.record, r.hash, p.seq IS NOT NULL FROM audit_record r "
        "LEFT JOIN audit_pending p ON p.seq = r.seq ORDER BY r.seq"
    )
    for seq, record, digest, pending in cursor:
        yield (seq, record, digest), bool(pending)


def stored_event(
    conn: sqlite3.Connection, rid: str
) -> tuple[bytes | None, bytes | None, int | None, int | None] | None:
    """An AuditEvent's first version as stored, and its current row (JSON, version,
    deleted); None when no such version is stored."""
    row = conn.execute(
        "SELECT h.json, r.json, r.version, r.deleted FROM versions h LEFT JOIN resource r "
        "ON r.type = h.type AND r.id = h.id "
        "WHERE h.type = 'AuditEvent' AND h.id = ? AND h.version = 1",
        (rid,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def audit_event_count(conn: sqlite3.Connection) -> int:
    """AuditEvent versions stored, of every kind."""
    count: int = conn.execute(
        "SELECT count(*) FROM versions WHERE type = 'AuditEvent'"
    ).fetchone()[0]
    return count


def unchained_events(conn: sqlite3.Connection) -> Iterator[tuple[str, int]]:
    """AuditEvent versions (id, version) that the schema-4 chain does not name."""
    yield from conn.execute(
        "SELECT h.id, h.version FROM versions h WHERE h.type = 'AuditEvent' "
        "AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.type = h.type AND c.id = h.id "
        "AND c.version = h.version) ORDER BY h.last_updated"
    )


def chained(
    conn: sqlite3.Connection,
) -> Iterator[tuple[Link, bytes | None, bytes | None, int | None]]:
    """Every schema-4 link in order with the JSON of the version it names and the current
    resource row's JSON and deleted flag (None when a row is missing)."""
    cursor = conn.execute(
        "SELECT c.seq, c.type, c.id, c.version, c.hash, h.json, r.json, r.deleted "
        "FROM audit_chain c "
        "LEFT JOIN versions h ON h.type = c.type AND h.id = c.id AND h.version = c.version "
        "LEFT JOIN resource r ON r.type = c.type AND r.id = c.id ORDER BY c.seq"
    )
    for seq, rtype, rid, version, digest, history_json, json, deleted in cursor:
        yield (seq, rtype, rid, version, digest), history_json, json, deleted
