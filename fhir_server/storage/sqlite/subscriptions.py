"""R4 Subscriptions in SQLite (migration 10): the current Subscriptions with their owners, a
generation that moves with every version written of one, and the websocket event table the
worker processes share."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from ...search.query import Clause
from .search import Compiler
from .store import Session

if TYPE_CHECKING:
    from ..contract import Session as AnySession

#: seconds an event stays in subscription_event: a worker polls it far more often
EVENT_RETENTION_SECONDS = 60.0


def generation(session: Session) -> float:
    """Moves with every version written of a Subscription (create, update, delete: each adds
    one to some version number or a new row of version 1), so one indexed read tells a worker
    that its list is stale, whichever process wrote."""
    row = session.conn.execute(
        "SELECT total(version) FROM resource WHERE type = 'Subscription'"
    ).fetchone()
    return float(row[0])


def current(session: Session) -> list[tuple[bytes, dict[str, Any] | None]]:
    """Every current, undeleted Subscription (its stored JSON) with its owner's principal
    (None when written by the server itself, e.g. loaded from a file)."""
    rows = session.conn.execute(
        "SELECT r.json, o.principal FROM resource r LEFT JOIN subscription_owner o "
        "ON o.id = r.id WHERE r.type = 'Subscription' AND r.deleted = 0 ORDER BY r.rid"
    ).fetchall()
    return [(row[0], orjson.loads(row[1]) if row[1] else None) for row in rows]


def set_owner(session: Session, subscription_id: str, principal: dict[str, Any]) -> None:
    """Inside the write that stores the Subscription: who wrote it last owns it."""
    session.conn.execute(
        "INSERT INTO subscription_owner (id, principal) VALUES (?, ?) "
        "ON CONFLICT (id) DO UPDATE SET principal = excluded.principal",
        (subscription_id, orjson.dumps(principal).decode()),
    )


def owner(session: Session, subscription_id: str) -> dict[str, Any] | None:
    """The principal who wrote the Subscription last (None: the server, or no such row)."""
    row = session.conn.execute(
        "SELECT principal FROM subscription_owner WHERE id = ?", (subscription_id,)
    ).fetchone()
    return orjson.loads(row[0]) if row and row[0] else None


def add_events(session: Session, subscriptions: list[str], origin: str) -> None:
    """Events of websocket subscriptions for the other worker processes; prunes old ones."""
    now = time.time()
    session.conn.execute(
        "DELETE FROM subscription_event WHERE at < ?", (now - EVENT_RETENTION_SECONDS,)
    )
    session.conn.executemany(
        "INSERT INTO subscription_event (subscription, origin, at) VALUES (?, ?, ?)",
        [(s, origin, now) for s in subscriptions],
    )


def last_event(session: Session) -> int:
    row = session.conn.execute("SELECT max(seq) FROM subscription_event").fetchone()
    return int(row[0] or 0)


def events_after(session: Session, seq: int, origin: str) -> list[tuple[int, str]]:
    """(seq, subscription id) of the events after `seq` that other processes wrote."""
    rows = session.conn.execute(
        "SELECT seq, subscription, origin FROM subscription_event WHERE seq > ? ORDER BY seq",
        (seq,),
    ).fetchall()
    return [(r[0], r[1]) if r[2] != origin else (r[0], "") for r in rows]


#: one criteria the search engine decides, compiled once: (statement, its arguments after
#: the key, type and id)
Compiled = tuple[str, list[Any]]


def check_criteria(rtype: str, clauses: list[Clause]) -> None:
    """Compile the criteria's values once, as a search would (a bad date: 400)."""
    Compiler("").where(rtype, clauses)


def compile_match(base_url: str, rtype: str, clauses: list[Clause]) -> Compiled:
    """The search engine's SQL for criteria, asked of one resource by type and id."""
    where, args = Compiler(base_url).where(rtype, clauses)
    return f"SELECT ? FROM resource r WHERE r.type = ? AND r.id = ? AND {where}", args


def matching(session: Session, rtype: str, rid: str, compiled: dict[str, Compiled]) -> set[str]:
    """Which of the compiled criteria (by key) the current version of rtype/rid meets: one
    statement for all of them."""
    parts, args = [], []
    for key, (statement, more) in compiled.items():
        parts.append(statement)
        args += [key, rtype, rid, *more]
    rows = session.conn.execute(" UNION ALL ".join(parts), args).fetchall()
    return {row[0] for row in rows}


def _own(session: AnySession) -> Session:
    """This backend's sessions are the only ones its store hands out."""
    assert isinstance(session, Session), type(session)
    return session


class SubscriptionTables:
    """contract.SubscriptionTables: the functions above, over this backend's sessions."""

    def generation(self, session: AnySession) -> float:
        return generation(_own(session))

    def current(self, session: AnySession) -> list[tuple[bytes, dict[str, Any] | None]]:
        return current(_own(session))

    def set_owner(
        self, session: AnySession, subscription_id: str, principal: dict[str, Any]
    ) -> None:
        set_owner(_own(session), subscription_id, principal)

    def owner(self, session: AnySession, subscription_id: str) -> dict[str, Any] | None:
        return owner(_own(session), subscription_id)

    def add_events(self, session: AnySession, subscriptions: list[str], origin: str) -> None:
        add_events(_own(session), subscriptions, origin)

    def last_event(self, session: AnySession) -> int:
        return last_event(_own(session))

    def events_after(self, session: AnySession, seq: int, origin: str) -> list[tuple[int, str]]:
        return events_after(_own(session), seq, origin)

    def check_criteria(self, rtype: str, clauses: list[Clause]) -> None:
        check_criteria(rtype, clauses)

    def compile_match(self, base_url: str, rtype: str, clauses: list[Clause]) -> Compiled:
        return compile_match(base_url, rtype, clauses)

    def matching(
        self, session: AnySession, rtype: str, rid: str, compiled: dict[str, Compiled]
    ) -> set[str]:
        return matching(_own(session), rtype, rid, compiled)
