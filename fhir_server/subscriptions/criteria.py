"""Subscription.criteria: parsed once into the search engine's query AST, then decided for each
written resource against the index rows of that version, without the database where the
clauses allow (token, string, reference, uri, date, _id); other clauses (chains, _has, numbers,
quantities, composites, modifiers such as :missing or :in) are decided by the search engine
itself restricted to the resource's `_id` (R4 subscription.html#2.46.7: the criteria are a
search, "as if" run on the server)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ..errors import FhirError, error
from ..search import pinyin
from ..search import query as q
from ..search.registry import Registry
from ..search.values import date_bounds, normalize_string
from ..spec import RESOURCE_TYPES
from ..storage.contract import IndexRows, SubscriptionTables

EXPRESSION = "Subscription.criteria"


@dataclass(frozen=True)
class Criteria:
    """A compiled criteria string: the type it watches and the clauses (ANDed) it needs."""

    rtype: str
    clauses: tuple[q.Clause, ...]
    #: every clause can be decided from the index rows (no database round trip)
    in_memory: bool


def compile_criteria(registry: Registry, text: str, tables: SubscriptionTables) -> Criteria:
    """`Type?params` into Criteria; 400 naming Subscription.criteria for anything the search
    engine would not run exactly (unknown parameters are refused, not ignored: a subscription
    silently wider than asked would send what was not wanted)."""
    rtype, _, query = text.strip().partition("?")
    if rtype not in RESOURCE_TYPES:
        raise error(
            400, "invalid", f"Subscription.criteria must start with a resource type: '{rtype}'",
            EXPRESSION,
        )  # fmt: skip
    pairs = parse_qsl(query, keep_blank_values=True)
    results = [n for n, _ in pairs if n in q.RESULT_PARAMS or n in ("_type", "_page")]
    if results:
        raise error(
            400, "invalid", f"Subscription.criteria may hold filters only, not {results}",
            EXPRESSION,
        )  # fmt: skip
    try:
        parsed = q.parse(registry, rtype, pairs, 20, 20, strict=True)
    except FhirError as exc:
        raise error(400, "invalid", f"Subscription.criteria: {exc}", EXPRESSION) from None
    clauses = tuple(parsed.clauses)
    try:  # the values too: the search engine compiles them once here (a bad date: 400)
        tables.check_criteria(rtype, list(clauses))
    except FhirError as exc:
        raise error(400, "invalid", f"Subscription.criteria: {exc}", EXPRESSION) from None
    return Criteria(rtype, clauses, all(_in_memory(c) for c in clauses))


def _in_memory(c: q.Clause) -> bool:
    if c.chain or c.has or c.compartment or c.by_type or c.patients or c.codes is not None:
        return False
    if c.param.code == "_id":
        return c.modifier is None
    if c.param.code in q.SPECIAL:
        return False
    kind, mod = c.param.type, c.modifier
    if kind == "token":
        return mod in (None, "not")
    if kind == "string":
        return mod in (None, "exact", "contains")
    if kind == "reference":
        return mod is None or mod in c.param.targets
    if kind in ("uri", "date"):
        return mod is None
    return False


def matches(criteria: Criteria, rid: str, rows: IndexRows, base_url: str) -> bool:
    """Whether a version with id `rid` and index `rows` meets criteria that are `in_memory`:
    the same semantics as the SQL compiler (storage/sqlite/search.py) on the same rows."""
    return all(_clause(c, rid, rows, base_url) for c in criteria.clauses)


def _clause(c: q.Clause, rid: str, rows: IndexRows, base_url: str) -> bool:
    if c.param.code == "_id":
        return rid in c.values
    kind = c.param.type
    names = set(c.param.names)  # a union: its parts' rows
    if kind == "string" and c.modifier is None and _pinyin(c.values):
        names.add(c.param.code + pinyin.SUFFIX)  # a name's pinyin rows, as the SQL reads them
    own = [r[1:] for r in rows.get(kind, ()) if r[0] in names]
    if kind == "token" and c.modifier == "not":  # search.html#token: no row has the code
        return not any(_token(v, row) for v in c.values for row in own)
    return any(_value(c, v, row, base_url) for v in c.values for row in own)


def _pinyin(values: tuple[str, ...]) -> bool:
    return any(pinyin.romanised(normalize_string(v)) for v in values)


def _value(c: q.Clause, raw: str, row: tuple[object, ...], base_url: str) -> bool:
    kind = c.param.type
    if kind == "token":
        return _token(raw, row)
    v = q.unescape(raw)
    if kind == "string":
        value, original = row[0], row[1]
        if c.modifier == "exact":
            return original == v
        norm = normalize_string(v)
        if c.modifier == "contains":
            return norm in str(value)
        return str(value).startswith(norm)
    if kind == "reference":
        return _reference(c, v, row, base_url)
    if kind == "uri":
        return row[0] == v
    return _date(raw, row)


def _token(raw: str, row: tuple[object, ...]) -> bool:
    system, code = q.split_token(raw)
    row_system, row_code = row[0], row[1]
    if system is None:
        return row_code == code
    if code == "":
        return row_system == system
    if system == "":
        return row_code == code and row_system is None
    return row_code == code and row_system == system


def _reference(c: q.Clause, v: str, row: tuple[object, ...], base_url: str) -> bool:
    target_type, target_id, url = row
    prefix = base_url.rstrip("/") + "/"
    if base_url and v.startswith(prefix):
        v = v[len(prefix) :]
    if c.modifier:
        return target_type == c.modifier and target_id == v
    if "://" in v or v.startswith("urn:"):
        return url == v or (isinstance(url, str) and "|" not in v and url.startswith(v + "|"))
    parts = v.split("/")
    if len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history"):
        return target_type == parts[0] and target_id == parts[1]
    return target_id == v


def _date(raw: str, row: tuple[object, ...]) -> bool:
    """search.html#prefix over ranges, as storage/sqlite/search.py _range_condition."""
    prefix, v = q.split_prefix(raw)
    qlo, qhi = date_bounds(v)
    low, high = str(row[0]), str(row[1])
    checks = {
        "eq": low >= qlo and high <= qhi,
        "ne": not (low >= qlo and high <= qhi),
        "gt": high > qhi,
        "lt": low < qlo,
        "ge": high >= qlo,
        "le": low <= qhi,
        "sa": low > qhi,
        "eb": high < qlo,
    }
    return checks.get(prefix, low <= qhi and high >= qlo)
