"""R4 Subscriptions in MongoDB (contract.SubscriptionTables): owners in `subscription_owner`
(`_id` the Subscription's id), websocket events in `subscription_event` (`_id` a counter), and
criteria the search engine decides asked of one resource as the search's own filter."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from ...search.query import Clause
from .search import Compiler

if TYPE_CHECKING:
    from ..contract import Session
    from .store import MongoSession, MongoStore

OWNERS = "subscription_owner"
EVENTS = "subscription_event"
#: seconds an event stays in subscription_event: a worker polls it far more often
EVENT_RETENTION_SECONDS = 60.0
#: seconds a reader waits for a missing seq before it goes past it (events_after)
GAP_SECONDS = 2.0

#: criteria to ask of single resources: (base URL, type, clauses), compiled where asked (a
#: chain's filter is made of a lookup, which belongs to the session that asks)
Compiled = tuple[str, str, list[Clause]]


def _own(session: Session) -> MongoSession:
    """This store's sessions are the only ones it hands out."""
    return cast("MongoSession", session)


class SubscriptionTables:
    def __init__(self, store: MongoStore) -> None:
        self.store = store

    def generation(self, session: Session) -> float:
        """The sum of the Subscriptions' version numbers (as SQLite's)."""
        s = _own(session)
        rows = list(s.db["Subscription"].aggregate(
            [{"$group": {"_id": None, "n": {"$sum": "$v"}}}], session=s.s))  # fmt: skip
        return float(rows[0]["n"]) if rows else 0.0

    def current(self, session: Session) -> list[tuple[bytes, dict[str, Any] | None]]:
        s = _own(session)
        subs = list(s.db["Subscription"].find({"del": False}, {"json": 1}, session=s.s).sort("rid"))
        ids = [d["_id"] for d in subs]
        owners = {d["_id"]: d["principal"]
                  for d in s.db[OWNERS].find({"_id": {"$in": ids}}, session=s.s)}  # fmt: skip
        return [(bytes(d["json"]), owners.get(d["_id"])) for d in subs]

    def set_owner(self, session: Session, subscription_id: str, principal: dict[str, Any]) -> None:
        s = _own(session)
        s.remember(OWNERS, subscription_id)
        s.db[OWNERS].replace_one({"_id": subscription_id}, {"principal": principal},
                                 upsert=True, session=s.s)  # fmt: skip

    def owner(self, session: Session, subscription_id: str) -> dict[str, Any] | None:
        s = _own(session)
        found = s.db[OWNERS].find_one({"_id": subscription_id}, session=s.s)
        return found["principal"] if found else None

    def add_events(self, session: Session, subscriptions: list[str], origin: str) -> None:
        """The seqs are taken from a counter outside the transaction (as resource rows)."""
        s = _own(session)
        now = time.time()
        events = s.db[EVENTS]
        events.delete_many({"at": {"$lt": now - EVENT_RETENTION_SECONDS}}, session=s.s)
        if not subscriptions:
            return
        first = self.store.allocate(len(subscriptions), EVENTS)
        events.insert_many(
            [{"_id": first + n, "subscription": sub, "origin": origin, "at": now}
             for n, sub in enumerate(subscriptions)], session=s.s,
        )  # fmt: skip

    def last_event(self, session: Session) -> int:
        s = _own(session)
        doc = s.db[EVENTS].find_one({}, {"_id": 1}, sort=[("_id", -1)], session=s.s)
        return int(doc["_id"]) if doc else 0

    def events_after(self, session: Session, seq: int, origin: str) -> list[tuple[int, str]]:
        """Up to the first gap in the seqs younger than GAP_SECONDS: seqs are taken before the
        events commit, so a lower one may still be on its way (its writer's transaction);
        an older gap is a write that never committed."""
        s = _own(session)
        found = s.db[EVENTS].find({"_id": {"$gt": seq}}, session=s.s).sort("_id")
        out: list[tuple[int, str]] = []
        recent = time.time() - GAP_SECONDS
        for d in found:
            if d["_id"] != seq + 1 and d["at"] > recent:
                break
            seq = d["_id"]
            out.append((seq, d["subscription"] if d["origin"] != origin else ""))
        return out

    def check_criteria(self, rtype: str, clauses: list[Clause]) -> None:
        Compiler(self.store.reader(), "").where(rtype, clauses)

    def compile_match(self, base_url: str, rtype: str, clauses: list[Clause]) -> Compiled:
        return base_url, rtype, clauses

    def matching(
        self, session: Session, rtype: str, rid: str, compiled: dict[str, Compiled]
    ) -> set[str]:
        s = _own(session)
        out = set()
        for key, (base_url, ctype, clauses) in compiled.items():
            if ctype != rtype:
                continue
            where = {"$and": [{"_id": rid}, Compiler(s, base_url).where(rtype, clauses)]}
            if s.db[rtype].find_one(where, {"_id": 1}, session=s.s) is not None:
                out.add(key)
        return out
