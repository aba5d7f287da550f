"""Composite search parameters (search.html#composite): component values indexed per focus
element, with a group number, so that `code$value` pairs match within one element only
(e.g. within one Observation.component, never across two)."""

from __future__ import annotations

import weakref
from typing import Any

from .fhirpath import Extractor, compile_expression
from .index import BUILDERS
from .registry import Registry, SearchParam
from .unions import union_parts

#: (focus element or None for the whole resource, [(component table, extractor)])
Focus = tuple[str | None, list[tuple[str, Extractor]]]
_PLANS: weakref.WeakKeyDictionary[Registry, dict[str, list[tuple[str, list[Focus]]]]] = (
    weakref.WeakKeyDictionary()
)


def component_types(param: SearchParam, registry: Registry) -> tuple[str, ...] | None:
    """The search type of each component, or None if a definition is unknown."""
    types = []
    for c in param.components:
        sp = registry.by_url(c.definition)
        if sp is None or sp.type not in BUILDERS:
            return None
        types.append(sp.type)
    return tuple(types)


def _plan(rtype: str, registry: Registry) -> list[tuple[str, list[Focus]]]:
    plans = _PLANS.setdefault(registry, {})
    plan = plans.get(rtype)
    if plan is not None:
        return plan
    plan = []
    unions = union_parts(rtype, registry)  # their rows are their parts'
    for code, p in sorted(registry.for_type(rtype).items()):
        types = component_types(p, registry) if p.type == "composite" else None
        if not p.expression or not types or code in unions:
            continue
        foci: list[Focus] = []
        for part in (x.strip() for x in p.expression.split("|")):
            head, _, element = part.partition(".")
            if head != rtype or "." in element or "(" in element:
                continue
            extractors = []
            for comp, table in zip(p.components, types, strict=True):
                exprs = []
                for x in (y.strip() for y in comp.expression.split("|")):
                    if x.startswith("%resource."):
                        exprs.append(f"{rtype}.{x[len('%resource.') :]}")
                    else:
                        exprs.append(f"{part}.{x}")
                extractors.append((table, compile_expression(" | ".join(exprs), rtype)))
            foci.append((element or None, extractors))
        if foci:
            plan.append((code, foci))
    plans[rtype] = plan
    return plan


def composite_codes(rtype: str, registry: Registry) -> frozenset[str]:
    """The composite parameters indexed for a type."""
    return frozenset(code for code, _ in _plan(rtype, registry))


def composite_rows(
    rtype: str,
    resource: dict[str, Any],
    registry: Registry,
    codes: frozenset[str] | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows (param$j, *values, group) per component table, for the grouped index inserts;
    only those of the parameters `codes` when given."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for code, foci in _plan(rtype, registry):
        if codes is not None and code not in codes:
            continue
        group = 0
        for element, extractors in foci:
            if element is None:
                items: list[dict[str, Any]] = [resource]
            else:
                value = resource.get(element)
                if value is None:
                    continue
                elements = value if isinstance(value, list) else [value]
                items = [{**resource, element: [e]} for e in elements]
            for item in items:
                group += 1
                keys = item.keys()
                if any(ex.needs is not None and keys.isdisjoint(ex.needs) for _, ex in extractors):
                    continue  # a component without a value: the group has no row
                rows: list[tuple[str, list[tuple[Any, ...]]]] = []
                for j, (table, ex) in enumerate(extractors):
                    tables: dict[str, list[tuple[Any, ...]]] = {table: []}
                    BUILDERS[table](f"{code}${j}", ex(item), tables)
                    if not tables[table]:
                        break
                    rows.append((table, tables[table]))
                else:
                    for table, found in rows:
                        out.setdefault(table, []).extend((*r, group) for r in found)
    return out
