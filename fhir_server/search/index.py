"""Search index rows (search.html, "Search Parameter Types"): the values a resource's compiled
extractors yield, normalised per parameter type (string, token, reference, date, number,
quantity, uri) into the rows the storage layer writes."""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from fhir_server.search import pinyin
from fhir_server.search.fhirpath import Extractor, Node, compile_expression, parse_reference
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.ucum import UCUM, factor
from fhir_server.search.unions import union_parts
from fhir_server.search.values import (
    MAX_INSTANT,
    MIN_INSTANT,
    date_bounds,
    normalize_string,
    number_bounds,
)

__all__ = ["BUILDERS", "TABLES", "index_rows", "indexed_params", "plan_for"]

Row = tuple[Any, ...]

SKIPPED_CODES = frozenset({"_id", "_lastUpdated", "_text", "_content"})
SKIPPED_TYPES = frozenset({"composite", "special"})
TABLES = ("string", "token", "reference", "date", "number", "quantity", "uri")

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})

# Builders are total over any JSON: validation decides what a resource may hold (the R4 types
# R4B lacks are checked for their common elements only), so an element of the wrong shape just
# gives no row, and every cell is a str, int, float or None, which is all the store binds.


def _text(x: Any) -> str | None:
    """A string element's value; any other JSON shape counts as absent."""
    return x if type(x) is str else None


def _list(x: Any) -> list[Any]:
    return x if type(x) is list else []


def _dict(x: Any) -> dict[str, Any]:
    return x if type(x) is dict else {}


def _strings(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["string"]
    for v, t in values:
        if type(v) is str:
            out.append((code, normalize_string(v), v))
            if code in _PINYIN_PARTS and _CJK.search(v):
                _pinyin(code, _PINYIN_PARTS[code](v), out)
        elif type(v) is dict:
            if t == "HumanName" or (t is None and ("family" in v or "given" in v)):
                keys: Iterable[str] = _NAME_PARTS
            elif t == "Address" or (t is None and ("line" in v or "city" in v)):
                keys = _ADDRESS_PARTS
            else:
                continue
            for k in keys:
                x = v.get(k)
                for s in x if type(x) is list else (x,):
                    if type(s) is str:
                        out.append((code, normalize_string(s), s))
            if keys is _NAME_PARTS:
                full = _cjk_full_name(v)
                if full:
                    out.append((code, normalize_string(full), full))
                _pinyin(code, _name_pinyin(v), out)


#: string parameters whose values are one part of a HumanName (R4 `family`, `given` of Patient
#: and Practitioner): their pinyin is read as that part (a surname as a surname)
_PINYIN_PARTS: dict[str, Callable[[str], frozenset[str]]] = {
    "family": pinyin.family_forms,
    "given": pinyin.given_forms,
}


def _name_pinyin(name: dict[str, Any]) -> frozenset[str]:
    given = [g for g in _list(name.get("given")) if type(g) is str]
    return pinyin.name_forms(_text(name.get("family")), given, _text(name.get("text")))


def _pinyin(code: str, forms: frozenset[str], out: list[Row]) -> None:
    """Pinyin readings of a Chinese name (search/pinyin.py), under `code:pinyin` with no
    original: the default string match finds them, :exact and sorting never see them."""
    key = code + pinyin.SUFFIX
    out.extend((key, form, None) for form in sorted(forms))


def _cjk_full_name(name: dict[str, Any]) -> str | None:
    """张 + 三 -> 张三: Chinese names are typed family-then-given with no space, so that form
    is indexed too (unless HumanName.text already carries it)."""
    family, given = name.get("family"), name.get("given")
    if type(family) is not str or type(given) is not list or not _CJK.search(family):
        return None
    full = family + "".join(g for g in given if type(g) is str)
    return None if full == family or full == name.get("text") else full


def _coding_row(code: str, c: Any, text: str | None, out: list[Row]) -> None:
    c = _dict(c)
    system, value, display = _text(c.get("system")), _text(c.get("code")), _text(c.get("display"))
    if value is not None or system is not None:
        out.append((code, system, value, text or display))
        if text and display and display != text:  # :text also searches Coding.display
            out.append((code, None, None, display))


def _tokens(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["token"]
    for v, t in values:
        tv = type(v)
        if tv is str:
            out.append((code, None, v, None))
        elif tv is bool:
            out.append((code, None, "true" if v else "false", None))
        elif tv is int:
            out.append((code, None, str(v), None))
        elif tv is dict:
            if t == "CodeableConcept" or (t is None and ("coding" in v or set(v) == {"text"})):
                text = _text(v.get("text"))
                codings = _list(v.get("coding"))
                for c in codings:
                    _coding_row(code, c, text, out)
                if not codings and text is not None:
                    out.append((code, None, None, text))
            elif t == "Identifier" or (
                t is None
                and "value" in v
                and "system" in v
                and _text(v.get("system")) not in _CONTACT_SYSTEMS
            ):
                _identifier_rows(code, v, out)
            elif t == "ContactPoint" or (t is None and _text(v.get("system")) in _CONTACT_SYSTEMS):
                value = _text(v.get("value"))
                if value is not None:
                    out.append((code, None, value, None))
            elif t in ("Coding", None):
                _coding_row(code, v, None, out)


def _identifier_rows(code: str, v: dict[str, Any], out: list[Row]) -> None:
    value, typ = _text(v.get("value")), _dict(v.get("type"))
    out.append((code, _text(v.get("system")), value, _text(typ.get("text"))))
    if value is None:
        return
    for c in _list(typ.get("coding")):  # :of-type (search.html#token): value as the text
        c = _dict(c)
        if _text(c.get("code")) is not None:
            out.append((f"{code}:of-type", _text(c.get("system")), c["code"], value))


def _references(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    """Reference rows; ``Reference.identifier`` goes to the token table under the same code,
    which is where a ``subject:identifier=system|value`` search looks."""
    out = tables["reference"]
    for v, _t in values:
        if type(v) is dict:
            ref = v.get("reference")
            if type(ref) is str:
                parsed = parse_reference(ref)
                if parsed is not None:
                    out.append((code, *parsed))
            ident = _dict(v.get("identifier"))
            value = _text(ident.get("value"))
            if value is not None:
                typ = _dict(ident.get("type"))
                tables["token"].append(
                    (code, _text(ident.get("system")), value, _text(typ.get("text")))
                )
            rtype, rid = v.get("resourceType"), v.get("id")
            if type(rtype) is str and type(rid) is str:  # Bundle.entry[0].resource
                out.append((code, rtype, rid, None))
        elif type(v) is str and v:  # canonical / uri: kept as given, |version included
            target = v.partition("|")[0]
            parsed = None if "://" in target else parse_reference(target)
            if parsed is not None and parsed[0] is not None:  # relative: Type/id searchable
                out.append((code, parsed[0], parsed[1], v))
            else:
                out.append((code, None, None, v))


def _period(v: dict[str, Any]) -> tuple[str, str] | None:
    start, end = v.get("start"), v.get("end")  # date_bounds rejects what is not a string
    try:
        low = date_bounds(start)[0] if start else MIN_INSTANT
        high = date_bounds(end)[1] if end else MAX_INSTANT
    except ValueError:
        return None
    return (low, high) if start or end else None


def _dates(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["date"]
    for v, t in values:
        if type(v) is str:
            try:
                out.append((code, *date_bounds(v)))
            except ValueError:
                continue
        elif type(v) is dict:
            if t == "Period" or (t is None and ("start" in v or "end" in v)):
                b = _period(v)
                if b is not None:
                    out.append((code, *b))
            elif t == "Timing" or (t is None and ("event" in v or "repeat" in v)):
                for e in _list(v.get("event")):
                    try:
                        out.append((code, *date_bounds(e)))
                    except ValueError:
                        continue
                bp = _dict(v.get("repeat")).get("boundsPeriod")
                if type(bp) is dict:
                    b = _period(bp)
                    if b is not None:
                        out.append((code, *b))


def _num_text(x: Any) -> str | None:
    if type(x) is bool or not isinstance(x, int | float | Decimal):
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def _numbers(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["number"]
    for v, _t in values:
        if type(v) is dict:
            if "value" in v:  # Quantity-like
                s = _num_text(v["value"])
                if s is not None:
                    out.append((code, float(s), float(s)))
            elif "low" in v or "high" in v:  # Range: open ends are unbounded
                lo = _num_text(_dict(v.get("low")).get("value"))
                hi = _num_text(_dict(v.get("high")).get("value"))
                if lo is not None or hi is not None:
                    out.append(
                        (
                            code,
                            number_bounds(lo)[0] if lo is not None else -math.inf,
                            number_bounds(hi)[1] if hi is not None else math.inf,
                        )
                    )
        else:
            s = _num_text(v)
            if s is not None:  # a stored number is exact (search.html#number)
                out.append((code, float(s), float(s)))


def _quantities(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["quantity"]
    for v, t in values:
        if type(v) is dict:
            s = _num_text(v.get("value"))
            if s is None:
                continue  # SampledData, Range and value-less quantities are not indexed
            if t == "Money" or (t is None and "currency" in v):
                out.append((code, float(s), "urn:iso:std:iso:4217", _text(v.get("currency")), None))
            else:
                system, unit = _text(v.get("system")), _text(v.get("code"))
                out.append((code, float(s), system, unit, _text(v.get("unit"))))
                canonical = factor(unit) if system == UCUM and unit is not None else None
                if canonical is not None and canonical != (1.0, unit):
                    out.append(
                        (f"{code}:canonical", float(s) * canonical[0], UCUM, canonical[1], None)
                    )
        else:
            s = _num_text(v)
            if s is not None:
                out.append((code, float(s), None, None, None))


def _uris(code: str, values: list[Node], tables: dict[str, list[Row]]) -> None:
    out = tables["uri"]
    for v, _t in values:
        if type(v) is str:
            out.append((code, v))


Builder = Callable[[str, list[Node], dict[str, list[Row]]], None]
BUILDERS: dict[str, Builder] = {
    "string": _strings,
    "token": _tokens,
    "reference": _references,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "uri": _uris,
}

Plan = list[tuple[str, str, Extractor]]  # (code, table, extractor)
_PLANS: weakref.WeakKeyDictionary[Registry, dict[str, Plan]] = weakref.WeakKeyDictionary()


def indexed_params(resource_type: str, registry: Registry) -> list[SearchParam]:
    """The parameters that produce index rows for a type (sorted by code, deterministic);
    not the unions of others (search/unions.py), whose rows are their parts'."""
    unions = union_parts(resource_type, registry)
    return [
        p
        for code, p in sorted(registry.for_type(resource_type).items())
        if p.expression
        and p.type not in SKIPPED_TYPES
        and code not in SKIPPED_CODES
        and p.type in BUILDERS
        and code not in unions
    ]


def plan_for(resource_type: str, registry: Registry) -> Plan:
    """Compiled extractors for a type, built on first use and cached per registry."""
    plans = _PLANS.setdefault(registry, {})
    plan = plans.get(resource_type)
    if plan is None:
        plan = []
        for p in indexed_params(resource_type, registry):
            assert p.expression is not None
            ex = compile_expression(p.expression, resource_type)
            if ex:
                plan.append((p.code, p.type, ex))
        plans[resource_type] = plan
    return plan


#: per registry, (type, top-level keys) -> the plan's entries that may give rows for such a
#: resource (an extractor whose `needs` the keys miss gives none); the resources of one type
#: have few distinct key sets, so this saves testing every parameter of every resource
_PRESENT: weakref.WeakKeyDictionary[Registry, dict[tuple[str, frozenset[str]], Plan]] = (
    weakref.WeakKeyDictionary()
)
_PRESENT_MAX = 4096  # key sets remembered per registry (forgotten all at once past it)


def _present(resource_type: str, resource: dict[str, Any], registry: Registry) -> Plan:
    cache = _PRESENT.setdefault(registry, {})
    key = (resource_type, frozenset(resource))
    plan = cache.get(key)
    if plan is None:
        keys = key[1]
        plan = [
            entry
            for entry in plan_for(resource_type, registry)
            if entry[2].needs is None or not keys.isdisjoint(entry[2].needs)
        ]
        if len(cache) >= _PRESENT_MAX:
            cache.clear()
        cache[key] = plan
    return plan


def index_rows(
    resource_type: str,
    resource: dict[str, Any],
    registry: Registry,
    codes: frozenset[str] | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """Extract the search-index rows of one resource, grouped by table; only those of the
    parameters `codes` when given (the audit trail indexes what auditors search by).

    Rows lack the resource row id (the storage layer prepends it) and are de-duplicated.
    Every table key is present, possibly with an empty list. Row conventions:

    - contained references (``#id``) are not indexed: they have no server id to match, and
      chaining into contained resources is not supported;
    - ``Reference.identifier`` is written to the *token* table under the reference parameter's
      code, for ``subject:identifier=system|value``;
    - Range values are not written to the quantity table (one row holds one value); number
      params index a Range as (low, high) with open ends at +/-inf;
    - numbers are indexed with the precision they were written with (model/literal.py keeps
      ``100.00`` as written), which gives a Range bound its implicit precision.
    """
    tables: dict[str, list[Row]] = {t: [] for t in TABLES}
    for code, table, ex in _present(resource_type, resource, registry):
        if codes is not None and code not in codes:
            continue
        values = ex(resource)
        if values:
            BUILDERS[table](code, values, tables)
    return {t: list(dict.fromkeys(rows)) if len(rows) > 1 else rows for t, rows in tables.items()}
