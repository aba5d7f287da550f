"""The audit trail's chain in MongoDB (contract.AuditTables): `audit_record` holds the records
by seq (`pending`: since when a record waits to be expanded into AuditEvents, absent once it
is), `audit_head` the (seq, hash) of the last one.

Race-free appends: a writer moves the head from the (seq, hash) it chained after, a compare
and set in the write's own transaction. Of two writers that chained after the same head, the
second finds it moved (or, inside transactions, conflicts on the document) and its write fails
with 503 Retry-After, never forking the chain. Without transactions (a standalone server,
mongomock) one process's writers already take turns (store.py) and the compare and set still
keeps other processes from forking the chain, but a write that fails after its record is
appended leaves the record (README, MongoDB: run a replica set). The schema-4 chain of old
SQLite databases (audit_chain) does not exist here: `fhir-server migrate` copies the records
with their hashes (mongo/migrate.py), not a schema-4 chain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from bson.binary import Binary
from pymongo.errors import DuplicateKeyError

from ...errors import FhirError, error

if TYPE_CHECKING:
    from pymongo.client_session import ClientSession
    from pymongo.database import Database

    from ..contract import AuditLink, AuditRow, Session
    from .store import MongoSession

RECORDS = "audit_record"
#: one document, `_id` "head": the (seq, hash) of the last record
HEAD = "audit_head"
HISTORY = "history"


def _session(session: Session) -> ClientSession | None:
    """The transaction of this backend's write session (None without transactions)."""
    return cast("MongoSession", session).s


def _head_moved() -> FhirError:
    exc = error(503, "transient", "Another writer appended to the audit trail first; retry")
    exc.headers["Retry-After"] = "1"
    return exc


class MongoAudit:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.db = db

    def head(self, session: Session) -> tuple[int, str] | None:
        doc = self.db[HEAD].find_one({"_id": "head"}, session=_session(session))
        return None if doc is None else (int(doc["seq"]), str(doc["hash"]))

    def append(
        self,
        session: Session,
        head: tuple[int, str] | None,
        rows: list[AuditRow],
        pending_since: float | None,
    ) -> None:
        s = _session(session)
        moved = {"seq": rows[-1][0], "hash": rows[-1][2]}
        try:
            if head is None:
                self.db[HEAD].insert_one({"_id": "head", **moved}, session=s)
            else:
                was = {"_id": "head", "seq": head[0], "hash": head[1]}
                if self.db[HEAD].update_one(was, {"$set": moved}, session=s).matched_count != 1:
                    raise _head_moved()
        except DuplicateKeyError:  # another writer chained the first record
            raise _head_moved() from None
        docs: list[dict[str, Any]] = []
        for seq, data, digest in rows:
            doc: dict[str, Any] = {"_id": seq, "record": Binary(data), "hash": digest}
            if pending_since is not None:
                doc["pending"] = pending_since
            docs.append(doc)
        self.db[RECORDS].insert_many(docs, session=s)

    def take_pending(self, session: Session, wanted: dict[int, str]) -> list[int]:
        """One compare-and-unset per record: of two takers, one modifies it."""
        s = _session(session)
        taken = []
        for seq, digest in sorted(wanted.items()):
            done = self.db[RECORDS].update_one(
                {"_id": seq, "hash": digest, "pending": {"$exists": True}},
                {"$unset": {"pending": ""}},
                session=s,
            )
            if done.modified_count == 1:
                taken.append(seq)
        return taken

    def stale_pending(self, before: float, limit: int) -> list[AuditRow]:
        found = self.db[RECORDS].find({"pending": {"$lt": before}}).sort("_id").limit(limit)
        return [(d["_id"], bytes(d["record"]), d["hash"]) for d in found]

    def records(self) -> Iterator[tuple[AuditRow, bool]]:
        for d in self.db[RECORDS].find().sort("_id"):
            yield (d["_id"], bytes(d["record"]), d["hash"]), "pending" in d

    def stored_event(
        self, rid: str
    ) -> tuple[bytes | None, bytes | None, int | None, int | None] | None:
        first = self.db[HISTORY].find_one({"_id": f"AuditEvent/{rid}/1", "i": rid})
        if first is None:
            return None
        current = self.db["AuditEvent"].find_one({"_id": rid}, {"json": 1, "v": 1, "del": 1})
        if current is None:
            return _bytes(first.get("json")), None, None, None
        deleted = int(bool(current["del"]))
        return _bytes(first.get("json")), _bytes(current.get("json")), current["v"], deleted

    def event_count(self) -> int:
        return self.db[HISTORY].count_documents({"t": "AuditEvent"})

    def unchained_events(self) -> Iterator[tuple[str, int]]:
        for d in self.db[HISTORY].find({"t": "AuditEvent"}, {"i": 1, "v": 1}).sort("lu"):
            yield d["i"], d["v"]

    def chained(self) -> Iterator[tuple[AuditLink, bytes | None, bytes | None, int | None]]:
        """No schema-4 chain on MongoDB."""
        return iter(())


def _bytes(raw: Any) -> bytes | None:
    return bytes(raw) if raw is not None else None
