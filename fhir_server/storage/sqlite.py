"""Embedded SQLite storage: WAL, one serialized writer, a read connection per thread.

Every write interaction runs in one `BEGIN IMMEDIATE` transaction that holds the write lock, so
check-then-write sequences (conditional create, If-Match, transaction bundles) cannot race.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .schema import INDEX_TABLES, migrate

IndexRows = dict[str, list[tuple[Any, ...]]]

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA cache_size = -65536",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 268435456",
    "PRAGMA foreign_keys = OFF",
)

_INSERT_INDEX = {
    table: f"INSERT INTO idx_{table} (rid, type, param, {', '.join(cols)}) "
    f"VALUES (?, ?, ?{', ?' * len(cols)})"
    for table, cols in INDEX_TABLES.items()
}
#: composite component rows carry their group number last (search/composite.py)
_INSERT_GROUPED = {
    table: f"INSERT INTO idx_{table} (rid, type, param, {', '.join(cols)}, grp) "
    f"VALUES (?, ?, ?{', ?' * len(cols)}, ?)"
    for table, cols in INDEX_TABLES.items()
}


class Version(NamedTuple):
    """A version ready to write: what is stored, its index rows (per table), its text for
    _text/_content, and its composite component rows (ending in their group number)."""

    stored: Stored
    index_rows: IndexRows
    fulltext: tuple[str, str] | None
    composite: IndexRows


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of a resource as stored: its canonical JSON bytes and version facts."""

    type: str
    id: str
    version: int
    last_updated: str
    deleted: bool
    json: bytes | None
    method: str = ""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


class Session:
    """Queries over one connection. Write sessions run inside the store's write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: every version this session wrote, in order (for after-commit hooks)
        self.written: list[Stored] = []

    def current(self, rtype: str, rid: str) -> tuple[int, Stored] | None:
        """The current version (deleted or not) with its row id, or None if never stored."""
        row = self.conn.execute(
            "SELECT rid, version, last_updated, deleted, json FROM resource "
            "WHERE type = ? AND id = ?",
            (rtype, rid),
        ).fetchone()
        if row is None:
            return None
        return row[0], Stored(rtype, rid, row[1], row[2], bool(row[3]), row[4])

    def any_current(self, rtype: str) -> bool:
        """Whether some resource of the type exists and is not deleted."""
        return bool(
            self.conn.execute(
                "SELECT 1 FROM resource WHERE type = ? AND deleted = 0 LIMIT 1", (rtype,)
            ).fetchone()
        )

    def version(self, rtype: str, rid: str, version: int) -> Stored | None:
        row = self.conn.execute(
            "SELECT last_updated, deleted, json, method FROM history "
            "WHERE type = ? AND id = ? AND version = ?",
            (rtype, rid, version),
        ).fetchone()
        if row is None:
            return None
        return Stored(rtype, rid, version, row[0], bool(row[1]), row[2], row[3])

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        since: str | None,
        at: str | None,
        offset: int,
        count: int,
    ) -> tuple[list[Stored], int]:
        """Versions newest first, with the total count, for instance/type/system history."""
        where, args = [], []
        if rtype is not None:
            where.append("type = ?")
            args.append(rtype)
        if rid is not None:
            where.append("id = ?")
            args.append(rid)
        if since is not None:
            where.append("last_updated >= ?")
            args.append(since)
        if at is not None:
            # the versions current at that instant: written at or before it, not yet superseded
            where.append(
                "last_updated <= ? AND NOT EXISTS (SELECT 1 FROM history h2 WHERE "
                "h2.type = history.type AND h2.id = history.id AND h2.version > history.version "
                "AND h2.last_updated <= ?)"
            )
            args += [at, at]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.conn.execute(f"SELECT count(*) FROM history {clause}", args).fetchone()[0]
        rows = self.conn.execute(
            "SELECT type, id, version, last_updated, deleted, json, method FROM history "
            f"{clause} ORDER BY last_updated DESC, type, id, version DESC LIMIT ? OFFSET ?",
            [*args, count, offset],
        ).fetchall()
        return [Stored(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows], total

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()

    def save(self, row: int | None, version: Version) -> int:
        """Write one version (see save_many); returns its resource row id."""
        return self.save_many([(row, version)])[0]

    def save_many(self, writes: list[tuple[int | None, Version]]) -> list[int]:
        """Write versions: current rows, history rows and fresh index rows, with one
        executemany per table for the whole batch. `row` is the existing resource row id,
        or None for a new resource, whose row id is assigned here (under the write lock)."""
        conn = self.conn
        self.written.extend(v.stored for _, v in writes)
        new = [v for row, v in writes if row is None]
        next_rid = (conn.execute("SELECT max(rid) FROM resource").fetchone()[0] or 0) + 1
        rows: list[int] = []
        for row, _ in writes:
            if row is None:
                row, next_rid = next_rid, next_rid + 1
            rows.append(row)
        if new:
            conn.executemany(
                "INSERT INTO resource (rid, type, id, version, last_updated, deleted, json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (row, s.type, s.id, s.version, s.last_updated, int(s.deleted), s.json)
                    for row, (old, (s, *_)) in zip(rows, writes, strict=True)
                    if old is None
                ],
            )
        for row, (old, (s, *_)) in zip(rows, writes, strict=True):
            if old is not None:
                conn.execute(
                    "UPDATE resource SET version = ?, last_updated = ?, deleted = ?, json = ? "
                    "WHERE rid = ?",
                    (s.version, s.last_updated, int(s.deleted), s.json, row),
                )
                for table in INDEX_TABLES:
                    conn.execute(f"DELETE FROM idx_{table} WHERE rid = ?", (row,))
                conn.execute("DELETE FROM fulltext WHERE rowid = ?", (row,))
        conn.executemany(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (s.type, s.id, s.version, s.last_updated, int(s.deleted), s.method, s.json)
                for _, (s, *_) in writes
            ],
        )
        conn.executemany(
            "INSERT INTO fulltext (rowid, narrative, content) VALUES (?, ?, ?)",
            [
                (row, *text)
                for row, (_, (_, _, text, _)) in zip(rows, writes, strict=True)
                if text is not None and any(text)
            ],
        )
        batches: dict[str, list[tuple[Any, ...]]] = {}
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for row, (_, (s, index, _, composite)) in zip(rows, writes, strict=True):
            prefix = (row, s.type)
            for table, values in index.items():
                batches.setdefault(table, []).extend(prefix + v for v in values)
            for table, values in composite.items():
                grouped.setdefault(table, []).extend(prefix + v for v in values)
        for table, values in batches.items():
            if values:
                conn.executemany(_INSERT_INDEX[table], values)
        for table, values in grouped.items():
            if values:
                conn.executemany(_INSERT_GROUPED[table], values)
        return rows


class SqliteStore:
    """The database file: migrations at open, a write lock, thread-local read connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = _connect(path)
        migrate(self._writer)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def reader(self) -> Session:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._readers.append(conn)
        return Session(conn)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction; any exception rolls everything back."""
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Session(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        for conn in [self._writer, *self._readers]:
            conn.close()
