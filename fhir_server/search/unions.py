"""Search parameters that are the union of others of their type, as R4's Observation `combo-*`
are: `combo-code` is `Observation.code | Observation.component.code`, the expressions of `code`
and `component-code`. Their index rows would repeat those of their parts (27 of the 146 rows an
HL7 v2 result message writes), so they are not stored: a search reads the parts' rows.

Found from the expressions, not listed: a parameter is a union when its expression's parts for
the type are exactly those of some other parameters' expressions, of the same search type (and,
for composites, the same components). Token, quantity and composite parameters only: their rows
depend on the values alone, not on the parameter (a string's pinyin rows depend on its code,
and a reference parameter is read by chains, includes and compartments too)."""

from __future__ import annotations

import weakref

from .registry import Registry, SearchParam

#: search types whose parameters may be unions
KINDS = frozenset({"token", "quantity", "composite"})

_UNIONS: weakref.WeakKeyDictionary[Registry, dict[str, dict[str, tuple[str, ...]]]] = (
    weakref.WeakKeyDictionary()
)


def union_parts(rtype: str, registry: Registry) -> dict[str, tuple[str, ...]]:
    """Per union parameter of the type, the (stored) parameters whose rows are its rows."""
    per_type = _UNIONS.setdefault(registry, {})
    found = per_type.get(rtype)
    if found is None:
        found = per_type[rtype] = _find(rtype, registry)
    return found


def _find(rtype: str, registry: Registry) -> dict[str, tuple[str, ...]]:
    shaped: list[tuple[str, tuple[object, ...], frozenset[str]]] = []
    for code, p in sorted(registry.for_type(rtype).items()):
        if p.type in KINDS and p.expression and not code.startswith("_"):
            parts = _parts(p.expression, rtype)
            shape = _shape(p, registry)
            if parts and shape is not None:
                shaped.append((code, shape, parts))
    shaped.sort(key=lambda s: (len(s[2]), s[0]))  # a part is never itself a union
    unions: dict[str, tuple[str, ...]] = {}
    for code, shape, parts in shaped:
        if len(parts) < 2:
            continue
        chosen: list[str] = []
        covered: set[str] = set()
        for other, other_shape, other_parts in shaped:
            if (other != code and other not in unions and other_shape == shape
                    and other_parts < parts and not other_parts <= covered):  # fmt: skip
                chosen.append(other)
                covered |= other_parts
        if covered == parts:
            unions[code] = tuple(chosen)
    return unions


def _shape(p: SearchParam, registry: Registry) -> tuple[object, ...] | None:
    """What besides the expression decides a parameter's rows: its type, and a composite's
    components (their types and expressions)."""
    if p.type != "composite":
        return (p.type,)
    components: list[object] = []
    for c in p.components:
        sp = registry.by_url(c.definition)
        if sp is None:
            return None
        components.append((sp.type, " ".join(c.expression.split())))
    return (p.type, *components)


def _parts(expression: str, rtype: str) -> frozenset[str]:
    """The top-level `|` parts of an expression that apply to `rtype`, spaces normalized."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expression):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i])
            start = i + 1
    parts.append(expression[start:])
    mine = set()
    for part in (" ".join(x.split()) for x in parts):
        head = part.lstrip("(")
        if head.startswith(rtype) and head[len(rtype) : len(rtype) + 1] in ("", ".", " "):
            mine.add(part)
    return frozenset(mine)
