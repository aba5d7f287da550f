"""Embedded SQLite storage: WAL, one serialized writer, a read connection per thread.

Every write interaction runs in one `BEGIN IMMEDIATE` transaction that holds the write lock, so
check-then-write sequences (conditional create, If-Match, transaction bundles) cannot race.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ...errors import FhirError, error
from .schema import CONFORMANCE_TYPES, INDEX_TABLES, MIGRATIONS, migrate

if TYPE_CHECKING:
    from .audit import SqliteAudit
    from .auth import AuthStore
    from .inbox import Inbox

IndexRows = dict[str, list[tuple[Any, ...]]]

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
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
    #: this version created the resource (its first, or the first after a delete)
    created: bool = False


#: history order, newest first, made total: (last_updated, type, id, version) is unique
HISTORY_ORDER = "last_updated DESC, type, id, version DESC"


#: seconds the checkpointer lets commits gather before it copies the log back (one checkpoint
#: for a burst of commits: each one fsyncs the log and the database)
CHECKPOINT_DELAY = 0.05
#: pages of write-ahead log past which a commit copies the log back itself (SQLite's
#: automatic checkpoint), as every commit past 1,000 pages did before the Checkpointer: the
#: log only starts anew once wholly copied back, which a checkpoint racing a busy writer never
#: is, so a writer that never pauses would make it grow (4,000 pages: 16 MB)
WAL_BOUND = 4000
#: the checkpointing thread's nice value
NICE = 10
#: seconds between two tries of a writer waiting for the lock another process holds
LOCK_POLL = 0.001


class Checkpointer:
    """Copies the write-ahead log back into the database in a thread of its own, so that
    commits seldom pay for it: SQLite's automatic checkpoint runs inside the commit that
    takes the log past 1,000 pages, and the HL7 v2 mapper (~1,400 pages a commit) paid one at
    every commit. Each commit pokes this thread, which runs a PASSIVE checkpoint (it never
    waits for readers or writers) on a connection of its own; the commits' own checkpoint
    waits until WAL_BOUND, where it bounds the log (and copies only what this thread has not
    copied yet)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def start(self) -> None:
        """The thread (again in a forked child, where it did not survive)."""
        with self._start:
            if not (self._thread and self._thread.is_alive() or self._stopping.is_set()):
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def poke(self) -> None:
        """A commit happened: checkpoint soon."""
        if self._thread is None or not self._thread.is_alive():
            self.start()
        self._due.set()

    def stop(self) -> None:
        """Stop the thread, at once (a checkpoint under way ends first)."""
        self._stopping.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # a lower priority (Linux: per thread): the copying waits while the writers and the
        # listeners want the cores, and takes a core nobody uses
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._due.wait()
                if self._stopping.wait(CHECKPOINT_DELAY):
                    return
                self._due.clear()
                if self._stopping.is_set():  # stop() sets it before it pokes
                    return
                # an error: a checkpoint of another connection runs, and copies
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()


def _connect(path: Path, lock_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=lock_timeout
    )
    conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


def is_lock_error(exc: BaseException) -> bool:
    """SQLite gave up waiting for a lock another connection (or process) holds."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def lock_error(lock_timeout: float) -> FhirError:
    """503 + Retry-After: the write lock stayed taken for the whole wait (http.html: a
    transient condition the client may retry; issue type `lock-error`)."""
    exc = error(
        503,
        "lock-error",
        f"The database stayed locked by other writers for {lock_timeout:g} s; retry later",
    )
    exc.headers["Retry-After"] = str(max(1, round(lock_timeout)))
    return exc


class Session:
    """Queries over one connection. Write sessions run inside the store's write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: every version this session wrote, in order (for after-commit hooks)
        self.written: list[Stored] = []
        #: full-text rows not yet inserted: FTS5 writes a segment of its index at every
        #: savepoint release, so they are inserted together, once, before a read or the commit
        self._text: list[tuple[int, str, str]] = []

    def flush_text(self) -> None:
        """Insert the pending full-text rows (before anything reads or replaces them)."""
        if self._text:
            self.conn.executemany(
                "INSERT INTO fulltext (rowid, narrative, content) VALUES (?, ?, ?)", self._text
            )
            self._text = []

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
        """One version: the current row, or one it superseded (migration 9)."""
        row = None
        for table in ("resource", "history"):
            row = self.conn.execute(
                f"SELECT last_updated, deleted, json, method FROM {table} "
                "WHERE type = ? AND id = ? AND version = ?",
                (rtype, rid, version),
            ).fetchone()
            if row is not None:
                break
        if row is None:
            return None
        return Stored(rtype, rid, version, row[0], bool(row[1]), row[2], row[3])

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        since: str | None,
        at: str | None,
        page: tuple[int, tuple[str, str, str, int] | None],
        count: int,
    ) -> tuple[list[Stored], int]:
        """Versions newest first (HISTORY_ORDER), with the total count, for instance/type/system
        history. `page` is an offset, or the key of the row to continue after (keyset paging,
        whose cost does not grow with depth)."""
        where: list[str] = []
        args: list[Any] = []
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
            where.append("last_updated <= ? AND (superseded_at IS NULL OR superseded_at > ?)")
            args += [at, at]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.conn.execute(f"SELECT count(*) FROM versions {clause}", args).fetchone()[0]
        offset, key = page
        if key is not None:
            stamp, ktype, kid, kversion = key
            where.append(
                "last_updated <= ? AND (last_updated < ? OR type > ? OR (type = ? AND "
                "(id > ? OR (id = ? AND version < ?))))"
            )
            args += [stamp, stamp, ktype, ktype, kid, kid, kversion]
            clause = f"WHERE {' AND '.join(where)}"
        # each table in index order, merged (a LIMIT over the view would sort every version)
        cols = "SELECT type, id, version, last_updated, deleted, json, method"
        current = clause.replace("superseded_at", "NULL")  # the current version: not yet
        rows = self.conn.execute(
            f"{cols} FROM history {clause} UNION ALL {cols} FROM resource {current} "
            f"ORDER BY {HISTORY_ORDER} LIMIT ? OFFSET ?",
            [*args, *args, count, offset],
        ).fetchall()
        return [
            Stored(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6],
                   r[2] == 1 or self._after_delete(r[0], r[1], r[2]))  # fmt: skip
            for r in rows
        ], total

    def _after_delete(self, rtype: str, rid: str, version: int) -> bool:
        """Whether the version before this one (never the current one) was a deletion."""
        row = self.conn.execute(
            "SELECT deleted FROM history WHERE type = ? AND id = ? AND version = ?",
            (rtype, rid, version - 1),
        ).fetchone()
        return row is not None and bool(row[0])

    def conformance_generation(self) -> int:
        """The counter every stored version of a conformance resource moves (migration 7)."""
        row = self.conn.execute("SELECT n FROM conformance_generation").fetchone()
        return int(row[0])

    def conformance_resources(self) -> list[bytes]:
        """The current, undeleted conformance resources (CONFORMANCE_TYPES), as stored."""
        marks = ", ".join("?" * len(CONFORMANCE_TYPES))
        rows = self.conn.execute(
            f"SELECT json FROM resource WHERE type IN ({marks}) AND deleted = 0 ORDER BY rid",
            CONFORMANCE_TYPES,
        ).fetchall()
        return [row[0] for row in rows]

    def replace_index(self, rows: list[tuple[int, Version]]) -> None:
        """New index rows for current versions (search parameters changed: $reindex); the
        versions themselves stay as they are. A row whose resource has another version by now
        is left alone: that version's write indexed it."""
        conn = self.conn
        marks = ", ".join("?" * len(rows))
        now = dict(
            conn.execute(
                f"SELECT rid, version FROM resource WHERE rid IN ({marks})", [r for r, _ in rows]
            ).fetchall()
        )
        rows = [(r, v) for r, v in rows if now.get(r) == v.stored.version]
        for table in INDEX_TABLES:
            conn.executemany(f"DELETE FROM idx_{table} WHERE rid = ?", [(r,) for r, _ in rows])
        for table in INDEX_TABLES:
            plain = [(r, v.stored.type, *x) for r, v in rows for x in v.index_rows.get(table, ())]
            grouped = [(r, v.stored.type, *x) for r, v in rows for x in v.composite.get(table, ())]
            if plain:
                conn.executemany(_INSERT_INDEX[table], plain)
            if grouped:
                conn.executemany(_INSERT_GROUPED[table], grouped)

    def current_rows(self, rtype: str, after: int, limit: int) -> list[tuple[int, Stored]]:
        """Current undeleted versions of a type by row id, `limit` after row `after`."""
        found = self.conn.execute(
            "SELECT rid, id, version, last_updated, json FROM resource "
            "WHERE type = ? AND deleted = 0 AND rid > ? ORDER BY rid LIMIT ?",
            (rtype, after, limit),
        ).fetchall()
        return [(r[0], Stored(rtype, r[1], r[2], r[3], False, r[4])) for r in found]

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._text and "fulltext" in sql:  # _text/_content in this transaction
            self.flush_text()
        return self.conn.execute(sql, args).fetchall()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of a write transaction that an exception rolls back alone (SQLite SAVEPOINT),
        the rest of the transaction going on: many units of work share one commit, each
        still all or nothing (the HL7 v2 mapper commits several messages at once)."""
        mark, pending, text_mark = len(self.written), self._text, len(self._text)
        self.conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO part")
            self.conn.execute("RELEASE part")
            del self.written[mark:]
            # pending then, less what came since (a flush meanwhile is rolled back too)
            del pending[text_mark:]
            self._text = pending
            raise
        self.conn.execute("RELEASE part")

    def save(self, row: int | None, version: Version) -> int:
        """Write one version (see save_many); returns its resource row id."""
        return self.save_many([(row, version)])[0]

    def save_many(self, writes: list[tuple[int | None, Version]]) -> list[int]:
        """Write versions: current rows (the version each replaces moves to history, so that
        every version is stored once) and fresh index rows, with one executemany per table
        for the whole batch. `row` is the existing resource row id, or None for a new
        resource, whose row id is assigned here (under the write lock)."""
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
                "INSERT INTO resource (rid, type, id, version, last_updated, deleted, json, "
                "method) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (row, s.type, s.id, s.version, s.last_updated, int(s.deleted), s.json,
                     s.method)  # fmt: skip
                    for row, (old, (s, *_)) in zip(rows, writes, strict=True)
                    if old is None
                ],
            )
        if len(new) < len(writes):
            self.flush_text()  # a row replaced below may be pending still
        for row, (old, (s, *_)) in zip(rows, writes, strict=True):
            if old is not None:
                conn.execute(
                    "INSERT INTO history (type, id, version, last_updated, deleted, method, "
                    "json, superseded_at) SELECT type, id, version, last_updated, deleted, "
                    "method, json, ? FROM resource WHERE rid = ?",
                    (s.last_updated, row),
                )
                conn.execute(
                    "UPDATE resource SET version = ?, last_updated = ?, deleted = ?, json = ?, "
                    "method = ? WHERE rid = ?",
                    (s.version, s.last_updated, int(s.deleted), s.json, s.method, row),
                )
                for table in INDEX_TABLES:
                    conn.execute(f"DELETE FROM idx_{table} WHERE rid = ?", (row,))
                conn.execute("DELETE FROM fulltext WHERE rowid = ?", (row,))
        self._text.extend(
            (row, *text)
            for row, (_, (_, _, text, _)) in zip(rows, writes, strict=True)
            if text is not None and any(text)
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

    def __init__(self, path: Path, lock_timeout: float = 10.0) -> None:
        self.path = path
        #: seconds a connection waits for a lock before giving up (then: 503, Retry-After)
        self.lock_timeout = lock_timeout
        self._writer = _connect(path, lock_timeout)
        migrate(self._writer)
        self._writer.execute(f"PRAGMA wal_autocheckpoint = {WAL_BOUND}")  # see Checkpointer
        self._writer.execute("PRAGMA busy_timeout = 0")  # write() waits for the lock itself
        self._lock = threading.Lock()
        self._checkpointer = Checkpointer(path)
        self._checkpointer.start()  # one thread a store, for its lifetime
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    @cached_property
    def inbox(self) -> Inbox:
        """The integrations' inbox table (inbox.py), over this store's connections."""
        from .inbox import Inbox

        return Inbox(self)

    @cached_property
    def auth(self) -> AuthStore:
        """The SMART authorization tables (contract.AuthTables)."""
        from .auth import AuthStore

        return AuthStore(self)

    @cached_property
    def audit(self) -> SqliteAudit:
        """The audit trail's chain (contract.AuditTables)."""
        from .audit import SqliteAudit

        return SqliteAudit(self)

    def reader(self) -> Session:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self.lock_timeout)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._readers.append(conn)
        return self.session(conn)

    def session(self, conn: sqlite3.Connection) -> Session:
        """A Session over a connection (the backend's subclass, with its search steps)."""
        return Session(conn)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction; any exception rolls everything back. A lock that another
        process holds past `lock_timeout` becomes a 503 (lock_error), never a 500."""
        with self._lock:
            conn = self._writer
            self._begin(conn)
            try:
                session = self.session(conn)
                yield session
                session.flush_text()
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if is_lock_error(exc):
                    raise lock_error(self.lock_timeout) from None
                raise
        self._checkpointer.poke()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, trying again every LOCK_POLL seconds while another process holds
        the lock. SQLite's own wait sleeps longer each time (1, 2, 5, 10, 15, 20, 25, 25, 25,
        50, 50, then 100 ms), so a writer took a lock released meanwhile up to that late: an
        HL7 v2 listener committing arrivals while the mapper wrote waited 10 to 20 ms a time,
        and so did the mapper. The writer's connection has no busy timeout of its own."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise lock_error(self.lock_timeout) from None
            time.sleep(LOCK_POLL)

    def unready(self) -> str | None:
        """Why the database cannot serve now, or None when it can: a fresh connection (never
        creating the file) must read the schema version this server migrates to and a row.
        Waits at most one second for a lock, so a readiness probe answers promptly."""
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=1)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute("SELECT rid FROM resource LIMIT 1").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"the database does not answer: {exc}"
        if version != len(MIGRATIONS):
            return f"the database has schema version {version}, this server needs {len(MIGRATIONS)}"
        return None

    def close(self) -> None:
        self._checkpointer.stop()
        for conn in [self._writer, *self._readers]:
            conn.close()
