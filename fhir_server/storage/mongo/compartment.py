"""Compartments as a whole on MongoDB (the contract's compartment block; sqlite/compartment.py
is the reference): one indexed query per branch on its type's collection (the `x_reference`
multikey index: the same membership lookup SQLite makes), the row number `rid` as the order
and the page key, and (row, type) pairs to fetch by, since each type has its collection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..compartment import Branch, Entry, Member, Window
from .search import Compiler, Filter

if TYPE_CHECKING:
    from .store import MongoSession


def members(
    session: MongoSession,
    base_url: str,
    ctype: str,
    owners: list[str],
    branches: list[Branch],
    window: Window,
) -> list[Member]:
    compiler = Compiler(session, base_url)
    found: list[Member] = []
    for b in branches:
        where = _branch(compiler, ctype, owners, b, window)
        kind = 0 if b.rtype == ctype else 1
        docs = session.db[b.rtype].find(where, {"rid": 1}, session=session.s)
        found += [(kind, d["rid"], b.rtype) for d in docs]
    found.sort()
    return found


def _branch(compiler: Compiler, ctype: str, owners: list[str], b: Branch, window: Window) -> Filter:
    member: list[Filter] = []
    if b.params:
        ref = {"p": {"$in": list(b.params)}, "target_type": ctype, "target_id": {"$in": owners}}
        member.append({"x.reference": {"$elemMatch": ref}})
    if b.owners:
        member.append({"_id": {"$in": owners}})
    parts: list[Filter] = [compiler.where(b.rtype, list(b.clauses))]
    parts.append(member[0] if len(member) == 1 else {"$or": member})
    if window.since is not None:
        parts.append({"lu": {"$gt": window.since}})
    if b.care_date and (window.low is not None or window.high is not None):
        # kept without a care date: unknown, not outside (sqlite/compartment.py)
        overlap = {"p": b.care_date, "high": {"$gte": window.low or ""}}
        overlap["low"] = {"$lte": window.high or "\uffff"}
        parts.append(
            {"$or": [{"x.date.p": {"$ne": b.care_date}}, {"x.date": {"$elemMatch": overlap}}]}
        )
    return {"$and": parts}


def resources(session: MongoSession, wanted: list[tuple[int, str]]) -> list[Entry]:
    """(row, type, id, json) of these current (row, type)s, in the order given."""
    by_type: dict[str, list[int]] = {}
    for rid, rtype in wanted:
        by_type.setdefault(rtype, []).append(rid)
    found: dict[int, Entry] = {}
    for rtype, rids in by_type.items():
        docs = session.db[rtype].find(
            {"rid": {"$in": rids}, "del": False}, {"rid": 1, "json": 1}, session=session.s
        )
        for d in docs:
            found[d["rid"]] = (d["rid"], rtype, d["_id"], bytes(d["json"]))
    return [found[rid] for rid, _ in wanted if rid in found]


def referenced(
    session: MongoSession, wanted: list[tuple[int, str]], exclude: set[int]
) -> list[Entry]:
    """The current resources these rows refer to (any reference parameter), by row."""
    by_type: dict[str, list[int]] = {}
    for rid, rtype in wanted:
        by_type.setdefault(rtype, []).append(rid)
    targets: dict[str, set[str]] = {}
    for rtype, rids in by_type.items():
        docs = session.db[rtype].find({"rid": {"$in": rids}}, {"x.reference": 1}, session=session.s)
        for d in docs:
            for r in d.get("x", {}).get("reference", ()):
                if r.get("target_type") and r.get("target_id"):
                    targets.setdefault(r["target_type"], set()).add(r["target_id"])
    out = [e for t, ids in targets.items() for e in by_ids(session, t, ids) if e[0] not in exclude]
    out.sort()
    return out


def by_ids(session: MongoSession, rtype: str, ids: Iterable[str]) -> list[Entry]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    docs = session.db[rtype].find(
        {"_id": {"$in": wanted}, "del": False}, {"rid": 1, "json": 1}, session=session.s
    )
    return [(d["rid"], rtype, d["_id"], bytes(d["json"])) for d in docs]


def linked_patients(session: MongoSession, start: str, limit: int) -> list[str]:
    """Patient.link followed both ways, breadth first (sqlite/compartment.py)."""
    patients = session.db["Patient"]
    seen = [start]
    frontier = [start]
    while frontier and len(seen) < limit:
        found: set[str] = set()
        # the links the frontier's records hold
        for d in patients.find(
            {"_id": {"$in": frontier}, "del": False}, {"x.reference": 1}, session=session.s
        ):
            found |= {
                r["target_id"]
                for r in d.get("x", {}).get("reference", ())
                if r["p"] == "link" and r.get("target_type") == "Patient"
            }
        # and the links other records hold to them
        link: dict[str, Any] = {"p": "link", "target_type": "Patient"}
        link["target_id"] = {"$in": frontier}
        found |= {
            d["_id"]
            for d in patients.find(
                {"x.reference": {"$elemMatch": link}, "del": False}, {"_id": 1}, session=session.s
            )
        }
        frontier = sorted(found - set(seen))
        seen += frontier
    return seen[:limit]
