"""The storage contract: what the layers above storage (interactions, search, bundle, history,
policy, workflow, integrations) ask of a database, whichever backend serves it
(ARCHITECTURE.md, Storage). `select.open_store` picks the backend from `Settings.database`.

Backend-neutral, in every backend: reading current versions and versions, history pages,
writing versions with their index rows in one transaction (`Store.write`), conditional
lookups and search from the query AST (`Session.match_ids`, `Session.search`,
`Session.includes`), the conformance resources and their generation counter, $reindex; and
$everything's compartment walk and the referral statistics (the block so named in `Session`),
the consortium rule's patient-set narrowing (`Clause.patients`, inside `Session.search`).

Also in every backend: the SMART authorization tables (`Store.auth`, `AuthTables`), the
audit trail's hash chain (`Store.audit`, `AuditTables`), and the background jobs' tables (the
block so named at the end): Bulk Data export jobs, the integrations' inbox (HL7 v2), R4
Subscriptions' owners and websocket events.

`backup`/`restore` copy a SQLite file (`features.py`); a MongoDB database is backed up with
MongoDB's own tools (mongodump, README).

The value types (`Stored`, `Version`, `IndexRows`) are plain data and belong to no backend;
they live in sqlite/store.py for now and are named here so callers need not know that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..search.paging import Cursor
from ..search.query import Clause, Query
from .auth_dump import AuthDump
from .compartment import Branch, Entry, Member, Window
from .jobs import INBOX_STATUSES, Arrival, Job, Message, Selection
from .sqlite.store import IndexRows, Stored, Version

__all__ = [
    "INBOX_STATUSES", "Arrival", "AuditTables", "AuthDump", "AuthTables", "ExportTables", "Inbox",
    "IndexRows", "Job", "Message", "Page", "Row", "Selection", "Session", "Store", "Stored",
    "SubscriptionTables", "Version",
]  # fmt: skip

#: a backend's handle on a resource's current row (SQLite: rid; MongoDB: "type/id"); opaque
#: above storage, handed back to `save` for an update
Row = Any


@dataclass
class Page:
    """One page of search matches: rows are (row, type, id, json, *sort key) in order, the
    key being what a `Cursor` continues from; `more`: another page follows this one."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    total: int | None = None
    more: bool = False


class Session(Protocol):
    """Queries over one consistent view; a write session runs inside the store's transaction."""

    #: every version this session wrote, in order (for after-commit hooks)
    written: list[Stored]

    def current(self, rtype: str, rid: str) -> tuple[Row, Stored] | None:
        """The current version (deleted or not) with its row, or None if never stored."""
        ...

    def any_current(self, rtype: str) -> bool: ...

    def version(self, rtype: str, rid: str, version: int) -> Stored | None: ...

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        since: str | None,
        at: str | None,
        page: tuple[int, tuple[str, str, str, int] | None],
        count: int,
    ) -> tuple[list[Stored], int]:
        """Versions newest first by (last_updated desc, type, id, version desc), with the total;
        `page` is an offset or the key of the version to continue after (keyset)."""
        ...

    def conformance_generation(self) -> int: ...

    def conformance_resources(self) -> list[bytes]: ...

    def current_rows(self, rtype: str, after: int, limit: int) -> list[tuple[Row, Stored]]:
        """Current undeleted versions of a type, `limit` after the `after`-th (reindexing)."""
        ...

    def replace_index(self, rows: list[tuple[Row, Version]]) -> None: ...

    def guard(self, key: str) -> None:
        """Make concurrent writers that decide on `key` (a conditional create's criteria)
        conflict instead of both writing: SQLite's single writer already does; MongoDB
        updates a lock document inside the transaction."""
        ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A part of a write transaction that an exception rolls back alone."""
        ...

    def save(self, row: Row | None, version: Version) -> Row: ...

    def save_many(self, writes: list[tuple[Row | None, Version]]) -> list[Row]: ...

    def match_ids(
        self, base_url: str, rtype: str, clauses: list[Clause], limit: int | None
    ) -> list[tuple[str, str]]:
        """(type, id) of the current resources matching the clauses, at most `limit`."""
        ...

    def search(self, base_url: str, query: Query, cursor: Cursor | None, count_only: bool) -> Page:
        """The page of `query` after `cursor` (query.count rows at most), with the total when
        `query.total` is not none or `count_only`; with `count_only` no rows."""
        ...

    def includes(self, query: Query, rows: list[tuple[Any, ...]]) -> list[tuple[str, str, bytes]]:
        """(type, id, json) of the _include/_revinclude targets of a page's rows."""
        ...

    # --- compartments and workflow statistics (every backend; issue 17) ---------------------
    # $everything's walk (storage/compartment.py holds its plain data) and the referral
    # statistics, so operations above storage ask the contract, not a backend.

    def compartment_members(
        self, base_url: str, ctype: str, owners: list[str], branches: list[Branch], window: Window
    ) -> list[Member]:
        """The current members of the `ctype` compartments of `owners`: per branch, the
        resources of its type referring to an owner through its parameters (or being one),
        meeting its clauses and the window; owners' type first, then by row."""
        ...

    def compartment_resources(self, members: list[tuple[int, str]]) -> list[Entry]:
        """(row, type, id, json) of these current (row, type)s, in the order given."""
        ...

    def compartment_referenced(
        self, members: list[tuple[int, str]], exclude: set[int]
    ) -> list[Entry]:
        """The current resources these (row, type)s refer to, but for the rows in `exclude`,
        by row."""
        ...

    def current_by_ids(self, rtype: str, ids: set[str]) -> list[Entry]:
        """The current resources of `rtype` with these ids."""
        ...

    def linked_patients(self, start: str, limit: int) -> list[str]:
        """The Patients joined to `start` by Patient.link, either direction and transitively,
        `start` first; at most `limit`."""
        ...

    def referral_stats_rows(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """(group key, direction, *counts, median hours to decision) rows, by group and
        direction: referral/stats.py defines them and passes its URLs in `params`."""
        ...


class Store(Protocol):
    """A database: sessions to read, one write transaction at a time, readiness."""

    #: "sqlite" or "mongodb"
    kind: str

    def reader(self) -> Session: ...

    def write(self) -> AbstractContextManager[Session]:
        """One write transaction; any exception rolls everything back."""
        ...

    def unready(self) -> str | None:
        """Why the database cannot serve now, or None."""
        ...

    def close(self) -> None: ...

    @property
    def exports(self) -> ExportTables: ...

    @property
    def inbox(self) -> Inbox:
        """The integrations' inbox (HL7 v2)."""
        ...

    @property
    def subscriptions(self) -> SubscriptionTables: ...

    @property
    def auth(self) -> AuthTables:
        """The authorization server's tables."""
        ...

    @property
    def audit(self) -> AuditTables:
        """The audit trail's records and chain."""
        ...


# --- background jobs: Bulk Data export, the integrations' inbox, R4 Subscriptions -----------
# (issue 17, part B) Every backend keeps these beside its resources: `Store.exports`,
# `Store.inbox`, `Store.subscriptions`. Their value types are plain data (jobs.py).


class ExportTables(Protocol):
    """The export jobs (short writes of their own; `claim`, `checkpoint`, `finish` succeed
    only for the worker holding the job) and the reads an export's files are made of."""

    def create(self, job: Job) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def runnable(self) -> list[Job]:
        """Queued jobs and running ones (whose worker may have died), oldest first."""
        ...

    def claim(self, job: Job, worker: str, lease: float) -> bool:
        """Take `job` for `worker` unless someone else took it since it was read."""
        ...

    def checkpoint(self, job_id: str, worker: str, progress: dict[str, Any], lease: float) -> bool:
        """Record progress and renew the lease; False when the job is no longer this worker's
        (deleted by its owner, or taken over)."""
        ...

    def finish(
        self, job_id: str, worker: str, manifest: dict[str, Any], expires: float
    ) -> bool: ...

    def fail(self, job_id: str, worker: str, reason: str, expires: float) -> None: ...

    def delete(self, job_id: str) -> bool: ...

    def expired(self, now: float) -> list[str]: ...

    def ids(self) -> set[str]: ...

    def count(self, base_url: str, sel: Selection) -> int: ...

    def batch(
        self, base_url: str, sel: Selection, after: int, limit: int, at: str
    ) -> tuple[list[bytes], int | None]:
        """Up to `limit` resources after row `after` in row order, as they were at instant
        `at` (the job's transactionTime: a resource changed since is written as its version
        then, one created since is left out); and the last row read (None: nothing left)."""
        ...

    def deleted(self, rtype: str, since: str, at: str) -> list[tuple[str, str]]:
        """(id, when) of the resources of `rtype` deleted after `since` (up to `at`) and still
        deleted, by id: the Bulk Data manifest's `deleted` files."""
        ...

    def types_present(self) -> list[str]:
        """The resource types some current resource has, sorted."""
        ...


class Inbox(Protocol):
    """The integrations' inbox: messages from other systems stored as received, raw bytes
    and all, before they are acknowledged; whoever maps them settles each one later. It knows
    nothing of HL7: `channel` names the integration and `meta` is JSON the integration
    defines."""

    def receive(self, arrivals: Sequence[Arrival]) -> list[tuple[int, bool]]:
        """Store the arrivals; for each, its seq and whether it was a duplicate (its key
        already held: nothing stored but the count of duplicates)."""
        ...

    def get(self, seq: int) -> Message | None: ...

    def waiting(
        self, channel: str, status: str = "received", after: int = 0, limit: int = 100
    ) -> list[Message]:
        """Messages of one status in arrival order, after seq `after` (the mapper's queue)."""
        ...

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
        resend is a new message). Inside `session` (the mapping's write, so the outcome
        commits with the resources) or in a write of its own."""
        ...

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
        ...

    def counts(self, channel: str) -> dict[str, int]: ...

    def records(self) -> Iterator[tuple[Message, bool]]:
        """Every message of every channel in seq order, and whether it holds its idempotency
        key: what a move to another database (`fhir-server migrate`) carries."""
        ...

    def put_records(self, records: Sequence[tuple[Message, bool]]) -> None:
        """Store messages as another database held them: the same seq (their URLs, the
        request ids of what their mapping wrote), status, attempts, meta and raw bytes, the
        key held where it was held (a resend of a mapped message stays a duplicate; one whose
        key was released is new); later arrivals are numbered after them. A seq already
        taken fails (ValueError): seqs of two databases must not mix."""
        ...


class SubscriptionTables(Protocol):
    """What R4 Subscriptions keep beside the resources: each Subscription's owner, a
    generation that moves with every version of one written, the websocket events the worker
    processes share, and criteria the search engine decides asked of one resource."""

    def generation(self, session: Session) -> float:
        """Moves with every version written of a Subscription (one read tells a process
        that its list is stale, whichever process wrote)."""
        ...

    def current(self, session: Session) -> list[tuple[bytes, dict[str, Any] | None]]:
        """Every current, undeleted Subscription (its stored JSON) with its owner's principal
        (None when written by the server itself, e.g. loaded from a file)."""
        ...

    def set_owner(self, session: Session, subscription_id: str, principal: dict[str, Any]) -> None:
        """Inside the write that stores the Subscription: who wrote it last owns it."""
        ...

    def owner(self, session: Session, subscription_id: str) -> dict[str, Any] | None:
        """The principal who wrote the Subscription last (None: the server, or no such one):
        only they may bind it to a websocket."""
        ...

    def add_events(self, session: Session, subscriptions: list[str], origin: str) -> None:
        """Events of websocket subscriptions for the other worker processes; prunes old ones."""
        ...

    def last_event(self, session: Session) -> int: ...

    def events_after(self, session: Session, seq: int, origin: str) -> list[tuple[int, str]]:
        """(seq, subscription id) of the events after `seq`; "" for those `origin` wrote."""
        ...

    def check_criteria(self, rtype: str, clauses: list[Clause]) -> None:
        """Compile the criteria's values once, as a search would (a bad date: 400)."""
        ...

    def compile_match(self, base_url: str, rtype: str, clauses: list[Clause]) -> Any:
        """Criteria prepared once to be asked of single resources (`matching`)."""
        ...

    def matching(
        self, session: Session, rtype: str, rid: str, compiled: dict[str, Any]
    ) -> set[str]:
        """Which of the compiled criteria (by key) the current version of rtype/rid meets."""
        ...


# --- the SMART authorization tables and the audit trail (every backend; issue 17) ----------


class AuthTables(Protocol):
    """The authorization server's state (fhir_server/auth): clients, users, one-time codes and
    launch values, tokens, used assertion ids, the signing key and failed logins. Rows hold
    JSON-able dicts the auth package defines; secrets and token values arrive hashed. Each
    call stands alone: single-use grants and refresh rotation are atomic in themselves."""

    def put_client(self, client_id: str, data: dict[str, Any]) -> None:
        """Register or replace a client."""
        ...

    def client(self, client_id: str) -> dict[str, Any] | None: ...

    def clients(self) -> list[dict[str, Any]]:
        """Every client, by client_id."""
        ...

    def remove_client(self, client_id: str) -> bool:
        """Remove a client and revoke its tokens; False if there was no such client."""
        ...

    def put_user(self, username: str, data: dict[str, Any]) -> None: ...

    def user(self, username: str) -> dict[str, Any] | None: ...

    def put_grant(
        self, table: str, key: str, client_id: str, data: dict[str, Any], expires_at: float
    ) -> None:
        """Keep a one-time grant: `table` is "auth_code" or "auth_launch"."""
        ...

    def take_grant(
        self, table: str, key: str, now: float, consume: bool = True
    ) -> dict[str, Any] | None:
        """The unexpired grant with its client_id, deleted as it is read (single use: of two
        concurrent takers one gets None) unless `consume` is false."""
        ...

    def put_token(
        self, key: str, client_id: str, kind: str, data: dict[str, Any], expires_at: float
    ) -> None: ...

    def token(self, key: str) -> tuple[str, str, dict[str, Any], float, bool] | None:
        """(client_id, kind, data, expires_at, revoked) of a token by its hash."""
        ...

    def revoke_token(self, key: str, client_id: str | None = None) -> bool:
        """Revoke a live token (only the client's own when client_id is given) and every
        token of its grant (`data["grant"]`; RFC 7009 §2.1)."""
        ...

    def rotate_refresh(self, key: str, now: float) -> tuple[str, dict[str, Any]] | None:
        """Use a live refresh token once: revoke it, return (client_id, data)."""
        ...

    def use_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record an assertion id; False if it was seen before and has not yet expired."""
        ...

    def signing_key(self, make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """(kid, private JWK JSON) of the id_token key; `make()` creates one on first use
        (every process ends up with the same one)."""
        ...

    def failures(self, who: list[str], since: float) -> int:
        """The most failed logins any of `who` had since the instant."""
        ...

    def fail(self, who: list[str], at: float, forget_before: float) -> None: ...

    def patients_of(self, organization_id: str, limit: int = 200) -> list[tuple[str, str]]:
        """(Patient/id, display name) of current Patients whose managingOrganization is the
        organization (search parameter `organization`), by id."""
        ...

    def dump(self, now: float) -> AuthDump:
        """What a move to another database carries (AuthDump); the other backend takes it
        back through put_client, put_user, signing_key, put_token and use_jti."""
        ...


#: one audit record as stored: (seq, record bytes, hash hex)
AuditRow = tuple[int, bytes, str]
#: one link of SQLite's schema-4 chain (AuditEvents chained one by one): (seq, type, id,
#: version, hash)
AuditLink = tuple[int, str, str, int, str]


class AuditTables(Protocol):
    """The audit trail's hash chain (fhir_server/audit/chain.py): records in seq order, which
    of them are not expanded into AuditEvents yet, and the reads `audit verify` makes. The
    writes run inside a write session (`session`), so a record commits with its change; the
    chain head must not move under a writer: SQLite's single writer sees to it, MongoDB
    compares and sets a head document in the same transaction."""

    def head(self, session: Session) -> tuple[int, str] | None:
        """(seq, hash) of the last record; seq 0 and the last schema-4 hash when only that
        chain exists; None for an empty trail."""
        ...

    def append(
        self,
        session: Session,
        head: tuple[int, str] | None,
        rows: list[AuditRow],
        pending_since: float | None,
    ) -> None:
        """Store chained records after `head` (as `head()` answered in this session), moving
        the head to the last; with `pending_since`, as not expanded yet. A head that moved
        meanwhile (another writer) fails the write (503, retry) instead of forking the chain."""
        ...

    def take_pending(self, session: Session, wanted: dict[int, str]) -> list[int]:
        """Of the records `wanted` (seq -> hash), those still pending with that very hash,
        marked expanded in this transaction (so each is expanded once)."""
        ...

    def stale_pending(self, before: float, limit: int) -> list[AuditRow]:
        """Records pending since before `before` (their writer died or fell behind), oldest
        first."""
        ...

    def records(self) -> Iterator[tuple[AuditRow, bool]]:
        """Every record in seq order, and whether it is still pending."""
        ...

    def stored_event(
        self, rid: str
    ) -> tuple[bytes | None, bytes | None, int | None, int | None] | None:
        """An AuditEvent's first version's JSON as stored, and its current (JSON, version,
        deleted); None when no such version is stored."""
        ...

    def event_count(self) -> int:
        """AuditEvent versions stored, of every kind."""
        ...

    def unchained_events(self) -> Iterator[tuple[str, int]]:
        """AuditEvent versions (id, version) the schema-4 chain does not name, oldest first."""
        ...

    def chained(self) -> Iterator[tuple[AuditLink, bytes | None, bytes | None, int | None]]:
        """Every schema-4 link with the JSON of the version it names and the current row's
        JSON and deleted flag (None when missing); nothing on a backend without that chain."""
        ...
