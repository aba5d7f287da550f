"""Query AST -> SQL over the SQLite index tables. Every filter runs in SQL, none in Python."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ...errors import error
from ...search import pinyin
from ...search import query as q
from ...search.fulltext import MAX_TERM_LENGTH, MAX_TERMS
from ...search.paging import Cursor, SortKey, after, order_by
from ...search.query import (
    SPECIAL,
    Clause,
    Param,
    Query,
    split_composite,
    split_escaped,
    split_prefix,
    split_token,
    unescape,
)
from ...search.ucum import UCUM, factor
from ...search.values import date_bounds, normalize_string, number_bounds
from ..include import Include, iterate
from .store import Session

SPECIAL_CODES = frozenset(SPECIAL)
_SORT_COLUMN = {
    "string": "value",
    "token": "code",
    "reference": "target_id",
    "date": "low",
    "number": "low",
    "quantity": "value",
    "uri": "value",
}


@dataclass(frozen=True)
class SortWalk:
    """Reading a search's order straight from one index table (see Compiler.sort_walk)."""

    table: str
    column: str
    desc: bool
    code: str


class Compiler:
    """Builds one WHERE condition per clause with its bound arguments.

    The base URL lets absolute references to this server match relative ones.
    """

    def __init__(self, base_url: str, types: tuple[str, ...] = ()) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        #: system search: the `_type` list, which scopes index lookups made without a type
        self.types = types

    def _scope(self, rtype: str | None, p: Param, also: str | None = None) -> tuple[str, list[Any]]:
        if rtype is None and self.types:
            head, args = _scope(None, p, also)
            marks = ", ".join("?" * len(self.types))
            return f"type IN ({marks}) AND {head}", [*self.types, *args]
        return _scope(rtype, p, also)

    def where(self, rtype: str | None, clauses: list[Clause], alias: str = "r") -> tuple[str, list]:
        """All clauses ANDed. When one of them selects row ids from an index, SQLite must
        drive the query from it: the unary `+` keeps it off the (type, deleted) index, which
        would otherwise make it visit every resource of the type."""
        parts: list[str] = []
        args: list[Any] = []
        for clause in clauses:
            sql, a = self.clause(rtype, clause, alias)
            parts.append(sql)
            args += a
        plus = "+" if any(p.startswith(f"{alias}.rid IN (") for p in parts) else ""
        head = [f"{plus}{alias}.deleted = 0"]
        head_args: list[Any] = []
        if rtype is not None:
            head.append(f"{plus}{alias}.type = ?")
            head_args.append(rtype)
        return " AND ".join(head + parts), head_args + args

    def clause(self, rtype: str | None, c: Clause, alias: str) -> tuple[str, list]:
        sub = self.rid_subquery(rtype, c, alias)
        if sub is not None:
            return f"{alias}.rid IN ({sub[0]})", sub[1]
        if c.compartment is not None:
            return self._compartment(rtype, c.compartment, alias)
        if c.patients is not None:
            return _in_patient_set(rtype, c.patients, alias)
        if c.by_type is not None:
            return self._by_type(c.by_type, alias)
        if c.has is not None:
            return self._has(rtype, c, alias)
        p = c.param
        if p.code == "_id":
            return self._id(c, alias)
        if p.code in ("_text", "_content"):
            return self._fulltext(c, alias)
        if p.code == "_list":
            return self._list(c, alias)
        if p.code == "_lastUpdated":
            col = f"{alias}.last_updated"
            ors, args = [], []
            for v in c.values:
                sql, a = _date_condition(unescape(v), col, col, "_lastUpdated")
                ors.append(sql)
                args += a
            return "(" + " OR ".join(ors) + ")", args
        table = f"idx_{p.type}"
        scope, scope_args = self._scope(rtype, p)
        if c.modifier == "missing":
            if c.values[0] not in ("true", "false"):
                raise error(400, "invalid", ":missing takes true or false", p.code)
            neg = "NOT " if c.values[0] == "true" else ""
            return (
                f"{neg}EXISTS (SELECT 1 FROM {table} i WHERE i.rid = {alias}.rid AND i.{scope})",
                scope_args,
            )
        assert c.modifier == "not"
        sub = self._index_lookup(rtype, c)
        return f"{alias}.rid NOT IN ({sub[0]})", sub[1]

    def rid_subquery(self, rtype: str | None, c: Clause, alias: str) -> tuple[str, list] | None:
        """For clauses that select matches straight from the index tables, the subquery
        giving their row ids, else None. Index rows exist only for current, undeleted
        resources, so with a type these ids need no check against the resource table."""
        if c.compartment is not None or c.by_type is not None or c.patients is not None:
            return None
        if c.has is not None:
            return self._has_targets(rtype, c, alias) if rtype else None
        if c.chain is not None:
            return self._chain(rtype, c, alias)
        p = c.param
        if p.code in SPECIAL_CODES or c.modifier in ("missing", "not"):
            return None
        if p.type == "composite":
            return self._composite(rtype, c)
        return self._index_lookup(rtype, c)

    def correlated(self, rtype: str | None, c: Clause, alias: str) -> tuple[str, list] | None:
        """A plain index lookup as a condition on one given row (EXISTS through the rid
        index), for when checking candidate rows one by one beats listing every match."""
        if c.chain or c.has or c.compartment or c.by_type or c.patients:
            return None
        if c.param.code in SPECIAL_CODES:
            return None
        if c.modifier in ("missing", "not") or c.param.type == "composite":
            return None
        sub, args = self._index_lookup(rtype, c)
        head, _, rest = sub.partition(" WHERE ")
        table = head.removeprefix("SELECT rid FROM ")
        return (
            f"EXISTS (SELECT 1 FROM {table} INDEXED BY {table}_rid "
            f"WHERE rid = {alias}.rid AND {rest})",
            args,
        )

    def _index_lookup(self, rtype: str | None, c: Clause) -> tuple[str, list]:
        p = c.param
        table = f"idx_{p.type}"
        scope, scope_args = self._scope(rtype, p)
        if c.modifier == "identifier":  # Reference.identifier rows live in the token table
            table, p = "idx_token", Param(p.code, "token")
        elif c.modifier == "of-type":
            of_type = tuple(f"{n}:of-type" for n in p.names)
            scope, scope_args = self._scope(rtype, Param(of_type[0], "token", reads=of_type))
        elif p.type == "string" and c.modifier is None and _pinyin_values(c.values):
            scope, scope_args = self._scope(rtype, p, also=p.code + pinyin.SUFFIX)
        if p.type == "token" and c.modifier in ("in", "not-in", "below", "above"):
            # only search/codes.py can resolve these; a path that skipped it must not guess
            raise error(400, "not-supported", f":{c.modifier} is not supported here", p.code)
        if c.codes is not None:
            cond, args = _codes_condition(c.codes)
            return f"SELECT rid FROM {table} WHERE {scope} AND {cond}", scope_args + args
        ors, args = [], []
        for v in c.values:
            sql, a = self._value(p, None if c.modifier == "not" else c.modifier, v)
            ors.append(sql)
            args += a
        cond = " OR ".join(f"({o})" for o in ors)
        return f"SELECT rid FROM {table} WHERE {scope} AND ({cond})", scope_args + args

    def source(
        self, rtype: str | None, clauses: list[Clause], needs_resource: bool
    ) -> tuple[str, str, list]:
        """(relation, condition, args) to select the matches from: the intersection of the
        clauses' index lookups when every clause is one (no resource rows touched), else the
        resource table with all conditions."""
        subs: list[str] = []
        sub_args: list[Any] = []
        for c in clauses if rtype and not needs_resource else ():
            sub = self.rid_subquery(rtype, c, "r")
            if sub is None:
                break
            subs.append(sub[0])
            sub_args += sub[1]
        else:
            if subs:
                if len(subs) == 1:
                    return f"(SELECT DISTINCT rid FROM ({subs[0]}))", "1", sub_args
                return "(" + " INTERSECT ".join(subs) + ")", "1", sub_args
        where, args = self.where(rtype, clauses)
        return "resource", where, args

    def _id(self, c: Clause, alias: str) -> tuple[str, list]:
        marks = ", ".join("?" * len(c.values))
        neg = "NOT " if c.modifier == "not" else ""
        return f"{alias}.id {neg}IN ({marks})", [unescape(v) for v in c.values]

    def _composite(self, rtype: str | None, c: Clause) -> tuple[str, list]:
        """Each component matched in its own table, joined on the same row and group (a
        union's parts each on their own: their group numbers are their own)."""
        p = c.param
        if p.reads:
            each = [self._composite(rtype, replace(c, param=replace(p, code=part, reads=())))
                    for part in p.reads]  # fmt: skip
            return " UNION ".join(sql for sql, _ in each), [a for _, args in each for a in args]
        ors, args = [], []
        for value in c.values:
            parts = split_composite(value)
            if len(parts) != len(p.components):
                raise error(
                    400,
                    "invalid",
                    f"'{p.code}' needs {len(p.components)} values separated by '$'",
                    p.code,
                )
            subs = []
            for j, (kind, part) in enumerate(zip(p.components, parts, strict=True)):
                component = Param(f"{p.code}${j}", kind)
                cond, a = self._value(component, None, part)
                scope, scope_args = self._scope(rtype, component)
                subs.append(f"(SELECT rid, grp FROM idx_{kind} WHERE {scope} AND ({cond}))")
                args += [*scope_args, *a]
            joins = " ".join(
                f"JOIN {sub} c{j} ON c{j}.rid = c0.rid AND c{j}.grp = c0.grp"
                for j, sub in enumerate(subs[1:], start=1)
            )
            ors.append(f"SELECT c0.rid FROM {subs[0]} c0 {joins}")
        return " UNION ".join(ors), args

    def _list(self, c: Clause, alias: str) -> tuple[str, list]:
        """`_list=id`: the items of List/id (search.html#list)."""
        marks = ", ".join("?" * len(c.values))
        ids = [unescape(v).removeprefix("List/") for v in c.values]
        return (
            f"EXISTS (SELECT 1 FROM idx_reference i JOIN resource l ON l.rid = i.rid "
            f"WHERE l.type = 'List' AND l.deleted = 0 AND l.id IN ({marks}) AND "
            f"i.type = 'List' AND i.param = 'item' AND i.target_type = {alias}.type AND "
            f"i.target_id = {alias}.id)",
            ids,
        )

    def _fulltext(self, c: Clause, alias: str) -> tuple[str, list]:
        """Substring match on the trigram FTS table; LIKE uses the index from 3 characters."""
        column = "narrative" if c.param.code == "_text" else "content"
        _check_terms(c)
        ors = " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for _ in c.values)
        args = [f"%{_like(normalize_string(unescape(v)))}%" for v in c.values]
        neg = "NOT " if c.modifier == "not" else ""
        return f"{alias}.rid {neg}IN (SELECT rowid FROM fulltext WHERE {ors})", args

    def _value(self, p: Param, modifier: str | None, v: str) -> tuple[str, list]:
        """One value of one parameter, still escaped: each type splits it at its own
        separators first, then unescapes the parts (search.html#escaping)."""
        kind = p.type
        if kind == "token":
            return _token_condition(p, modifier, v)
        if kind == "quantity":
            return _quantity_condition(v, p)
        v = unescape(v)
        if kind == "string":
            if modifier == "exact":
                return "original = ?", [v]
            norm = normalize_string(v)
            if modifier == "contains":
                return "value LIKE ? ESCAPE '\\'", [f"%{_like(norm)}%"]
            return "value >= ? AND value < ?", [norm, norm + "\U0010ffff"]
        if kind == "reference":
            return self._reference(p, modifier, v)
        if kind == "date":
            return _date_condition(v, "low", "high", p.code)
        if kind == "number":
            return _number_condition(v, p.code)
        if kind == "uri":
            if modifier == "below":
                return "value LIKE ? ESCAPE '\\'", [_like(v) + "%"]
            if modifier == "above":
                return "? LIKE value || '%'", [v]
            return "value = ?", [v]
        raise error(400, "not-supported", f"Search parameter type '{kind}' is not supported")

    def _reference(self, p: Param, modifier: str | None, v: str) -> tuple[str, list]:
        if v.startswith(self.base_url):
            v = v[len(self.base_url) :]
        if modifier:  # :Type
            return "target_type = ? AND target_id = ?", [modifier, v]
        if "://" in v or v.startswith("urn:"):
            if "|" in v:
                return "url IS NOT NULL AND url = ?", [v]
            return "url IS NOT NULL AND (url = ? OR url LIKE ? ESCAPE '\\')", [v, _like(v) + "|%"]
        parts = v.split("/")
        if len(parts) == 2:  # relative canonicals are indexed with their type and id too
            return "target_type = ? AND target_id = ?", parts
        if len(parts) == 4 and parts[2] == "_history":
            return "target_type = ? AND target_id = ?", parts[:2]
        return "target_id = ?", [v]

    def _chain(self, rtype: str | None, c: Clause, alias: str) -> tuple[str, list]:
        """`subject:Patient.name=x`: references whose target matches the inner clause."""
        assert c.chain is not None and c.target_type is not None
        # aliases derived from the outer one, so nested chains never capture each other's
        t, i = f"{alias}t", f"{alias}i"
        inner_where, inner_args = self.where(c.target_type, [c.chain], alias=t)
        scope = f"{i}.type = ? AND " if rtype else ""
        scope_args = [rtype] if rtype else []
        # CROSS JOIN: drive from the (usually few) matching targets to their referrers
        sql = (
            f"SELECT {i}.rid FROM resource {t} CROSS JOIN idx_reference {i} "
            f"ON {t}.type = {i}.target_type AND {t}.id = {i}.target_id "
            f"WHERE {scope}{i}.param = ? AND {i}.target_type = ? AND {inner_where}"
        )
        return sql, [*scope_args, c.param.code, c.target_type, *inner_args]

    def _compartment(
        self, rtype: str | None, compartment: tuple[str, str, tuple[str, ...]], alias: str
    ) -> tuple[str, list]:
        ctype, cid, params = compartment
        ors, args = [], []
        if params:
            marks = ", ".join("?" * len(params))
            ors.append(
                f"{alias}.rid IN (SELECT rid FROM idx_reference WHERE type = ? AND param IN "
                f"({marks}) AND target_type = ? AND target_id = ?)"
            )
            args += [rtype, *params, ctype, cid]
        if rtype == ctype:
            ors.append(f"{alias}.id = ?")
            args.append(cid)
        return "(" + " OR ".join(ors) + ")", args

    def _by_type(
        self, branches: tuple[tuple[str, tuple[Clause, ...]], ...], alias: str
    ) -> tuple[str, list]:
        """One branch per type, each its own type's conditions (see Clause.by_type)."""
        ors, args = [], []
        for rtype, clauses in branches:
            where, a = self.where(rtype, list(clauses), alias)
            ors.append(f"({where})")
            args += a
        return "(" + " OR ".join(ors) + ")", args

    def _has_targets(self, rtype: str, c: Clause, alias: str) -> tuple[str, list]:
        """`_has` as the row ids of the resources the matching referrers point at, driven
        from the referrers' own lookups (CROSS JOINs keep that order: left to right, SQLite
        would otherwise start from every resource of the target type)."""
        assert c.has is not None
        other, ref, inner = c.has
        o, i, t = f"{alias}o", f"{alias}i", f"{alias}t"
        inner_where, inner_args = self.where(other, [inner], alias=o)
        sql = (
            f"SELECT {t}.rid FROM resource {o} CROSS JOIN idx_reference {i} "
            f"INDEXED BY idx_reference_rid ON {i}.rid = {o}.rid "
            f"CROSS JOIN resource {t} ON {t}.type = {i}.target_type AND {t}.id = {i}.target_id "
            f"WHERE {i}.type = ? AND {i}.param = ? AND {t}.type = ? AND {t}.deleted = 0 "
            f"AND {inner_where}"
        )
        return sql, [other, ref, rtype, *inner_args]

    def _has(self, rtype: str | None, c: Clause, alias: str) -> tuple[str, list]:
        """`_has:Observation:patient:code=x`: resources referred to by matching Observations."""
        assert c.has is not None
        other, ref, inner = c.has
        o, i = f"{alias}o", f"{alias}i"  # unique per nesting level
        inner_where, inner_args = self.where(other, [inner], alias=o)
        sql = (
            f"EXISTS (SELECT 1 FROM idx_reference {i} JOIN resource {o} ON {o}.rid = {i}.rid "
            f"WHERE {i}.type = ? AND {i}.param = ? AND {i}.target_type = {alias}.type "
            f"AND {i}.target_id = {alias}.id AND {inner_where})"
        )
        return sql, [other, ref, *inner_args]

    def sort_walk(self, q: Query) -> SortWalk | None:
        """When the order can be read from one parameter's index (a single `_sort` key on a
        typed search), how to read it; else None."""
        if q.rtype is None or len(q.sort) != 1:
            return None
        param, desc = q.sort[0]
        col = _SORT_COLUMN.get(param.type)
        if col is None or param.code in SPECIAL_CODES or param.type == "quantity" or param.reads:
            return None  # quantities sort on canonical values where they have them, unions on
            # their parts' values (sort_keys)
        return SortWalk(f"idx_{param.type}", col, desc, param.code)

    def sort_keys(self, q: Query, alias: str = "r") -> list[SortKey]:
        """_sort keys (search.html#sort), then the row id so that the order is total."""
        keys = []
        for param, desc in q.sort:
            if param.code == "_id":
                keys.append(SortKey(f"{alias}.id", desc))
            elif param.code == "_lastUpdated":
                keys.append(SortKey(f"{alias}.last_updated", desc))
            else:
                col = _SORT_COLUMN.get(param.type)
                if col is None:
                    raise error(400, "not-supported", f"Cannot sort by '{param.code}'", "_sort")
                agg = "max" if desc else "min"
                names = param.names
                sql = (
                    f"(SELECT {agg}({col}) FROM idx_{param.type} s WHERE s.rid = {alias}.rid "
                    f"AND s.{_param_in(names)})"
                )
                if param.type == "quantity":  # in canonical units where there are some
                    keys.append(SortKey(f"coalesce({sql}, {sql})", desc,
                                        (*(f"{n}:canonical" for n in names), *names)))  # fmt: skip
                    continue
                keys.append(SortKey(sql, desc, names))
        keys.append(SortKey(f"{alias}.rid", False))
        return keys


# --- the consortium rule: the patients an organization may see (security.md §3.2) --------------


def _in_patient_set(rtype: str | None, ps: q.PatientSet, alias: str) -> tuple[str, list]:
    """In the Patient compartment of a patient of `ps`: referring to one through a compartment
    parameter, or (a Patient) being one. Links never widen it."""
    ors, args = [], []
    if ps.params and rtype is not None:
        sees, sees_args = _sees(ps, "x.target_id")
        marks = ", ".join("?" * len(ps.params))
        ors.append(
            f"EXISTS (SELECT 1 FROM idx_reference x WHERE x.rid = {alias}.rid AND x.param IN "
            f"({marks}) AND x.target_type = 'Patient' AND {sees})"
        )
        args += [*ps.params, *sees_args]
        if ps.shared_unless_patient:
            ors.append(
                f"NOT EXISTS (SELECT 1 FROM idx_reference x WHERE x.rid = {alias}.rid AND "
                f"x.param IN ({marks}) AND x.target_type = 'Patient')"
            )
            args += [*ps.params]
    for param, ttype, tparams in ps.through:
        sees, sees_args = _sees(ps, "y.target_id")
        marks = ", ".join("?" * len(tparams))
        ors.append(
            f"EXISTS (SELECT 1 FROM idx_reference w JOIN resource t ON t.type = w.target_type "
            f"AND t.id = w.target_id AND t.deleted = 0 JOIN idx_reference y ON y.rid = t.rid "
            f"WHERE w.rid = {alias}.rid AND w.param = ? AND w.target_type = ? "
            f"AND y.param IN ({marks}) AND y.target_type = 'Patient' AND {sees})"
        )
        args += [param, ttype, *tparams, *sees_args]
    if rtype == "Patient":
        sees, sees_args = _sees(ps, f"{alias}.id")
        ors.append(sees)
        args += sees_args
    sql = "(" + " OR ".join(ors) + ")" if ors else "0"
    if rtype == "Communication":
        for relationship, _ in ps.relationships:
            if relationship.confines_messages:
                thread, thread_args = _outside_thread(ps.organization, relationship, alias)
                sql += f" AND {thread}"
                args += thread_args
    return sql, args


def _outside_thread(organization: str, r: q.CareRelationship, alias: str) -> tuple[str, list]:
    """The Communication `alias` is not part of (Communication.partOf) a Task of relationship
    `r` of which the organization is not a party: a consultation's messages are its
    parties' only."""
    of, of_args = _task_of(r, "t.rid")
    party, party_args = _task_party(organization, "t.rid")
    return (
        "NOT EXISTS (SELECT 1 FROM idx_reference po JOIN resource t ON t.type = 'Task' "
        f"AND t.id = po.target_id AND t.deleted = 0 WHERE po.rid = {alias}.rid "
        f"AND po.param = 'part-of' AND po.target_type = 'Task' AND {of} AND NOT {party})"
    ), [*of_args, *party_args]


def _sees(ps: q.PatientSet, pid: str) -> tuple[str, list]:
    """Whether Organization/ps.organization may see Patient `pid` (an SQL expression): one it
    manages; or one of a care relationship (a Task of ps.relationships) it is a party to or of
    a Consent permitting it, unless a Consent denies it. Every part is a correlated lookup on
    the indexes, so a read costs the same however many patients the organization has."""
    managed = (
        "EXISTS (SELECT 1 FROM resource p JOIN idx_reference m ON m.rid = p.rid "
        f"WHERE p.type = 'Patient' AND p.id = {pid} AND m.param = 'organization' "
        "AND m.target_type = 'Organization' AND m.target_id = ?)"
    )
    shared: list[str] = []
    args: list[Any] = [ps.organization]
    if ps.relationships:  # one probe of the patient's Tasks for every relationship
        holds: list[str] = []
        for relationship, since in ps.relationships:
            sql, holds_args = _care_task(ps, relationship, since, "f.rid")
            holds.append(sql)
            args += holds_args
        shared.append(
            "EXISTS (SELECT 1 FROM idx_reference f WHERE f.type = 'Task' AND "
            f"f.param = 'subject' AND f.target_type = 'Patient' AND f.target_id = {pid} "
            f"AND ({' OR '.join(holds)}))"
        )
    if ps.consents_at is not None:
        permitted, permit_args = _consent(ps.organization, "permit", ps.consents_at, pid)
        shared.append(permitted)
        args += permit_args
    if not shared:
        return managed, args
    either = "(" + " OR ".join(shared) + ")"
    if ps.consents_at is not None:
        denied, deny_args = _consent(ps.organization, "deny", ps.consents_at, pid)
        either = f"({either} AND NOT {denied})"
        args += deny_args
    return f"({managed} OR {either})", args


#: Consent.scope of the Consents the consortium rule reads (consentscope: privacy consent)
_PRIVACY = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")


def _consent(organization: str, decision: str, at: str, pid: str) -> tuple[str, list]:
    """Whether Patient `pid` has a Consent in force at `at` (status active, scope
    patient-privacy, `at` within provision.period) whose root provision.type is `decision`
    and that binds the organization: a permit names it as provision.actor and covers the
    whole record (no provision-limited value); a deny names it, or names no Organization or
    PractitionerRole at all (it binds everyone then)."""
    names, names_args = _stands_for("a", organization)
    actor = (
        "EXISTS (SELECT 1 FROM idx_reference a WHERE a.rid = cp.rid AND a.param = 'actor' "
        f"AND {names})"
    )
    if decision == "permit":
        binds = (
            "NOT EXISTS (SELECT 1 FROM idx_token l WHERE l.rid = cp.rid "
            f"AND l.param = 'provision-limited') AND {actor}"
        )
    else:
        binds = (
            f"({actor} OR NOT EXISTS (SELECT 1 FROM idx_reference a WHERE a.rid = cp.rid "
            "AND a.param = 'actor' AND a.target_type IN ('Organization', 'PractitionerRole')))"
        )
    instant = date_bounds(at)[0]
    sql = (
        "EXISTS (SELECT 1 FROM idx_reference cp WHERE cp.type = 'Consent' "
        f"AND cp.param = 'patient' AND cp.target_type = 'Patient' AND cp.target_id = {pid} "
        "AND EXISTS (SELECT 1 FROM idx_token k WHERE k.rid = cp.rid "
        "AND k.param = 'provision-type' AND k.code = ?) "
        "AND EXISTS (SELECT 1 FROM idx_token k WHERE k.rid = cp.rid AND k.param = 'status' "
        "AND k.code = 'active') "
        "AND EXISTS (SELECT 1 FROM idx_token k WHERE k.rid = cp.rid AND k.param = 'scope' "
        "AND k.code = ? AND k.system = ?) "
        "AND NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = cp.rid AND d.param = 'period' "
        f"AND (d.low > ? OR d.high < ?)) AND {binds})"
    )
    return sql, [decision, _PRIVACY[1], _PRIVACY[0], instant, instant, *names_args]


def _care_task(ps: q.PatientSet, r: q.CareRelationship, since: str, task: str) -> tuple[str, list]:
    """Whether the Task of row id `task` (an SQL expression) is one of relationship `r` that
    holds (live, or ended after `since`) and names ps.organization as a party (Task.owner, or
    the requester or performer of the ServiceRequest in Task.focus; a PractitionerRole stands
    for its organization)."""
    live, ended = ", ".join("?" * len(r.live)), ", ".join("?" * len(r.ended))
    of, of_args = _task_of(r, task)
    party, party_args = _task_party(ps.organization, task)
    sql = (
        f"{of} "
        f"AND (EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = {task} AND t.param = 'status' "
        f"AND t.code IN ({live or 'NULL'})) "
        f"OR (EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = {task} AND t.param = 'status' "
        f"AND t.code IN ({ended or 'NULL'})) AND EXISTS (SELECT 1 FROM idx_date d "
        f"WHERE d.rid = {task} AND d.param = 'modified' AND d.low > ?))) "
        f"AND {party}"
    )
    args = [*of_args, *r.live, *r.ended, date_bounds(since)[0], *party_args]
    if ps.excluding is not None:
        sql += f" AND {task} NOT IN (SELECT rid FROM resource WHERE type = 'Task' AND id = ?)"
        args.append(ps.excluding)
    return f"({sql})", args


def _task_of(r: q.CareRelationship, task: str) -> tuple[str, list]:
    """The Task of row id `task` has the relationship's business status system and code (the
    system first: it tells the relationships apart)."""
    return (
        f"EXISTS (SELECT 1 FROM idx_token b WHERE b.rid = {task} "
        "AND b.param = 'business-status' AND b.system = ?) "
        f"AND EXISTS (SELECT 1 FROM idx_token c WHERE c.rid = {task} AND c.param = 'code' "
        "AND c.system = ? AND c.code = ?)"
    ), [r.business_system, *r.code]


def _task_party(organization: str, task: str) -> tuple[str, list]:
    """The organization is a party of the Task of row id `task`: Task.owner, or the requester
    or performer of the ServiceRequest in Task.focus (a PractitionerRole stands for its
    organization)."""
    party, party_args = _party("o", organization)
    sr_party, sr_party_args = _party("s", organization)
    return (
        f"(EXISTS (SELECT 1 FROM idx_reference o WHERE o.rid = {task} "
        f"AND o.param = 'owner' AND {party}) "
        "OR EXISTS (SELECT 1 FROM idx_reference g JOIN resource sr "
        "ON sr.type = 'ServiceRequest' AND sr.id = g.target_id AND sr.deleted = 0 "
        f"JOIN idx_reference s ON s.rid = sr.rid WHERE g.rid = {task} AND g.param = 'focus' "
        "AND g.target_type = 'ServiceRequest' "
        f"AND s.param IN ('requester', 'performer') AND {sr_party}))"
    ), [*party_args, *sr_party_args]


def _party(alias: str, organization: str) -> tuple[str, list]:
    """The reference row `alias` names the organization or one of its PractitionerRoles."""
    return (
        f"(({alias}.target_type = 'Organization' AND {alias}.target_id = ?) OR "
        f"({alias}.target_type = 'PractitionerRole' AND EXISTS (SELECT 1 FROM resource pr "
        f"JOIN idx_reference ro ON ro.rid = pr.rid WHERE pr.type = 'PractitionerRole' "
        f"AND pr.id = {alias}.target_id AND ro.param = 'organization' "
        "AND ro.target_type = 'Organization' AND ro.target_id = ?)))"
    ), [organization, organization]


def _stands_for(alias: str, organization: str) -> tuple[str, list]:
    """The reference row `alias` names the organization, one of its PractitionerRoles, or the
    Organization it is partOf (the consortium: a Consent naming it binds every member)."""
    party, args = _party(alias, organization)
    return (
        f"({party} OR ({alias}.target_type = 'Organization' AND EXISTS (SELECT 1 "
        "FROM resource o JOIN idx_reference po ON po.rid = o.rid WHERE o.type = 'Organization' "
        "AND o.id = ? AND o.deleted = 0 AND po.param = 'partof' "
        f"AND po.target_type = 'Organization' AND po.target_id = {alias}.target_id)))"
    ), [*args, organization]


def _scope(rtype: str | None, p: Param, also: str | None = None) -> tuple[str, list[Any]]:
    """The index rows of one parameter (of its parts, for a union); quantities also have
    their UCUM-canonical rows, which the value condition picks between; `also` names more
    rows to read (a name's pinyin)."""
    head, args = ("type = ? AND ", [rtype]) if rtype else ("", [])
    names = list(p.names)
    if p.type == "quantity":
        names += [f"{n}:canonical" for n in p.names]
    if also is not None:
        names.append(also)
    return f"{head}{_param_in(names)}", [*args, *names]


def _param_in(names: Sequence[str]) -> str:
    """The condition on `param` that selects the rows of `names` (their values the args)."""
    return "param = ?" if len(names) == 1 else f"param IN ({', '.join('?' * len(names))})"


def _pinyin_values(values: tuple[str, ...]) -> bool:
    """Whether some value could be pinyin: then a name's pinyin rows are searched too."""
    return any(pinyin.romanised(normalize_string(v)) for v in values)


def _check_terms(c: Clause) -> None:
    """A LIKE over the stored text costs pattern length x text size per pattern: bound both."""
    name = f"{c.param.code}:{c.modifier}" if c.modifier else c.param.code
    if len(c.values) > MAX_TERMS:
        raise error(400, "too-costly", f"'{name}' takes at most {MAX_TERMS} values", name)
    if any(len(v) > MAX_TERM_LENGTH for v in c.values):
        raise error(
            400, "too-costly", f"'{name}' values may be at most {MAX_TERM_LENGTH} characters", name
        )


def _codes_condition(codes: tuple[tuple[str, str], ...]) -> tuple[str, list]:
    """(system, code) pairs as one `code IN (...)` per system: the token index is keyed on
    code, so each IN is a handful of index probes."""
    if not codes:
        return "0", []
    by_system: dict[str, list[str]] = {}
    for system, code in codes:
        by_system.setdefault(system, []).append(code)
    ors, args = [], []
    for system, values in by_system.items():
        ors.append(f"(system = ? AND code IN ({', '.join('?' * len(values))}))")
        args += [system, *values]
    return "(" + " OR ".join(ors) + ")", args


def _token_condition(p: Param, modifier: str | None, v: str) -> tuple[str, list]:
    if modifier == "text":
        return "text LIKE ? ESCAPE '\\'", [f"%{_like(unescape(v))}%"]
    if modifier == "of-type":
        parts = [unescape(part) for part in split_escaped(v, "|")]
        if len(parts) != 3:
            raise error(400, "invalid", ":of-type takes system|code|value", p.code)
        return "system = ? AND code = ? AND text = ?", parts
    system, code = split_token(v)
    if system is None:
        return "code = ?", [code]
    if code == "":
        return "system = ?", [system]
    if system == "":
        return "code = ? AND system IS NULL", [code]
    return "code = ? AND system = ?", [code, system]


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_condition(value: str, low: str, high: str, code: str) -> tuple[str, list]:
    """Prefix semantics of search.html#prefix over [low, high] ranges."""
    prefix, v = split_prefix(value)
    try:
        qlo, qhi = date_bounds(v)
    except ValueError:
        raise error(400, "invalid", f"Invalid date '{v}'", code) from None
    return _range_condition(prefix, low, high, qlo, qhi)


def _range_condition(prefix: str, low: str, high: str, qlo: Any, qhi: Any) -> tuple[str, list]:
    if prefix == "eq":
        # `low <= qhi` follows from the others (low <= high), but bounds the index range on
        # low: without it an early date read every later value of the parameter
        return f"{low} >= ? AND {low} <= ? AND {high} <= ?", [qlo, qhi, qhi]
    if prefix == "ne":
        return f"NOT ({low} >= ? AND {high} <= ?)", [qlo, qhi]
    if prefix == "gt":
        return f"{high} > ?", [qhi]
    if prefix == "lt":
        return f"{low} < ?", [qlo]
    if prefix == "ge":
        return f"{high} >= ?", [qlo]
    if prefix == "le":
        return f"{low} <= ?", [qhi]
    if prefix == "sa":
        return f"{low} > ?", [qhi]
    if prefix == "eb":
        return f"{high} < ?", [qlo]
    # ap: overlaps the search range
    return f"{low} <= ? AND {high} >= ?", [qhi, qlo]


def _number_condition(value: str, code: str) -> tuple[str, list]:
    """search.html#number: eq/ne use the search value's implicit precision range [qlo, qhi);
    gt/lt/ge/le/sa/eb compare with the value exactly ("lt100: less than exactly 100").
    Stored numbers are points (low = high); stored Ranges are ranges."""
    prefix, v = split_prefix(value)
    try:
        qlo, qhi = _finite(number_bounds(v))
        exact = float(v)
    except ValueError:
        raise error(400, "invalid", f"Invalid number '{v}'", code) from None
    if prefix == "eq":
        return "low >= ? AND high < ?", [qlo, qhi]
    if prefix == "ne":
        return "NOT (low >= ? AND high < ?)", [qlo, qhi]
    if prefix == "ap":
        qlo, qhi = _approximate(exact, qlo, qhi)
        return "low <= ? AND high >= ?", [qhi, qlo]
    column, op = {
        "gt": ("high", ">"), "lt": ("low", "<"), "ge": ("high", ">="), "le": ("low", "<="),
        "sa": ("low", ">"), "eb": ("high", "<"),
    }[prefix]  # fmt: skip
    return f"{column} {op} ?", [exact]


def _finite(bounds: tuple[float, float]) -> tuple[float, float]:
    """A search value beyond a double (1e1000000) is refused rather than compared as inf."""
    if not all(math.isfinite(b) for b in bounds):
        raise ValueError("number out of range")
    return bounds


def _approximate(v: float, qlo: float, qhi: float) -> tuple[float, float]:
    margin = abs(v) * 0.1
    return min(qlo, v - margin), max(qhi, v + margin)


def _quantity_condition(value: str, p: Param) -> tuple[str, list]:
    """`[prefix]number|system|code`; the code matches Quantity.code or Quantity.unit."""
    code = p.code
    parts = [unescape(part) for part in split_escaped(value, "|", 2)]
    text, system, unit = (parts + ["", ""])[:3]
    prefix, v = split_prefix(text)
    try:
        qlo, qhi = _finite(number_bounds(v))
    except ValueError:
        raise error(400, "invalid", f"Invalid quantity '{value}'", code) from None
    if prefix == "ap":
        qlo, qhi = _approximate(float(v), qlo, qhi)
    number = float(v)
    scope, args = _param_in(p.names), list[Any](p.names)  # the rows as written
    canonical = factor(unit) if system == UCUM and unit else None
    if canonical is not None:
        # compare in canonical units: on the canonical rows of quantities written in another
        # unit (5.5 kg has a 5500 g row), and on the rows of those written in the canonical
        # unit itself (5500 g), which get no second row
        scale, unit = canonical
        qlo, qhi, number = qlo * scale, qhi * scale, number * scale
        names = [*p.names, *(f"{n}:canonical" for n in p.names)]  # and the canonical rows
        scope, args = _param_in(names), names
    if prefix == "eq":
        sql, args = f"{scope} AND value >= ? AND value < ?", [*args, qlo, qhi]
    elif prefix == "ap":
        sql, args = f"{scope} AND value >= ? AND value <= ?", [*args, qlo, qhi]
    elif prefix == "ne":
        sql, args = f"{scope} AND NOT (value >= ? AND value < ?)", [*args, qlo, qhi]
    else:
        op = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">=", "le": "<="}[prefix]
        sql, args = f"{scope} AND value {op} ?", [*args, number]
    if system:
        sql += " AND system = ?"
        args.append(system)
    if canonical is not None:  # a canonical code, never a display unit that looks like one
        sql += " AND code = ?"
        args.append(unit)
    elif unit:
        sql += " AND (code = ? OR unit = ?)"
        args += [unit, unit]
    return sql, args


# --- execution: the SQL a search runs ---------------------------------------------------------


def match_ids(
    session: Session, base_url: str, rtype: str, clauses: list[Clause], limit: int | None
) -> list[tuple[str, str]]:
    """(type, id) of the current resources matching the clauses, at most `limit`."""
    where, args = Compiler(base_url).where(rtype, clauses)
    sql = f"SELECT r.type, r.id FROM resource r WHERE {where}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [(r[0], r[1]) for r in session.query(sql, args)]


def count(session: Session, matches: tuple[str, str, list[Any]]) -> int:
    relation, where, args = matches
    found: int = session.query(f"SELECT count(*) FROM {relation} r WHERE {where}", args)[0][0]
    return found


def page(
    session: Session,
    compiler: Compiler,
    query: q.Query,
    matches: tuple[str, str, list[Any]],
    cursor: Cursor | None,
    total: int | None,
) -> list[tuple[Any, ...]]:
    """Up to count + 1 rows (rid, *sort key values) after the cursor, in sort order.

    Only row ids and keys are sorted; the JSON is fetched for the page alone afterwards."""
    relation, where, args = matches
    keys = compiler.sort_keys(query)
    forward = cursor is None or cursor.forward
    limit = query.count + 1
    walk = compiler.sort_walk(query) if forward and not query.types else None
    if walk is not None:
        return walk_sort_index(session, compiler, walk, query, matches, cursor, limit, total)
    if cursor is not None:
        beyond, beyond_args = after(keys, cursor)
        where, args = f"{where} AND {beyond}", [*args, *beyond_args]
    order, order_args = order_by(keys, forward)
    columns = ", ".join(k.sql for k in keys)
    key_args = [a for k in keys for a in k.args]
    return session.query(
        f"SELECT r.rid, {columns} FROM {relation} r WHERE {where} {order} LIMIT ?",
        [*key_args, *args, *order_args, limit],
    )


#: above this many matches a sorted page checks candidate rows instead of listing matches
WALK_BY_ROW = 5000


def walk_sort_index(
    session: Session,
    compiler: Compiler,
    walk: SortWalk,
    query: q.Query,
    matches: tuple[str, str, list[Any]],
    cursor: Cursor | None,
    limit: int,
    total: int | None,
) -> list[tuple[Any, ...]]:
    """`_sort` on one parameter, read in order from that parameter's index instead of
    computing the key of every match and sorting them all: the cost follows the page, not
    the number of matches. Each resource is represented by its first value in sort order
    (search.html#sort); resources without a value follow, in row order (nulls last)."""
    relation, where, args = matches
    table, col, desc, code = walk.table, walk.column, walk.desc, walk.code
    direction = "DESC" if desc else "ASC"
    member, member_args = "", []
    if query.clauses:  # no clauses: every index row of the type is a match
        member, member_args = f"AND s.rid IN (SELECT r.rid FROM {relation} r WHERE {where})", args
        checks = [compiler.correlated(query.rtype, c, "s") for c in query.clauses]
        if total is not None and total > WALK_BY_ROW and all(checks):
            # many matches: checking rows as the walk meets them beats listing them all
            pairs = [pair for pair in checks if pair is not None]
            member = " ".join(f"AND {sql}" for sql, _ in pairs)
            member_args = [a for _, pair_args in pairs for a in pair_args]
    rows: list[tuple[Any, ...]] = []
    key = walk_key(cursor) if cursor is not None else None
    if key is None or key[0] is not None:
        beyond, beyond_args = "", []
        if key is not None:
            value, rid = key
            beyond = f"AND (s.{col} {'<' if desc else '>'} ? OR (s.{col} = ? AND s.rid > ?))"
            beyond_args = [value, value, rid]
        found = session.query(
            f"SELECT s.rid, s.{col}, s.rid FROM {table} s WHERE s.type = ? AND s.param = ? "
            f"AND s.rowid = (SELECT x.rowid FROM {table} x WHERE x.rid = s.rid AND "
            f"x.param = ? ORDER BY x.{col} {direction}, x.rowid LIMIT 1) "
            f"{member} {beyond} ORDER BY s.{col} {direction}, s.rid LIMIT ?",
            [query.rtype, code, code, *member_args, *beyond_args, limit],
        )
        rows += found
    if len(rows) < limit:
        after_rid = key[1] if key is not None and key[0] is None else 0
        rows += session.query(
            f"SELECT r.rid, NULL, r.rid FROM {relation} r WHERE {where} AND r.rid > ? AND NOT "
            f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND x.param = ?) "
            "ORDER BY r.rid LIMIT ?",
            [*args, after_rid, code, limit - len(rows)],
        )
    return rows


def walk_key(cursor: Cursor) -> tuple[Any, int]:
    """(sort value, row id) of a cursor made by _walk_sort_index; else the cursor is bad."""
    if len(cursor.values) != 2 or not isinstance(cursor.values[1], int):
        raise error(400, "invalid", "Page cursor does not fit this search", "_page")
    return cursor.values[0], cursor.values[1]


def with_json(session: Session, page: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(rid, *keys) rows -> (rid, type, id, json, *keys), in the same order."""
    if not page:
        return []
    marks = ", ".join("?" * len(page))
    found = {
        row[0]: row
        for row in session.query(
            f"SELECT rid, type, id, json FROM resource WHERE rid IN ({marks})", [r[0] for r in page]
        )
    }
    return [(*found[r[0]], *r[1:]) for r in page]


def includes(
    session: Session, query: q.Query, matches: list[tuple[int, str, str]]
) -> list[tuple[str, str, bytes]]:
    """_include / _revinclude targets of the page's matches (storage/include.py iterates)."""
    return iterate(query, matches, functools.partial(_include_round, session))


def _include_round(
    session: Session,
    frontier: list[tuple[int, str, str]],
    includes: list[Include],
    revincludes: list[Include],
) -> list[tuple[tuple[int, str, str], bytes]]:
    """One round: (rid, type, id) and json of what the frontier refers to and is referred by."""
    found: list[tuple[int, str, str, bytes]] = []
    # the page's keys go in as one JSON array: a list of 1,000 OR'd conditions is more
    # than SQLite's expression tree takes
    rids = orjson.dumps([m[0] for m in frontier]).decode()
    for source, code, target, _ in includes:
        sql = (
            "SELECT t.rid, t.type, t.id, t.json FROM idx_reference i JOIN resource t "
            "ON t.type = i.target_type AND t.id = i.target_id AND t.deleted = 0 "
            "WHERE i.rid IN (SELECT value FROM json_each(?)) AND i.type = ? AND i.param = ?"
        )
        args: list[Any] = [rids, source, code]
        if target:
            sql += " AND i.target_type = ?"
            args.append(target)
        found += session.query(sql, args)
    if revincludes:
        keys = orjson.dumps([[m[1], m[2]] for m in frontier]).decode()
    for source, code, _target, _ in revincludes:
        found += session.query(
            "SELECT s.rid, s.type, s.id, s.json FROM json_each(?) k "
            "CROSS JOIN idx_reference i ON i.type = ? AND i.param = ? "
            "AND i.target_id = json_extract(k.value, '$[1]') "
            "AND i.target_type = json_extract(k.value, '$[0]') "
            "JOIN resource s ON s.rid = i.rid AND s.deleted = 0",
            [keys, source, code],
        )
    return [((rid, t, i), raw) for rid, t, i, raw in found]
