"""The SQLite backend behind the storage contract (storage/contract.py): the store and its
sessions as they are, plus the search steps the layers above used to call as module
functions (search.py), so nothing above storage imports this package."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from ...search.paging import Cursor
from ...search.query import Clause, Query
from ..compartment import Branch, Entry, Member, Window
from ..contract import Page
from . import compartment, stats
from . import search as sql
from .export import ExportJobs
from .store import Session, SqliteStore
from .subscriptions import SubscriptionTables


class SqliteSession(Session):
    """A Session with the search steps of the contract."""

    def guard(self, key: str) -> None:
        """Nothing to do: the write transaction holds the one write lock."""

    def match_ids(
        self, base_url: str, rtype: str, clauses: list[Clause], limit: int | None
    ) -> list[tuple[str, str]]:
        return sql.match_ids(self, base_url, rtype, clauses, limit)

    def search(self, base_url: str, query: Query, cursor: Cursor | None, count_only: bool) -> Page:
        """Only row ids and sort keys are sorted; the JSON is fetched for the page alone."""
        compiler = sql.Compiler(base_url, tuple(query.types))
        needs_resource = any(p.code in ("_id", "_lastUpdated") for p, _ in query.sort)
        relation, where, args = compiler.source(query.rtype, query.clauses, needs_resource)
        if query.types:
            where += f" AND r.type IN ({', '.join('?' * len(query.types))})"
            args += query.types
        out = Page()
        if query.total != "none" or count_only:
            out.total = sql.count(self, (relation, where, args))
        if count_only:
            return out
        rows = sql.page(self, compiler, query, (relation, where, args), cursor, out.total)
        out.more = len(rows) > query.count
        rows = rows[: query.count]
        if cursor is not None and not cursor.forward:
            rows.reverse()
        out.rows = sql.with_json(self, rows)
        return out

    def includes(self, query: Query, rows: list[tuple[Any, ...]]) -> list[tuple[str, str, bytes]]:
        return sql.includes(self, query, [(r[0], r[1], r[2]) for r in rows])

    # --- compartments and workflow statistics (contract.py) ------------------------------

    def compartment_members(
        self, base_url: str, ctype: str, owners: list[str], branches: list[Branch], window: Window
    ) -> list[Member]:
        return compartment.members(self, base_url, ctype, owners, branches, window)

    def compartment_resources(self, members: list[tuple[int, str]]) -> list[Entry]:
        return compartment.resources(self, [rid for rid, _ in members])

    def compartment_referenced(
        self, members: list[tuple[int, str]], exclude: set[int]
    ) -> list[Entry]:
        targets = compartment.referenced(self, [rid for rid, _ in members]) - exclude
        return compartment.resources(self, sorted(targets))

    def current_by_ids(self, rtype: str, ids: set[str]) -> list[Entry]:
        return compartment.by_ids(self, rtype, ids)

    def linked_patients(self, start: str, limit: int) -> list[str]:
        return compartment.linked_patients(self, start, limit)

    def referral_stats_rows(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return stats.referral_stats_rows(self, params)


class SqliteBackend(SqliteStore):
    """The SQLite store handing out SqliteSessions."""

    kind = "sqlite"

    def session(self, conn: sqlite3.Connection) -> SqliteSession:
        return SqliteSession(conn)

    def reader(self) -> SqliteSession:
        session = super().reader()
        assert isinstance(session, SqliteSession)
        return session

    @contextmanager
    def write(self) -> Iterator[SqliteSession]:
        with super().write() as session:
            assert isinstance(session, SqliteSession)
            yield session

    @cached_property
    def exports(self) -> ExportJobs:
        """The Bulk Data export jobs (export.py)."""
        return ExportJobs(self)

    @cached_property
    def subscriptions(self) -> SubscriptionTables:
        """R4 Subscriptions' owners and websocket events (subscriptions.py)."""
        return SubscriptionTables()
