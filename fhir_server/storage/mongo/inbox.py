"""The integrations' inbox in MongoDB (contract.Inbox): one document per message, `_id` its
seq (a counter, arrival order). Idempotency: a received message with an id holds `key`
(channel, sender, message_id) under a unique sparse index, so a resend, from this process or
another, meets the stored one; releasing the key unsets it. Arrivals are stored one insert
each, outside any transaction (a duplicate-key error would abort one)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson
from bson.binary import Binary
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ...model.resource import now
from ..jobs import INBOX_STATUSES, Arrival, Message

if TYPE_CHECKING:
    from ..contract import Session
    from .store import MongoSession, MongoStore

INBOX = "inbox"


def _key(channel: str, sender: str, message_id: str) -> str:
    """One string, indexed as one value (an array would index each element), unambiguous."""
    return orjson.dumps([channel, sender, message_id]).decode()


def _message(d: dict[str, Any]) -> Message:
    return Message(
        d["_id"], d["channel"], d["sender"], d.get("message_id"), d["received_at"],
        d.get("remote"), d.get("kind"), d["status"], d.get("error"), d["attempts"],
        d.get("updated_at"), d["duplicates"], d["meta"], bytes(d["raw"]),
    )  # fmt: skip


class Inbox:
    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.coll = store.db[INBOX]

    def receive(self, arrivals: Sequence[Arrival]) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        first = self.store.allocate(len(arrivals), "inbox") if arrivals else 0
        for n, a in enumerate(arrivals):
            doc: dict[str, Any] = {
                "_id": first + n, "channel": a.channel, "sender": a.sender,
                "message_id": a.message_id, "received_at": a.received_at, "remote": a.remote,
                "kind": a.kind, "status": a.status, "error": a.error, "attempts": 0,
                "updated_at": None, "duplicates": 0, "meta": a.meta, "raw": Binary(a.raw),
            }  # fmt: skip
            if a.status == "received" and a.message_id is not None:
                doc["key"] = _key(a.channel, a.sender, a.message_id)
            try:
                self.coll.insert_one(doc)
                out.append((doc["_id"], False))
                continue
            except DuplicateKeyError:
                pass
            held = self.coll.find_one_and_update(
                {"key": doc["key"]}, {"$inc": {"duplicates": 1}},
                projection={"_id": 1}, return_document=ReturnDocument.AFTER,
            )  # fmt: skip
            if held is None:  # released between the two: store it after all
                self.coll.insert_one(doc)
                out.append((doc["_id"], False))
            else:
                out.append((held["_id"], True))
        return out

    def get(self, seq: int) -> Message | None:
        doc = self.coll.find_one({"_id": seq})
        return _message(doc) if doc else None

    def waiting(self, channel: str, status: str = "received", after: int = 0,
                limit: int = 100) -> list[Message]:  # fmt: skip
        found = self.coll.find({"channel": channel, "status": status, "_id": {"$gt": after}})
        return [_message(d) for d in found.sort("_id").limit(limit)]

    def settle(
        self,
        seq: int,
        status: str,
        error: str | None = None,
        meta: dict[str, Any] | None = None,
        release: bool = False,
        session: Session | None = None,
    ) -> None:
        """Inside `session` (a write session of this store) the update joins its transaction
        and its savepoints; otherwise it is one atomic update of its own."""
        assert status in INBOX_STATUSES, status
        update: dict[str, Any] = {
            "$set": {"status": status, "error": error, "updated_at": now(),
                     **{f"meta.{k}": v for k, v in (meta or {}).items()}},
            "$inc": {"attempts": 1},
        }  # fmt: skip
        if release:
            update["$unset"] = {"key": ""}
        if session is None:
            self.coll.update_one({"_id": seq}, update)
            return
        own = cast("MongoSession", session)  # this store's sessions are the only ones it has
        own.remember(INBOX, seq)
        self.coll.update_one({"_id": seq}, update, session=own.s)

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
        where: dict[str, Any] = {"channel": channel}
        for field, value in (("status", status), ("sender", sender),
                             ("message_id", message_id), ("kind", kind)):  # fmt: skip
            if value is not None:
                where[field] = value
        received: dict[str, str] = {}
        if since is not None:
            received["$gte"] = since
        if until is not None:
            received["$lt"] = until
        if received:
            where["received_at"] = received
        if before is not None:
            where["_id"] = {"$lt": before}
        found = self.coll.find(where).sort("_id", -1).limit(limit)
        return [_message(d) for d in found]

    def counts(self, channel: str) -> dict[str, int]:
        rows = self.coll.aggregate(
            [{"$match": {"channel": channel}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        )
        return {status: 0 for status in INBOX_STATUSES} | {r["_id"]: r["n"] for r in rows}

    def records(self) -> Iterator[tuple[Message, bool]]:
        for d in self.coll.find().sort("_id"):
            yield _message(d), "key" in d

    def put_records(self, records: Sequence[tuple[Message, bool]]) -> None:
        """Inserted in one ordered batch (a taken seq stops it there: `migrate` checks the
        inbox is empty first); the "inbox" counter then moves to the last seq, so `receive`
        numbers new arrivals after them."""
        if not records:
            return
        docs = []
        for m, held in records:
            doc: dict[str, Any] = {
                "_id": m.seq, "channel": m.channel, "sender": m.sender,
                "message_id": m.message_id, "received_at": m.received_at, "remote": m.remote,
                "kind": m.kind, "status": m.status, "error": m.error, "attempts": m.attempts,
                "updated_at": m.updated_at, "duplicates": m.duplicates, "meta": m.meta,
                "raw": Binary(m.raw),
            }  # fmt: skip
            if held and m.message_id is not None:
                doc["key"] = _key(m.channel, m.sender, m.message_id)
            docs.append(doc)
        try:
            self.coll.insert_many(docs)
        except BulkWriteError as exc:
            raise ValueError("the inbox already holds one of these messages") from exc
        self.store.advance(max(m.seq for m, _ in records), "inbox")
