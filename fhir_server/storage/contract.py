"""The storage contract: what the layers above storage (interactions, search, bundle, history,
policy, workflow, integrations) ask of a database, whichever backend serves it
(ARCHITECTURE.md, Storage). `select.open_store` picks the backend from `Settings.database`.

Backend-neutral, in every backend: reading current versions and versions, history pages,
writing versions with their index rows in one transaction (`Store.write`), conditional
lookups and search from the query AST (`Session.match_ids`, `Session.search`,
`Session.includes`), the conformance resources and their generation counter, $reindex; and
$everything's compartment walk and the referral statistics (the block so named in `Session`),
the consortium rule's patient-set narrowing (`Clause.patients`, inside `Session.search`).

SQLite only for now (`features.py`; MongoDB answers 501 or refuses to start): the SMART
authorization tables, the audit trail's hash chain, Bulk Data export jobs, the HL7 v2 inbox,
`backup`/`restore`, R4 Subscriptions (their owners and websocket events), so a MongoDB server
runs with `auth=off` and `audit=false` until those move behind this contract too.

The value types (`Stored`, `Version`, `IndexRows`) are plain data and belong to no backend;
they live in sqlite/store.py for now and are named here so callers need not know that.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..search.paging import Cursor
from ..search.query import Clause, Query
from .compartment import Branch, Entry, Member, Window
from .sqlite.store import IndexRows, Stored, Version

if TYPE_CHECKING:
    from .sqlite.inbox import Inbox

__all__ = ["IndexRows", "Page", "Row", "Session", "Store", "Stored", "Version"]

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
    def inbox(self) -> Inbox:
        """The integrations' inbox (HL7 v2): SQLite only for now."""
        ...
