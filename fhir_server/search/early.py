"""A resource's index rows in two parts: those its references do not decide, computed before
the references are known (the HL7 v2 planner, in a process of its own, before the write lock
gives the ids of the resources a message creates), and those of the parameters that follow
references, computed at the write. Together they are exactly index_rows and composite_rows
of the written resource: the ids change nothing else of it."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from .composite import composite_codes, composite_rows
from .fulltext import content_text
from .index import Row, index_rows, indexed_params
from .registry import Registry, SearchParam

#: per registry and type: (early index codes, late index codes, early composites, late ones)
_CODES: weakref.WeakKeyDictionary[Registry, dict[str, tuple[frozenset[str], ...]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Early:
    """The rows of the parameters no reference decides, and the `_content` text (which
    leaves references out)."""

    index: dict[str, list[Row]]
    composite: dict[str, list[Row]]
    content: str


def _follows(p: SearchParam | None) -> bool:
    """Whether a parameter's values may come from a reference (its target's type or id)."""
    if p is None:
        return True
    expression = p.expression or ""
    return p.type == "reference" or "resolve(" in expression or "reference" in expression


def _late_composite(p: SearchParam | None, registry: Registry) -> bool:
    return p is None or _follows(p) or any(_follows(registry.by_url(c.definition))
                                           for c in p.components)  # fmt: skip


def _codes(rtype: str, registry: Registry) -> tuple[frozenset[str], ...]:
    per_type = _CODES.setdefault(registry, {})
    found = per_type.get(rtype)
    if found is None:
        params = {p.code: p for p in indexed_params(rtype, registry)}
        late = frozenset(code for code, p in params.items() if _follows(p))
        composites = composite_codes(rtype, registry)
        late_composites = frozenset(
            code for code in composites if _late_composite(registry.get(rtype, code), registry)
        )
        found = (frozenset(params) - late, late, composites - late_composites, late_composites)
        per_type[rtype] = found
    return found


def early_rows(rtype: str, resource: dict[str, Any], registry: Registry) -> Early:
    """The rows of `resource` that stay when its references are replaced (by `Type/id`)."""
    index, _, composite, _ = _codes(rtype, registry)
    return Early(
        index_rows(rtype, resource, registry, index),
        composite_rows(rtype, resource, registry, composite),
        content_text(resource),
    )


def all_rows(
    rtype: str, resource: dict[str, Any], registry: Registry, early: Early
) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
    """Index and composite rows of `resource`, whose early rows are `early`: the late ones
    computed now and added."""
    _, late, _, late_composites = _codes(rtype, registry)
    index = index_rows(rtype, resource, registry, late)
    composite = composite_rows(rtype, resource, registry, late_composites)
    return _joined(early.index, index), _joined(early.composite, composite)


def _joined(a: dict[str, list[Row]], b: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Rows of disjoint parameters, table by table."""
    out = {table: list(rows) for table, rows in a.items()}
    for table, rows in b.items():
        out.setdefault(table, []).extend(rows)
    return out
