"""The SQL of the audit trail's hash chain (audit/chain.py): its head, appending links, and
reading the chain back with the AuditEvents it covers, for verification."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from .store import Session

#: one link as stored: (seq, type, id, version, hash)
Link = tuple[int, str, str, int, str]


def chain_head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the last link, or None for an empty chain."""
    row = session.conn.execute(
        "SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return (row[0], row[1]) if row else None


def append_links(session: Session, links: list[Link]) -> None:
    session.conn.executemany(
        "INSERT INTO audit_chain (seq, type, id, version, hash) VALUES (?, ?, ?, ?, ?)", links
    )


def chained(
    conn: sqlite3.Connection,
) -> Iterator[tuple[Link, bytes | None, bytes | None, int | None]]:
    """Every link in order with the history JSON of the version it names and the current
    resource row's JSON and deleted flag (None when a row is missing)."""
    cursor = conn.execute(
        "SELECT c.seq, c.type, c.id, c.version, c.hash, h.json, r.json, r.deleted "
        "FROM audit_chain c "
        "LEFT JOIN history h ON h.type = c.type AND h.id = c.id AND h.version = c.version "
        "LEFT JOIN resource r ON r.type = c.type AND r.id = c.id ORDER BY c.seq"
    )
    for seq, rtype, rid, version, digest, history_json, json, deleted in cursor:
        yield (seq, rtype, rid, version, digest), history_json, json, deleted


def unchained(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """AuditEvent versions stored but not in the chain (a forged insertion)."""
    return conn.execute(
        "SELECT h.type, h.id, h.version FROM history h WHERE h.type = 'AuditEvent' "
        "AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.type = h.type AND c.id = h.id "
        "AND c.version = h.version) ORDER BY h.last_updated LIMIT 10"
    ).fetchall()
