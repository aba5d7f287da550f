"""The audit trail's tables in SQLite (contract.AuditTables): the chained records, which of
them are not expanded into AuditEvents yet, and reading both back for verification. Also the
chain of schema 4 (audit_chain: AuditEvents chained one by one), which records continue.
The single writer keeps the head still while a write transaction appends."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ..contract import AuditLink, AuditRow, Session
    from .store import Session as SqlSession
    from .store import SqliteStore


def _conn(session: Session) -> sqlite3.Connection:
    """The connection of this backend's write session."""
    return cast("SqlSession", session).conn


class SqliteAudit:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def _read(self) -> sqlite3.Connection:
        return self.store.reader().conn

    def head(self, session: Session) -> tuple[int, str] | None:
        conn = _conn(session)
        row = conn.execute(
            "SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return row[0], row[1]
        old = conn.execute("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, old[0]) if old else None

    def append(
        self,
        session: Session,
        head: tuple[int, str] | None,
        rows: list[AuditRow],
        pending_since: float | None,
    ) -> None:
        """`head` cannot have moved: this transaction holds the one write lock."""
        conn = _conn(session)
        conn.executemany("INSERT INTO audit_record (seq, record, hash) VALUES (?, ?, ?)", rows)
        if pending_since is not None:
            conn.executemany(
                "INSERT INTO audit_pending (seq, since) VALUES (?, ?)",
                [(seq, pending_since) for seq, _, _ in rows],
            )

    def take_pending(self, session: Session, wanted: dict[int, str]) -> list[int]:
        """Not expanded meanwhile by another process, not rolled back and their seq reused."""
        if not wanted:
            return []
        conn = _conn(session)
        rows = conn.execute(
            "SELECT p.seq, r.hash FROM audit_pending p JOIN audit_record r ON r.seq = p.seq "
            "WHERE p.seq BETWEEN ? AND ?",
            (min(wanted), max(wanted)),
        ).fetchall()
        taken = [seq for seq, digest in rows if wanted.get(seq) == digest]
        conn.executemany("DELETE FROM audit_pending WHERE seq = ?", [(s,) for s in taken])
        return taken

    def stale_pending(self, before: float, limit: int) -> list[AuditRow]:
        rows: list[AuditRow] = self._read().execute(
            "SELECT r.seq, r.record, r.hash FROM audit_pending p JOIN audit_record r "
            "ON r.seq = p.seq WHERE p.since < ? ORDER BY p.seq LIMIT ?",
            (before, limit),
        ).fetchall()
        return rows

    def records(self) -> Iterator[tuple[AuditRow, bool]]:
        cursor = self._read().execute(
            "SELECT r.seq, r.record, r.hash, p.seq IS NOT NULL FROM audit_record r "
            "LEFT JOIN audit_pending p ON p.seq = r.seq ORDER BY r.seq"
        )
        for seq, record, digest, pending in cursor:
            yield (seq, record, digest), bool(pending)

    def stored_event(
        self, rid: str
    ) -> tuple[bytes | None, bytes | None, int | None, int | None] | None:
        row = self._read().execute(
            "SELECT h.json, r.json, r.version, r.deleted FROM versions h LEFT JOIN resource r "
            "ON r.type = h.type AND r.id = h.id "
            "WHERE h.type = 'AuditEvent' AND h.id = ? AND h.version = 1",
            (rid,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def event_count(self) -> int:
        count: int = self._read().execute(
            "SELECT count(*) FROM versions WHERE type = 'AuditEvent'"
        ).fetchone()[0]
        return count

    def unchained_events(self) -> Iterator[tuple[str, int]]:
        yield from self._read().execute(
            "SELECT h.id, h.version FROM versions h WHERE h.type = 'AuditEvent' "
            "AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.type = h.type AND c.id = h.id "
            "AND c.version = h.version) ORDER BY h.last_updated"
        )

    def chained(self) -> Iterator[tuple[AuditLink, bytes | None, bytes | None, int | None]]:
        cursor = self._read().execute(
            "SELECT c.seq, c.type, c.id, c.version, c.hash, h.json, r.json, r.deleted "
            "FROM audit_chain c "
            "LEFT JOIN versions h ON h.type = c.type AND h.id = c.id AND h.version = c.version "
            "LEFT JOIN resource r ON r.type = c.type AND r.id = c.id ORDER BY c.seq"
        )
        for seq, rtype, rid, version, digest, history_json, json, deleted in cursor:
            yield (seq, rtype, rid, version, digest), history_json, json, deleted
