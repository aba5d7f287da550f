"""Compartments as a whole (compartmentdefinition.html) in SQL: the members of one or several
compartments of a type, across resource types, for $everything; what the members refer to;
the patients linked to a patient (the contract's compartment block, storage/compartment.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..compartment import Branch, Entry, Member, Window
from .search import Compiler
from .store import Session


def members(
    session: Session,
    base_url: str,
    ctype: str,
    owners: list[str],
    branches: list[Branch],
    window: Window,
) -> list[Member]:
    """The current members of the compartments of `owners`, owners first, then by row id."""
    compiler = Compiler(base_url)
    owner_json = orjson.dumps(owners).decode()
    found: list[Member] = []
    # one query per type: SQLite answers each from its membership lookup; as one UNION ALL
    # with an ORDER BY it took three times as long (measured: 8 ms against 2.7 ms)
    for b in branches:
        sql, args = _branch(compiler, ctype, owner_json, b, window)
        found += session.query(sql, args)
    found.sort()
    return found


def _branch(
    compiler: Compiler, ctype: str, owners: str, b: Branch, window: Window
) -> tuple[str, list[Any]]:
    # the unary + keeps SQLite on the membership lookups, off the (type, deleted) index
    conds, args = ["+r.deleted = 0", "+r.type = ?"], [b.rtype]
    member: list[str] = []
    if b.params:
        marks = ", ".join("?" * len(b.params))
        member.append(
            "r.rid IN (SELECT rid FROM idx_reference WHERE type = ? AND param IN "
            f"({marks}) AND target_type = ? AND target_id IN (SELECT value FROM json_each(?)))"
        )
        args += [b.rtype, *b.params, ctype, owners]
    if b.owners:
        member.append(
            "r.rid IN (SELECT rid FROM resource WHERE type = ? AND id IN "
            "(SELECT value FROM json_each(?)))"
        )
        args += [b.rtype, owners]
    conds.append("(" + " OR ".join(member) + ")")
    for clause in b.clauses:
        sql, a = compiler.clause(b.rtype, clause, "r")
        conds.append(sql)
        args += a
    if window.since is not None:
        conds.append("r.last_updated > ?")
        args.append(window.since)
    if b.care_date and (window.low is not None or window.high is not None):
        # resources without a care date are kept: their care date is unknown, not outside
        conds.append(
            "(NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid AND d.param = ?) "
            "OR EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid AND d.param = ? "
            "AND d.high >= ? AND d.low <= ?))"
        )
        args += [b.care_date, b.care_date, window.low or "", window.high or "\uffff"]
    return f"SELECT r.type <> ?, r.rid, r.type FROM resource r WHERE {' AND '.join(conds)}", [
        ctype, *args,
    ]  # fmt: skip


def resources(session: Session, rids: Iterable[int]) -> list[Entry]:
    """(rid, type, id, json) of these rows, in the order given."""
    wanted = list(rids)
    if not wanted:
        return []
    found = {
        r[0]: (r[0], r[1], r[2], r[3])
        for r in session.query(
            "SELECT rid, type, id, json FROM resource WHERE rid IN "
            "(SELECT value FROM json_each(?)) AND deleted = 0",
            [orjson.dumps(wanted).decode()],
        )
    }
    return [found[r] for r in wanted if r in found]


def referenced(session: Session, rids: list[int]) -> set[int]:
    """Row ids of the current resources these rows refer to."""
    if not rids:
        return set()
    return {
        r[0]
        for r in session.query(
            "SELECT t.rid FROM idx_reference i "
            "JOIN resource t ON t.type = i.target_type AND t.id = i.target_id "
            "AND t.deleted = 0 WHERE i.rid IN (SELECT value FROM json_each(?))",
            [orjson.dumps(rids).decode()],
        )
    }


def by_ids(session: Session, rtype: str, ids: Iterable[str]) -> list[Entry]:
    """(rid, type, id, json) of the current resources of `rtype` with these ids."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return [
        (r[0], r[1], r[2], r[3])
        for r in session.query(
            "SELECT rid, type, id, json FROM resource WHERE type = ? AND deleted = 0 AND id IN "
            "(SELECT value FROM json_each(?))",
            [rtype, orjson.dumps(wanted).decode()],
        )
    ]


def linked_patients(session: Session, start: str, limit: int) -> list[str]:
    """The Patients joined to `start` by Patient.link, in either direction and through other
    linked records (one person's records), `start` first; at most `limit`."""
    seen = [start]
    frontier = [start]
    while frontier and len(seen) < limit:
        marks = orjson.dumps(frontier).decode()
        rows = session.query(
            # links the frontier's records hold, and links other records hold to them
            "SELECT i.target_id FROM idx_reference i JOIN resource p ON p.rid = i.rid "
            "WHERE p.type = 'Patient' AND p.deleted = 0 AND p.id IN "
            "(SELECT value FROM json_each(?)) AND i.param = 'link' "
            "AND i.target_type = 'Patient' "
            "UNION SELECT p.id FROM idx_reference i JOIN resource p ON p.rid = i.rid "
            "WHERE i.type = 'Patient' AND i.param = 'link' AND i.target_type = 'Patient' "
            "AND i.target_id IN (SELECT value FROM json_each(?)) AND p.deleted = 0",
            [marks, marks],
        )
        frontier = [r[0] for r in rows if r[0] not in seen]
        seen += frontier
    return seen[:limit]
