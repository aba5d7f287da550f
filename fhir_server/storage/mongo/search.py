"""The search AST (search/query.py) compiled to MongoDB filters over the embedded index
section, with the same semantics as the SQLite compiler (storage/sqlite/search.py), which is
the reference: each SQLite condition on an index row becomes an `$elemMatch` on the same
columns. Chains, `_has` and `_list` resolve their inner side first (an indexed query on the
other collection) and match its ids with `$in`: that keeps each step on one collection's
indexes, and works the same on a sharded cluster, where `$lookup` into a sharded collection
scatters to every shard (README, MongoDB).

The consortium rule's patient-set narrowing (`Clause.patients`) is consortium.py's."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...errors import error
from ...search import pinyin
from ...search.fulltext import MAX_TERM_LENGTH, MAX_TERMS
from ...search.paging import Cursor
from ...search.query import (
    Clause,
    Param,
    PatientSet,
    Query,
    split_composite,
    split_escaped,
    split_prefix,
    split_token,
    unescape,
)
from ...search.ucum import UCUM, factor
from ...search.values import date_bounds, normalize_string, number_bounds
from ...spec import RESOURCE_TYPES
from ..contract import Page
from ..include import Include, iterate
from .consortium import Narrowing

if TYPE_CHECKING:
    from .store import MongoSession

Filter = dict[str, Any]
NOTHING: Filter = {"_id": {"$in": []}}
#: the most ids a chain, `_has` or `_list` carries from its inner side into `$in`
MAX_INNER = 100_000


def _regex(text: str, anchored: bool = False, ignore_case: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"$regex": ("^" if anchored else "") + re.escape(text)}
    if ignore_case:
        out["$options"] = "i"
    return out


def _range(prefix: str, low: str, high: str, qlo: Any, qhi: Any) -> Filter:
    """search.html#prefix over [low, high] ranges (sqlite/search.py _range_condition)."""
    if prefix == "eq":
        return {low: {"$gte": qlo, "$lte": qhi}, high: {"$lte": qhi}}
    if prefix == "ne":
        return {"$nor": [{low: {"$gte": qlo}, high: {"$lte": qhi}}]}
    if prefix == "gt":
        return {high: {"$gt": qhi}}
    if prefix == "lt":
        return {low: {"$lt": qlo}}
    if prefix == "ge":
        return {high: {"$gte": qlo}}
    if prefix == "le":
        return {low: {"$lte": qhi}}
    if prefix == "sa":
        return {low: {"$gt": qhi}}
    if prefix == "eb":
        return {high: {"$lt": qlo}}
    return {low: {"$lte": qhi}, high: {"$gte": qlo}}


def _date(value: str, low: str, high: str, code: str) -> Filter:
    prefix, v = split_prefix(value)
    try:
        qlo, qhi = date_bounds(v)
    except ValueError:
        raise error(400, "invalid", f"Invalid date '{v}'", code) from None
    return _range(prefix, low, high, qlo, qhi)


def _finite(v: str, code: str, what: str) -> tuple[float, float]:
    try:
        lo, hi = number_bounds(v)
        float(v)
    except ValueError:
        raise error(400, "invalid", f"Invalid {what} '{v}'", code) from None
    if lo in (float("inf"), float("-inf")) or hi in (float("inf"), float("-inf")):
        raise error(400, "invalid", f"Invalid {what} '{v}'", code)
    return lo, hi


def _approximate(v: float, qlo: float, qhi: float) -> tuple[float, float]:
    margin = abs(v) * 0.1
    return min(qlo, v - margin), max(qhi, v + margin)


def _number(value: str, code: str) -> Filter:
    prefix, v = split_prefix(value)
    qlo, qhi = _finite(v, code, "number")
    exact = float(v)
    if prefix == "eq":
        return {"low": {"$gte": qlo}, "high": {"$lt": qhi}}
    if prefix == "ne":
        return {"$nor": [{"low": {"$gte": qlo}, "high": {"$lt": qhi}}]}
    if prefix == "ap":
        qlo, qhi = _approximate(exact, qlo, qhi)
        return {"low": {"$lte": qhi}, "high": {"$gte": qlo}}
    column, op = {
        "gt": ("high", "$gt"), "lt": ("low", "$lt"), "ge": ("high", "$gte"),
        "le": ("low", "$lte"), "sa": ("low", "$gt"), "eb": ("high", "$lt"),
    }[prefix]  # fmt: skip
    return {column: {op: exact}}


def _quantity(value: str, p: Param) -> Filter:
    code, names = p.code, list(p.names)
    parts = [unescape(part) for part in split_escaped(value, "|", 2)]
    text, system, unit = (parts + ["", ""])[:3]
    prefix, v = split_prefix(text)
    qlo, qhi = _finite(v, code, "quantity")
    if prefix == "ap":
        qlo, qhi = _approximate(float(v), qlo, qhi)
    number = float(v)
    out: Filter = {"p": _one_of(names)}
    canonical = factor(unit) if system == UCUM and unit else None
    if canonical is not None:  # the canonical rows, and those written in the canonical unit
        scale, unit = canonical
        qlo, qhi, number = qlo * scale, qhi * scale, number * scale
        out = {"p": {"$in": [*names, *(f"{n}:canonical" for n in names)]}}
    if prefix == "eq":
        out["value"] = {"$gte": qlo, "$lt": qhi}
    elif prefix == "ap":
        out["value"] = {"$gte": qlo, "$lte": qhi}
    elif prefix == "ne":
        out["$nor"] = [{"value": {"$gte": qlo, "$lt": qhi}}]
    else:
        op = {"gt": "$gt", "sa": "$gt", "lt": "$lt", "eb": "$lt", "ge": "$gte", "le": "$lte"}
        out["value"] = {op[prefix]: number}
    if system:
        out["system"] = system
    if canonical is not None:
        out["code"] = unit
    elif unit:
        out["$or"] = [{"code": unit}, {"unit": unit}]
    return out


def _token(p: Param, modifier: str | None, v: str) -> Filter:
    if modifier == "text":
        return {"text": _regex(unescape(v))}
    if modifier == "of-type":
        parts = [unescape(part) for part in split_escaped(v, "|")]
        if len(parts) != 3:
            raise error(400, "invalid", ":of-type takes system|code|value", p.code)
        return {"system": parts[0], "code": parts[1], "text": parts[2]}
    system, code = split_token(v)
    if system is None:
        return {"code": code}
    if code == "":
        return {"system": system}
    if system == "":
        return {"code": code, "system": None}
    return {"code": code, "system": system}


def _codes(codes: tuple[tuple[str, str], ...]) -> Filter | None:
    if not codes:
        return None
    by_system: dict[str, list[str]] = {}
    for system, code in codes:
        by_system.setdefault(system, []).append(code)
    return {"$or": [{"system": s, "code": {"$in": c}} for s, c in by_system.items()]}


def _check_terms(c: Clause) -> None:
    name = f"{c.param.code}:{c.modifier}" if c.modifier else c.param.code
    if len(c.values) > MAX_TERMS:
        raise error(400, "too-costly", f"'{name}' takes at most {MAX_TERMS} values", name)
    if any(len(v) > MAX_TERM_LENGTH for v in c.values):
        raise error(
            400, "too-costly", f"'{name}' values may be at most {MAX_TERM_LENGTH} characters", name
        )


def _one_of(names: list[str]) -> Any:
    return names[0] if len(names) == 1 else {"$in": names}


def _any(filters: list[Filter]) -> Filter:
    return filters[0] if len(filters) == 1 else {"$or": filters}


class Compiler:
    """Clauses -> a filter on one type's collection (every backend query has a type: system
    searches run per type and merge)."""

    def __init__(self, session: MongoSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"
        #: the patients each PatientSet sees, computed once per search (consortium.py)
        self._narrowing: dict[PatientSet, Narrowing] = {}

    def where(self, rtype: str, clauses: list[Clause]) -> Filter:
        parts: list[Filter] = [{"del": False}]
        parts += [self.clause(rtype, c) for c in clauses]
        return {"$and": parts} if len(parts) > 1 else parts[0]

    def clause(self, rtype: str, c: Clause) -> Filter:
        if c.patients is not None:
            if c.patients not in self._narrowing:
                self._narrowing[c.patients] = Narrowing(self.session, c.patients)
            return self._narrowing[c.patients].filter(rtype)
        if c.param.type == "composite" and c.chain is None and c.has is None:
            return self._composite(c)
        if c.compartment is not None:
            ctype, cid, params = c.compartment
            ors: list[Filter] = []
            if params:
                ors.append(
                    {
                        "x.reference": {
                            "$elemMatch": {
                                "p": {"$in": list(params)},
                                "target_type": ctype,
                                "target_id": cid,
                            }
                        }
                    }
                )
            if rtype == ctype:
                ors.append({"_id": cid})
            return _any(ors) if ors else NOTHING
        if c.by_type is not None:
            branch = [clauses for t, clauses in c.by_type if t == rtype]
            return self.where(rtype, list(branch[0])) if branch else NOTHING
        if c.has is not None:
            return {"_id": {"$in": self._has_targets(rtype, c)}}
        if c.chain is not None:
            return self._chain(c)
        p = c.param
        if p.code == "_id":
            ids = [unescape(v) for v in c.values]
            return {"_id": {"$nin" if c.modifier == "not" else "$in": ids}}
        if p.code in ("_text", "_content"):
            _check_terms(c)
            field = "ftn" if p.code == "_text" else "ftc"
            found = _any([{field: _regex(normalize_string(unescape(v)))} for v in c.values])
            return {"$nor": [found]} if c.modifier == "not" else found
        if p.code == "_list":
            return {"_id": {"$in": self._list(rtype, c)}}
        if p.code == "_lastUpdated":
            return _any([_date(unescape(v), "lu", "lu", "_lastUpdated") for v in c.values])
        table = p.type
        if c.modifier == "missing":
            if c.values[0] not in ("true", "false"):
                raise error(400, "invalid", ":missing takes true or false", p.code)
            names = self._scope(p)
            if c.values[0] == "true":
                return {f"x.{table}.p": {"$nin": names}}
            return {f"x.{table}.p": {"$in": names}}
        lookup = self._lookup(c)
        return {"$nor": [lookup]} if c.modifier == "not" else lookup

    def _composite(self, c: Clause) -> Filter:
        """Every component matched by a row of the same group (sqlite: joined on grp); a
        union's parts each on their own."""
        p = c.param
        if p.reads:
            return _any([self._composite(replace(c, param=replace(p, code=part, reads=())))
                          for part in p.reads])  # fmt: skip
        ors: list[Filter] = []
        for value in c.values:
            parts = split_composite(value)
            if len(parts) != len(p.components):
                raise error(400, "invalid",
                            f"'{p.code}' needs {len(p.components)} values separated by '$'",
                            p.code)  # fmt: skip
            group: Filter = {"p": p.code}
            for j, (kind, part) in enumerate(zip(p.components, parts, strict=True)):
                component = Param(f"{p.code}${j}", kind)
                cond = self._value(component, None, part)
                names = self._scope(component)
                if "p" not in cond:
                    cond = {"p": _one_of(names), **cond}
                group[f"c{j}"] = {"$elemMatch": cond}
            ors.append({"x.composite": {"$elemMatch": group}})
        return _any(ors)

    def _scope(self, p: Param, also: str | None = None) -> list[str]:
        """The rows' parameter names: its own, or its parts' (a union); quantities' canonical
        rows too; `also` (a name's pinyin)."""
        names = list(p.names)
        if p.type == "quantity":
            names += [f"{n}:canonical" for n in p.names]
        return names if also is None else [*names, also]

    def _lookup(self, c: Clause) -> Filter:
        """Some index row of the parameter matches one of the values."""
        p = c.param
        table = p.type
        names = self._scope(p)
        if c.modifier == "identifier":
            table, p = "token", Param(p.code, "token")
            names = [p.code]
        elif c.modifier == "of-type":
            names = [f"{n}:of-type" for n in p.names]
        elif p.type == "string" and c.modifier is None and _pinyin(c.values):
            names = self._scope(p, also=p.code + pinyin.SUFFIX)
        if p.type == "token" and c.modifier in ("in", "not-in", "below", "above"):
            raise error(400, "not-supported", f":{c.modifier} is not supported here", p.code)
        scope: Filter = {"p": _one_of(names)}
        if c.codes is not None:
            cond = _codes(c.codes)
            if cond is None:
                return NOTHING
            return {f"x.{table}": {"$elemMatch": {**scope, **cond}}}
        modifier = None if c.modifier == "not" else c.modifier
        ors = []
        for v in c.values:
            cond = self._value(p, modifier, v)
            if "p" in cond:  # quantities choose their rows (canonical or as written)
                ors.append({f"x.{table}": {"$elemMatch": cond}})
            else:
                ors.append({f"x.{table}": {"$elemMatch": {**scope, **cond}}})
        return _any(ors)

    def _value(self, p: Param, modifier: str | None, v: str) -> Filter:
        kind = p.type
        if kind == "token":
            return _token(p, modifier, v)
        if kind == "quantity":
            return _quantity(v, p)
        v = unescape(v)
        if kind == "string":
            if modifier == "exact":
                return {"original": v}
            norm = normalize_string(v)
            if modifier == "contains":
                return {"value": _regex(norm)}
            return {"value": {"$gte": norm, "$lt": norm + "\U0010ffff"}}
        if kind == "reference":
            return self._reference(modifier, v)
        if kind == "date":
            return _date(v, "low", "high", p.code)
        if kind == "number":
            return _number(v, p.code)
        if kind == "uri":
            if modifier == "below":
                return {"value": _regex(v, anchored=True)}
            if modifier == "above":
                return {"value": {"$in": [v[:n] for n in range(1, len(v) + 1)]}}
            return {"value": v}
        raise error(400, "not-supported", f"Search parameter type '{kind}' is not supported")

    def _reference(self, modifier: str | None, v: str) -> Filter:
        if v.startswith(self.base_url):
            v = v[len(self.base_url) :]
        if modifier:
            return {"target_type": modifier, "target_id": v}
        if "://" in v or v.startswith("urn:"):
            if "|" in v:
                return {"url": v}
            return {"$or": [{"url": v}, {"url": _regex(v + "|", anchored=True)}]}
        parts = v.split("/")
        if len(parts) == 2:
            return {"target_type": parts[0], "target_id": parts[1]}
        if len(parts) == 4 and parts[2] == "_history":
            return {"target_type": parts[0], "target_id": parts[1]}
        return {"target_id": v}

    def _ids(self, rtype: str, where: Filter) -> list[str]:
        found = self.session.db[rtype].find(where, {"_id": 1}, session=self.session.s)
        ids = [d["_id"] for d in found.limit(MAX_INNER + 1)]
        if len(ids) > MAX_INNER:
            raise error(400, "too-costly", f"The inner search matched over {MAX_INNER} {rtype}")
        return ids

    def _chain(self, c: Clause) -> Filter:
        """`subject:Patient.name=x`: references to the targets matching the inner clause."""
        assert c.chain is not None and c.target_type is not None
        ids = self._ids(c.target_type, self.where(c.target_type, [c.chain]))
        match = {"p": c.param.code, "target_type": c.target_type, "target_id": {"$in": ids}}
        return {"x.reference": {"$elemMatch": match}}

    def _has_targets(self, rtype: str, c: Clause) -> list[str]:
        """`_has:Observation:patient:code=x`: the ids the matching Observations refer to."""
        assert c.has is not None
        other, ref, inner = c.has
        where = {"$and": [self.where(other, [inner]), {"x.reference.p": ref}]}
        found = self.session.db[other].find(where, {"x.reference": 1}, session=self.session.s)
        out: set[str] = set()
        for d in found.limit(MAX_INNER + 1):
            for r in d["x"].get("reference", ()):
                if r["p"] == ref and r.get("target_type") == rtype:
                    out.add(r["target_id"])
        return sorted(out)

    def _list(self, rtype: str, c: Clause) -> list[str]:
        ids = [unescape(v).removeprefix("List/") for v in c.values]
        found = self.session.db["List"].find(
            {"_id": {"$in": ids}, "del": False}, {"x.reference": 1}, session=self.session.s
        )
        return sorted(
            {
                r["target_id"]
                for d in found
                for r in d.get("x", {}).get("reference", ())
                if r["p"] == "item" and r.get("target_type") == rtype
            }
        )


def _pinyin(values: tuple[str, ...]) -> bool:
    return any(pinyin.romanised(normalize_string(v)) for v in values)


# --- sort and keyset paging ----------------------------------------------------------------


def _sort_fields(query: Query) -> list[tuple[str, str | None, bool]]:
    """(value field, presence field or None, descending) per sort key, then rid."""
    out: list[tuple[str, str | None, bool]] = []
    for param, desc in query.sort:
        if param.code == "_id":
            out.append(("_id", None, desc))
        elif param.code == "_lastUpdated":
            out.append(("lu", None, desc))
        elif param.reads:  # no sort values of its own (search/unions.py)
            raise error(400, "not-supported", f"Cannot sort by '{param.code}' on MongoDB: it "
                        f"is the union of {', '.join(param.reads)}; sort by one of those",
                        "_sort")  # fmt: skip
        elif param.type in ("string", "token", "reference", "date", "number", "quantity"):
            out.append((f"k.{param.code}.{'hi' if desc else 'lo'}", f"k.{param.code}.n", desc))
        else:
            raise error(400, "not-supported", f"Cannot sort by '{param.code}'", "_sort")
    out.append(("rid", None, False))
    return out


def _order(fields: list[tuple[str, str | None, bool]], forward: bool) -> list[tuple[str, int]]:
    """Missing values last going forward (as SQLite's NULLS LAST), the exact reverse back."""
    spec: list[tuple[str, int]] = []
    for field, present, desc in fields:
        if present is not None:
            spec.append((present, -1 if forward else 1))
        spec.append((field, (-1 if desc else 1) * (1 if forward else -1)))
    return spec


def _after(fields: list[tuple[str, str | None, bool]], cursor: Cursor) -> Filter:
    """The documents strictly beyond the cursor (search/paging.py `after`, as a filter)."""
    if len(cursor.values) != len(fields):
        raise error(400, "invalid", "Page cursor does not fit this search", "_page")
    ors: list[Filter] = []
    same: list[Filter] = []
    for (field, present, desc), value in zip(fields, cursor.values, strict=True):
        if value is None:
            if present is None:
                raise error(400, "invalid", "Page cursor does not fit this search", "_page")
            if not cursor.forward:
                ors.append({"$and": [*same, {present: {"$exists": True}}]})
            same.append({present: {"$exists": False}})
            continue
        greater = (not desc) == cursor.forward
        op = "$gt" if greater else "$lt"
        beyond: Filter = {field: {op: value}}
        if cursor.forward and present is not None:
            beyond = {"$or": [beyond, {present: {"$exists": False}}]}
        ors.append({"$and": [*same, beyond]})
        same.append({field: value})
    return {"$or": ors} if ors else NOTHING


def _key(doc: dict[str, Any], fields: list[tuple[str, str | None, bool]]) -> tuple[Any, ...]:
    out = []
    for field, _, _ in fields:
        value: Any = doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out.append(value)
    return tuple(out)


def _compare(
    fields: list[tuple[str, str | None, bool]],
    forward: bool,
    a: tuple[Any, ...],
    b: tuple[Any, ...],
) -> int:
    """Two rows' keys in page order (system searches merge the pages of several types)."""
    for (_, _, desc), x, y in zip(fields, a, b, strict=True):
        if x == y:
            continue
        if x is None or y is None:
            result = 1 if x is None else -1
        else:
            result = (1 if x > y else -1) * (-1 if desc else 1)
        return result if forward else -result
    return 0


def _compare_rows(fields: list[tuple[str, str | None, bool]], forward: bool) -> Any:
    return lambda a, b: _compare(fields, forward, a, b)


def _types(session: MongoSession, query: Query) -> list[str]:
    """The collections a search reads: its type, its `_type` list, or every type holding a
    document (counted from collection metadata, outside any transaction, where counting
    commands are not allowed)."""
    if query.rtype is not None:
        return [query.rtype]
    if query.types:
        return list(query.types)
    return [t for t in sorted(RESOURCE_TYPES) if session.db[t].estimated_document_count()]


def run_search(
    session: MongoSession, base_url: str, query: Query, cursor: Cursor | None, count_only: bool
) -> Page:
    """One page: per type, the filter, the keyset condition, the sort, count + 1 documents;
    several types (a system search) merge in key order."""
    compiler = Compiler(session, base_url)
    fields = _sort_fields(query)
    forward = cursor is None or cursor.forward
    out = Page()
    wheres = {t: compiler.where(t, query.clauses) for t in _types(session, query)}
    if query.total != "none" or count_only:
        out.total = sum(
            session.db[t].count_documents(w, session=session.s) for t, w in wheres.items()
        )
    if count_only:
        return out
    limit = query.count + 1
    found: list[tuple[tuple[Any, ...], str, dict[str, Any]]] = []
    for rtype, where in wheres.items():
        if cursor is not None:
            where = {"$and": [where, _after(fields, cursor)]}
        docs = (
            session.db[rtype]
            .find(where, {"x": 0}, session=session.s)
            .sort(_order(fields, forward))
            .limit(limit)
        )
        found += [(_key(d, fields), rtype, d) for d in docs]
    if len(wheres) > 1:
        order = functools.cmp_to_key(_compare_rows(fields, forward))
        found.sort(key=lambda row: order(row[0]))
    found = found[:limit]
    out.more = len(found) > query.count
    found = found[: query.count]
    if not forward:
        found.reverse()
    out.rows = [(d["rid"], t, d["_id"], bytes(d["json"]), *k) for k, t, d in found]
    return out


def includes(
    session: MongoSession, query: Query, matches: list[tuple[str, str]]
) -> list[tuple[str, str, bytes]]:
    """_include / _revinclude targets of the page's matches (storage/include.py iterates)."""
    return iterate(query, matches, functools.partial(_include_round, session))


def _include_round(
    session: MongoSession,
    frontier: list[tuple[str, str]],
    incs: list[Include],
    revs: list[Include],
) -> list[tuple[tuple[str, str], bytes]]:
    """One round: what the frontier's references name, and what refers to the frontier."""
    db, s = session.db, session.s
    found: list[tuple[tuple[str, str], bytes]] = []
    by_type: dict[str, list[str]] = {}
    for t, i in frontier:
        by_type.setdefault(t, []).append(i)
    for source, code, target, _ in incs:
        targets: dict[str, set[str]] = {}
        refs = db[source].find(
            {"_id": {"$in": by_type.get(source, [])}}, {"x.reference": 1}, session=s
        )
        for d in refs:
            for r in d.get("x", {}).get("reference", ()):
                tt = r.get("target_type")
                if r["p"] == code and tt and (not target or tt == target):
                    targets.setdefault(tt, set()).add(r["target_id"])
        for tt, ids in targets.items():
            docs = db[tt].find({"_id": {"$in": sorted(ids)}, "del": False}, {"x": 0}, session=s)
            found += [((tt, d["_id"]), bytes(d["json"])) for d in docs]
    for source, code, _target, _ in revs:
        ors = [
            {
                "x.reference": {
                    "$elemMatch": {"p": code, "target_type": t, "target_id": {"$in": ids}}
                }
            }
            for t, ids in by_type.items()
        ]
        docs = db[source].find({"del": False, "$or": ors}, {"x": 0}, session=s)
        found += [((source, d["_id"]), bytes(d["json"])) for d in docs]
    return found
