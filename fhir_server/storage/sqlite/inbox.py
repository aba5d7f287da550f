"""The integrations' inbox (migration 8): messages from other systems stored as received, raw
bytes and all, before they are acknowledged; whoever maps them settles each one later. It knows
nothing of HL7: `channel` names the integration and `meta` is JSON the integration defines."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ...model.resource import now
from ..jobs import INBOX_STATUSES, Arrival, Message

if TYPE_CHECKING:  # typing only: the store hands out its inbox
    from ..contract import Session
    from .store import SqliteStore

STATUSES = INBOX_STATUSES
#: messages read at a time by `records`
PAGE = 500

_COLUMNS = (
    "seq, channel, sender, message_id, received_at, remote, kind, status, error, attempts, "
    "updated_at, duplicates, meta, raw"
)


def _message(row: Sequence[Any]) -> Message:
    return Message(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
        row[11], orjson.loads(row[12]), row[13],
    )


class Inbox:
    """contract.Inbox in the inbox table."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def receive(self, arrivals: Sequence[Arrival]) -> list[tuple[int, bool]]:
        """Commit the arrivals in one transaction; for each, its seq and whether it was a
        duplicate (its key already held: nothing stored but the count of duplicates)."""
        out = []
        with self.store.write() as s:
            for a in arrivals:
                dedup = int(a.status == "received" and a.message_id is not None)
                row = s.conn.execute(
                    "INSERT OR IGNORE INTO inbox (channel, sender, message_id, received_at, "
                    "remote, kind, status, error, dedup, meta, raw) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                    (a.channel, a.sender, a.message_id, a.received_at, a.remote, a.kind,
                     a.status, a.error, dedup, orjson.dumps(a.meta), a.raw),
                ).fetchone()  # fmt: skip
                if row is not None:
                    out.append((row[0], False))
                    continue
                row = s.conn.execute(
                    "UPDATE inbox SET duplicates = duplicates + 1 WHERE channel = ? AND "
                    "sender = ? AND message_id = ? AND dedup = 1 RETURNING seq",
                    (a.channel, a.sender, a.message_id),
                ).fetchone()
                out.append((row[0], True))
        return out

    def get(self, seq: int) -> Message | None:
        rows = self.store.reader().query(f"SELECT {_COLUMNS} FROM inbox WHERE seq = ?", (seq,))
        return _message(rows[0]) if rows else None

    def waiting(self, channel: str, status: str = "received", after: int = 0,
                limit: int = 100) -> list[Message]:  # fmt: skip
        """Messages of one status in arrival order, after seq `after` (the mapper's queue)."""
        rows = self.store.reader().query(
            f"SELECT {_COLUMNS} FROM inbox WHERE channel = ? AND status = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (channel, status, after, limit),
        )
        return [_message(r) for r in rows]

    def settle(
        self,
        seq: int,
        status: str,
        error: str | None = None,
        meta: dict[str, Any] | None = None,
        release: bool = False,
        session: Session | None = None,
    ) -> None:
        """Record the outcome of mapping a message: its status, the error text, what to add
        to its meta; `release` frees its idempotency key (it was answered with an error, so a
        resend is a new message). Inside `session` (the mapping's transaction, so the outcome
        commits with the resources) or in a transaction of its own."""
        assert status in STATUSES, status
        if session is None:
            with self.store.write() as own:
                _settle(own.conn, seq, status, error, meta, release)
            return
        conn = getattr(session, "conn", None)  # the SQLite store's sessions (contract.py)
        if conn is None:
            raise TypeError("the inbox settles inside a SQLite write session")
        _settle(conn, seq, status, error, meta, release)

    def search(
        self,
        channel: str,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
        sender: str | None = None,
        message_id: str | None = None,
        kind: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """Newest first, filtered; `before` continues a page after its last seq."""
        where, args = ["channel = ?"], [channel]  # type: tuple[list[str], list[Any]]
        for column, op, value in (
            ("status", "=", status), ("received_at", ">=", since), ("received_at", "<", until),
            ("sender", "=", sender), ("message_id", "=", message_id), ("kind", "=", kind),
            ("seq", "<", before),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        rows = self.store.reader().query(
            f"SELECT {_COLUMNS} FROM inbox WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit),
        )
        return [_message(r) for r in rows]

    def counts(self, channel: str) -> dict[str, int]:
        rows = self.store.reader().query(
            "SELECT status, count(*) FROM inbox WHERE channel = ? GROUP BY status", (channel,)
        )
        return {status: 0 for status in STATUSES} | {r[0]: r[1] for r in rows}

    def records(self) -> Iterator[tuple[Message, bool]]:
        """Every message in seq order with whether it holds its key (`dedup`), a page at a
        time (raw bytes add up)."""
        after = 0
        while True:
            rows = self.store.reader().query(
                f"SELECT {_COLUMNS}, dedup FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, PAGE),
            )
            for row in rows:
                yield _message(row), bool(row[14])
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def put_records(self, records: Sequence[tuple[Message, bool]]) -> None:
        """One transaction; a new arrival takes max(seq) + 1 (INTEGER PRIMARY KEY)."""
        try:
            with self.store.write() as s:
                s.conn.executemany(
                    f"INSERT INTO inbox ({_COLUMNS}, dedup) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(m.seq, m.channel, m.sender, m.message_id, m.received_at, m.remote, m.kind,
                      m.status, m.error, m.attempts, m.updated_at, m.duplicates,
                      orjson.dumps(m.meta), m.raw, int(held)) for m, held in records],
                )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"the inbox already holds one of these messages: {exc}") from exc


def _settle(
    conn: sqlite3.Connection,
    seq: int,
    status: str,
    error: str | None,
    meta: dict[str, Any] | None,
    release: bool,
) -> None:
    row = conn.execute("SELECT meta FROM inbox WHERE seq = ?", (seq,)).fetchone()
    merged = {**orjson.loads(row[0]), **(meta or {})} if row else {}
    conn.execute(
        "UPDATE inbox SET status = ?, error = ?, meta = ?, attempts = attempts + 1, "
        "updated_at = ?, dedup = CASE WHEN ? THEN 0 ELSE dedup END WHERE seq = ?",
        (status, error, orjson.dumps(merged), now(), int(release), seq),
    )
