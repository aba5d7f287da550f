"""A resource's index rows computed before the ids of the resources it refers to are known (the
HL7 v2 planner, in a process of its own, before the write lock gives the ids of the resources a
message creates): the rows its references do not decide, and those of the parameters that
follow references, computed with a stand-in id for each target and given the real ids at the
write (`bound`). Together they are exactly index_rows and composite_rows of the written
resource: a reference's id is a value of its rows, never a reason for a row."""

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
    """The rows of the parameters no reference decides, the `_content` text (which leaves
    references out), and the rows of the parameters that follow references (`late`), their
    targets' ids stand-ins until `bound`."""

    index: dict[str, list[Row]]
    composite: dict[str, list[Row]]
    content: str
    late: tuple[dict[str, list[Row]], dict[str, list[Row]]]

    def bound(self, ids: dict[str, str]) -> Early:
        """The rows with each stand-in id (a key of `ids`) replaced by the real one; rows
        that became equal (two stand-ins, one target) once, as index_rows gives them."""
        index, composite = (
            {table: list(dict.fromkeys(_bound(row, ids) for row in rows))
             for table, rows in part.items() if rows}
            for part in self.late
        )  # fmt: skip
        return Early(self.index, self.composite, self.content, (index, composite))

    def completed(self, rtype: str, resource: dict[str, Any], registry: Registry) -> Early:
        """The rows of `resource`, which differs from the one these were planned from in its
        references only (a Provenance's targets, known at the write): the planned rows no
        reference decides, and the others computed from it."""
        return Early(self.index, self.composite, self.content,
                     _late_rows(rtype, resource, registry))  # fmt: skip

    def rows(self) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
        """Index and composite rows of the resource, once bound."""
        return _joined(self.index, self.late[0]), _joined(self.composite, self.late[1])


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


def _bound(row: Row, ids: dict[str, str]) -> Row:
    return tuple(ids.get(v, v) if type(v) is str else v for v in row)


def early_rows(rtype: str, resource: dict[str, Any], registry: Registry) -> Early:
    """The rows of `resource`, whose references name their targets by stand-in ids."""
    index, _, composite, _ = _codes(rtype, registry)
    return Early(
        index_rows(rtype, resource, registry, index),
        composite_rows(rtype, resource, registry, composite),
        content_text(resource),
        _late_rows(rtype, resource, registry),
    )


def _late_rows(rtype: str, resource: dict[str, Any], registry: Registry
               ) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:  # fmt: skip
    """The rows of the parameters that follow references."""
    _, late, _, late_composite = _codes(rtype, registry)
    return (index_rows(rtype, resource, registry, late),
            composite_rows(rtype, resource, registry, late_composite))  # fmt: skip


def _joined(a: dict[str, list[Row]], b: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Rows of disjoint parameters, table by table."""
    out = {table: list(rows) for table, rows in a.items()}
    for table, rows in b.items():
        out.setdefault(table, []).extend(rows)
    return out
