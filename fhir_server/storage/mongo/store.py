"""The MongoDB backend behind the storage contract (storage/contract.py).

Layout (ARCHITECTURE.md, Storage): one collection per resource type holding current versions,
`_id` the resource id, with an embedded index section `x` built by the same extractors as the
SQLite index tables (search/index.py), one array per table whose elements carry that table's
columns; `history` holds every version; `meta` the counters. Indexes are declared in
`indexes.py` and created at start-up.

The driver is pymongo's synchronous client, the one the `mongomotor` ODM is built on (0.17
wraps pymongo's AsyncMongoClient): the contract is synchronous (interactions run in worker
threads, as with SQLite), the stored form is raw JSON bytes with an index section, not ODM
documents, and the ODM's connections are module-global aliases where Settings must decide.

Writes: a replica set (or mongos) runs each `Store.write` as one multi-document transaction,
so a transaction bundle, a workflow operation or a conditional create commits whole or not at
all; a standalone server or mongomock has no transactions: writes then apply one by one and
an error part-way leaves what was written (say so in deployment: run a replica set).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cached_property
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from pymongo import ReturnDocument
from pymongo.errors import OperationFailure, PyMongoError

from ...errors import FhirError, error
from ...search.paging import Cursor
from ...search.query import COMPARTMENTS, Clause, Query
from ...settings import Settings
from ..compartment import Branch, Entry, Member, Window
from ..contract import Page, Stored, Version
from ..sqlite.schema import CONFORMANCE_TYPES, INDEX_TABLES
from . import compartment, indexes, stats
from .search import Compiler, includes, run_search

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.client_session import ClientSession
    from pymongo.database import Database

    from .audit import MongoAudit
    from .auth import MongoAuth
    from .export import ExportJobs
    from .inbox import Inbox
    from .subscriptions import SubscriptionTables

HISTORY = "history"
META = "meta"
LOCKS = "locks"


def index_section(version: Version) -> dict[str, list[dict[str, Any]]]:
    """The SQLite index rows of a version as embedded documents, column names kept; composite
    component rows (param `code$j`, group number last) grouped per (code, group) under
    `composite`, one list per component, so one `$elemMatch` keeps a match inside a group."""
    out: dict[str, list[dict[str, Any]]] = {}
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for table, cols in INDEX_TABLES.items():
        names = ("p", *cols)
        rows = [_row(names, row) for row in version.index_rows.get(table, ())]
        if rows:
            out[table] = rows
        for row in version.composite.get(table, ()):
            entry = _row(names, row[:-1])
            code, _, component = entry["p"].partition("$")
            group = groups.setdefault((code, row[-1]), {"p": code})
            group.setdefault(f"c{component.partition(':')[0]}", []).append(entry)
    if groups:
        out["composite"] = list(groups.values())
    return out


def _row(names: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    return {k: v for k, v in zip(names, row, strict=True) if v is not None}


def sort_section(section: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per parameter, the least and greatest value of its sort column (search.html#sort: a
    resource sorts by its first value in the order asked), so a sort reads an index."""
    out: dict[str, dict[str, Any]] = {}
    for table, rows in section.items():
        col = indexes.SORT_COLUMN.get(table)
        if col is None:
            continue
        for r in rows:
            v = r.get(col)
            if v is None:
                continue
            k = out.setdefault(r["p"], {"n": 1, "lo": v, "hi": v})
            k["lo"], k["hi"] = min(k["lo"], v), max(k["hi"], v)
    return out


def patient_of(rtype: str, rid: str, section: dict[str, list[dict[str, Any]]]) -> str | None:
    """The Patient compartment the resource is in (its shard key, README: sharding): the
    patient itself, or the first Patient its compartment parameters name."""
    if rtype == "Patient":
        return rid
    params = COMPARTMENTS.get("Patient", {}).get(rtype) or ()
    for r in section.get("reference", ()):
        if r.get("target_type") == "Patient" and r["p"] in params:
            return str(r.get("target_id"))
    return None


def _stored(rtype: str, doc: dict[str, Any]) -> Stored:
    raw = doc.get("json")
    return Stored(rtype, doc["_id"], doc["v"], doc["lu"], doc["del"], bytes(raw) if raw else None)


class MongoSession:
    """The contract's Session over one database, inside a transaction when `session` is."""

    def __init__(self, store: MongoStore, session: ClientSession | None) -> None:
        self.store = store
        self.db = store.db
        self.s = session
        self.written: list[Stored] = []
        #: per open savepoint, how to undo its writes: (collection, _id, the document before)
        self._undo: list[list[tuple[str, Any, dict[str, Any] | None]]] = []

    # --- reads ---------------------------------------------------------------------------

    def current(self, rtype: str, rid: str) -> tuple[int, Stored] | None:
        doc = self.db[rtype].find_one({"_id": rid}, {"x": 0, "k": 0}, session=self.s)
        return None if doc is None else (doc["rid"], _stored(rtype, doc))

    def any_current(self, rtype: str) -> bool:
        return self.db[rtype].find_one({"del": False}, {"_id": 1}, session=self.s) is not None

    def version(self, rtype: str, rid: str, version: int) -> Stored | None:
        key = {"_id": f"{rtype}/{rid}/{version}", "i": rid}
        doc = self.db[HISTORY].find_one(key, session=self.s)
        if doc is None:
            return None
        raw = doc.get("json")
        return Stored(
            rtype, rid, version, doc["lu"], doc["del"], bytes(raw) if raw else None, doc["m"]
        )

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        since: str | None,
        at: str | None,
        page: tuple[int, tuple[str, str, str, int] | None],
        count: int,
    ) -> tuple[list[Stored], int]:
        """Same order as SQLite's HISTORY_ORDER: lu desc, t, i, v desc."""
        where: dict[str, Any] = {}
        if rtype is not None:
            where["t"] = rtype
        if rid is not None:
            where["i"] = rid
        ands: list[dict[str, Any]] = []
        if since is not None:
            ands.append({"lu": {"$gte": since}})
        if at is not None:
            ands.append({"lu": {"$lte": at}})
            ands.append({"$or": [{"sup": None}, {"sup": {"$gt": at}}]})
        if ands:
            where["$and"] = ands
        coll = self.db[HISTORY]
        total = coll.count_documents(where, session=self.s)
        offset, key = page
        if key is not None:
            stamp, ktype, kid, kversion = key
            beyond = {
                "$or": [
                    {"lu": {"$lt": stamp}},
                    {"lu": stamp, "t": {"$gt": ktype}},
                    {"lu": stamp, "t": ktype, "i": {"$gt": kid}},
                    {"lu": stamp, "t": ktype, "i": kid, "v": {"$lt": kversion}},
                ]
            }
            where = {"$and": [where, beyond]}
        found = list(
            coll.find(where, session=self.s)
            .sort([("lu", -1), ("t", 1), ("i", 1), ("v", -1)])
            .skip(offset)
            .limit(count)
        )
        out = []
        for d in found:
            raw = d.get("json")
            created = d["v"] == 1 or bool(d.get("pdel"))
            out.append(
                Stored(
                    d["t"],
                    d["i"],
                    d["v"],
                    d["lu"],
                    d["del"],
                    bytes(raw) if raw else None,
                    d["m"],
                    created,
                )
            )
        return out, total

    def conformance_generation(self) -> int:
        doc = self.db[META].find_one({"_id": "conformance"}, session=self.s)
        return int(doc["n"]) if doc else 0

    def conformance_resources(self) -> list[bytes]:
        out: list[bytes] = []
        for rtype in CONFORMANCE_TYPES:
            for d in self.db[rtype].find({"del": False}, {"json": 1}, session=self.s).sort("rid"):
                out.append(bytes(d["json"]))
        return out

    def current_rows(self, rtype: str, after: int, limit: int) -> list[tuple[int, Stored]]:
        found = (
            self.db[rtype]
            .find({"del": False, "rid": {"$gt": after}}, {"x": 0, "k": 0}, session=self.s)
            .sort("rid")
            .limit(limit)
        )
        return [(d["rid"], _stored(rtype, d)) for d in found]

    # --- search --------------------------------------------------------------------------

    def match_ids(
        self, base_url: str, rtype: str, clauses: list[Clause], limit: int | None
    ) -> list[tuple[str, str]]:
        where = Compiler(self, base_url).where(rtype, clauses)
        found = self.db[rtype].find(where, {"_id": 1}, session=self.s).sort("rid")
        if limit is not None:
            found = found.limit(limit)
        return [(rtype, d["_id"]) for d in found]

    def search(self, base_url: str, query: Query, cursor: Cursor | None, count_only: bool) -> Page:
        return run_search(self, base_url, query, cursor, count_only)

    def includes(self, query: Query, rows: list[tuple[Any, ...]]) -> list[tuple[str, str, bytes]]:
        return includes(self, query, [(r[1], r[2]) for r in rows])

    # --- compartments and workflow statistics (contract.py) ------------------------------

    def compartment_members(
        self, base_url: str, ctype: str, owners: list[str], branches: list[Branch], window: Window
    ) -> list[Member]:
        return compartment.members(self, base_url, ctype, owners, branches, window)

    def compartment_resources(self, members: list[tuple[int, str]]) -> list[Entry]:
        return compartment.resources(self, members)

    def compartment_referenced(
        self, members: list[tuple[int, str]], exclude: set[int]
    ) -> list[Entry]:
        return compartment.referenced(self, members, exclude)

    def current_by_ids(self, rtype: str, ids: set[str]) -> list[Entry]:
        return compartment.by_ids(self, rtype, ids)

    def linked_patients(self, start: str, limit: int) -> list[str]:
        return compartment.linked_patients(self, start, limit)

    def referral_stats_rows(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return stats.referral_stats_rows(self, params)

    # --- writes --------------------------------------------------------------------------

    def guard(self, key: str) -> None:
        """Writers deciding on the same key (a conditional create's criteria) conflict: both
        transactions update one lock document, so the second aborts (retried by the client as
        a transient error) instead of creating a duplicate."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        self.db[LOCKS].update_one({"_id": digest}, {"$inc": {"n": 1}}, upsert=True, session=self.s)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """MongoDB has no savepoints inside a transaction: this one keeps an undo log (each
        document a write inside it touches, as it was before) and, on an exception, puts the
        documents back in the same session, newest first, the rest of the transaction going
        on (the HL7 v2 mapper writes several messages in one, each all or nothing)."""
        mark = len(self.written)
        self._undo.append([])
        try:
            yield
        except BaseException:
            for coll, key, before in reversed(self._undo.pop()):
                # delete and insert, not an upsert: on a sharded collection an upsert's filter
                # needs the shard key, an insert finds it in the document
                self.db[coll].delete_one({"_id": key}, session=self.s)
                if before is not None:
                    self.db[coll].insert_one(before, session=self.s)
            del self.written[mark:]
            raise
        done = self._undo.pop()
        if self._undo:  # a nested savepoint's writes are the outer one's to undo
            self._undo[-1].extend(done)

    def remember(self, coll: str, key: Any) -> None:
        """Inside a savepoint, note the document `key` of `coll` as it is before a write."""
        if self._undo:
            before = self.db[coll].find_one({"_id": key}, session=self.s)
            self._undo[-1].append((coll, key, before))

    def save(self, row: int | None, version: Version) -> int:
        return self.save_many([(row, version)])[0]

    def save_many(self, writes: list[tuple[int | None, Version]]) -> list[int]:
        self.written.extend(v.stored for _, v in writes)
        new = sum(1 for row, _ in writes if row is None)
        next_rid = self.store.allocate(new) if new else 0
        rows: list[int] = []
        conformance = False
        for row, version in writes:
            if row is None:
                row, next_rid = next_rid, next_rid + 1
            rows.append(row)
            s = version.stored
            section = index_section(version)
            doc: dict[str, Any] = {
                "_id": s.id,
                "rid": row,
                "v": s.version,
                "lu": s.last_updated,
                "del": s.deleted,
                "json": Binary(s.json) if s.json is not None else None,
                "pc": patient_of(s.type, s.id, section),
                "x": section,
                "k": sort_section(section),
            }
            if version.fulltext is not None and any(version.fulltext):
                doc["ftn"], doc["ftc"] = version.fulltext
            if s.deleted:
                doc["x"], doc["k"] = {}, {}
            self.remember(s.type, s.id)
            self.db[s.type].replace_one({"_id": s.id}, doc, upsert=True, session=self.s)
            prev_deleted = None
            if s.version > 1:
                self.remember(HISTORY, f"{s.type}/{s.id}/{s.version - 1}")
                prev = self.db[HISTORY].find_one_and_update(
                    # the shard key `i` in the filter targets one shard (README: sharding)
                    {"_id": f"{s.type}/{s.id}/{s.version - 1}", "i": s.id},
                    {"$set": {"sup": s.last_updated}},
                    session=self.s,
                )
                prev_deleted = bool(prev and prev["del"])
            self.remember(HISTORY, f"{s.type}/{s.id}/{s.version}")
            self.db[HISTORY].insert_one(
                {
                    "_id": f"{s.type}/{s.id}/{s.version}",
                    "t": s.type,
                    "i": s.id,
                    "v": s.version,
                    "lu": s.last_updated,
                    "del": s.deleted,
                    "m": s.method,
                    "json": Binary(s.json) if s.json is not None else None,
                    "pdel": prev_deleted,
                    "pc": doc["pc"],
                },
                session=self.s,
            )
            conformance |= s.type in CONFORMANCE_TYPES
        if conformance:
            self.remember(META, "conformance")
            self.db[META].update_one(
                {"_id": "conformance"}, {"$inc": {"n": 1}}, upsert=True, session=self.s
            )
        return rows

    def replace_index(self, rows: list[tuple[int, Version]]) -> None:
        for row, version in rows:
            s = version.stored
            section = index_section(version)
            self.db[s.type].update_one(
                {"_id": s.id, "rid": row, "v": s.version},
                {"$set": {"x": section, "k": sort_section(section)}},
                session=self.s,
            )


class MongoStore:
    """A MongoDB database: its client (connection pool), indexes made at start-up."""

    kind = "mongodb"

    def __init__(
        self, client: MongoClient[dict[str, Any]], name: str, chained: bool = False
    ) -> None:
        """`chained`: the audit trail is on, so every write transaction moves its chain head
        (audit.py); this process's writers then take turns, as on SQLite's one writer,
        instead of conflicting there and answering 503 (other processes' still may)."""
        self.client = client
        self.db: Database[dict[str, Any]] = client[name]
        self._lock = threading.Lock()
        self.transactions = self._supports_transactions()
        self._serial = chained or not self.transactions
        indexes.create(self.db)

    @classmethod
    def connect(cls, url: str, settings: Settings) -> MongoStore:
        """Pool sizes and timeouts come from the URL's options (maxPoolSize, minPoolSize,
        maxIdleTimeMS, waitQueueTimeoutMS, w, readConcernLevel: README, deployment)."""
        from pymongo import MongoClient
        from pymongo.uri_parser import parse_uri

        name = parse_uri(url).get("database") or "fhir"
        timeout = int(settings.lock_timeout_seconds * 1000)
        client: MongoClient[dict[str, Any]] = MongoClient(
            url, serverSelectionTimeoutMS=timeout, appname="fhir-server"
        )
        try:
            store = cls(client, name, chained=settings.audit)
        except PyMongoError as exc:
            client.close()
            raise SystemExit(f"MongoDB does not answer at {url}: {exc}") from None
        if not store.transactions and settings.workers > 1:
            store.close()
            raise SystemExit(
                "a standalone MongoDB has no transactions: one worker only (or a replica set)"
            )
        return store

    def _supports_transactions(self) -> bool:
        """Transactions need a replica set or mongos; mongomock and a standalone have none."""
        try:
            hello = self.client.admin.command("hello")
        except (PyMongoError, NotImplementedError, AttributeError):
            return False
        return bool(hello.get("setName") or hello.get("msg") == "isdbgrid")

    def allocate(self, n: int, counter: str = "rid") -> int:
        """`n` new row numbers (or numbers of another `counter`: inbox messages, websocket
        events), taken outside any transaction (a counter in a transaction would make every
        create conflict with every other): gaps are harmless, the order of creation is what
        the default search order needs."""
        doc = self.db[META].find_one_and_update(
            {"_id": counter}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None  # upserted
        return int(doc["n"]) - n + 1

    def advance(self, n: int, counter: str = "rid") -> None:
        """Move a counter to at least `n`: numbers copied from another database (`migrate`)
        are not allocated again."""
        self.db[META].update_one({"_id": counter}, {"$max": {"n": n}}, upsert=True)

    def reader(self) -> MongoSession:
        return MongoSession(self, None)

    @contextmanager
    def write(self) -> Iterator[MongoSession]:
        """One transaction on a replica set; without one, a process-wide lock keeps this
        process's writers one at a time (the guard of conditional writes needs transactions),
        as it does with the audit chain on (`chained`)."""
        with self._lock if self._serial else nullcontext():
            if not self.transactions:
                yield MongoSession(self, None)
                return
            with self._transaction() as session:
                yield session

    @contextmanager
    def _transaction(self) -> Iterator[MongoSession]:
        with self.client.start_session() as s:
            try:
                with s.start_transaction():
                    yield MongoSession(self, s)
            except PyMongoError as exc:
                # another transaction wrote the same documents (WriteConflict, code 112), or
                # the commit's outcome is unknown after a failover: the client retries
                labels = ("TransientTransactionError", "UnknownTransactionCommitResult")
                if any(exc.has_error_label(x) for x in labels) or _code(exc) == 112:
                    raise _conflict() from None
                raise

    @cached_property
    def auth(self) -> MongoAuth:
        """The SMART authorization tables (contract.AuthTables)."""
        from .auth import MongoAuth

        return MongoAuth(self.db)

    @cached_property
    def audit(self) -> MongoAudit:
        """The audit trail's chain (contract.AuditTables)."""
        from .audit import MongoAudit

        return MongoAudit(self.db)

    @cached_property
    def exports(self) -> ExportJobs:
        from .export import ExportJobs

        return ExportJobs(self)

    @cached_property
    def inbox(self) -> Inbox:
        from .inbox import Inbox

        return Inbox(self)

    @cached_property
    def subscriptions(self) -> SubscriptionTables:
        from .subscriptions import SubscriptionTables

        return SubscriptionTables(self)

    def unready(self) -> str | None:
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            return f"the database does not answer: {exc}"
        return None

    def close(self) -> None:
        self.client.close()


def _code(exc: PyMongoError) -> int | None:
    return exc.code if isinstance(exc, OperationFailure) else None


def _conflict() -> FhirError:
    """Another transaction wrote the same documents first: transient, retry (like SQLite's
    lock-error 503)."""
    exc = error(503, "transient", "A concurrent write touched the same resources; retry")
    exc.headers["Retry-After"] = "1"
    return exc
