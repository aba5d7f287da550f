"""_include / _revinclude (search.html#include) over any backend: the iteration is here, once;
each backend supplies one round (the targets of a frontier's references and the resources
referring to it, on its own indexes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..search.query import Query

#: a backend's key of a resource: any tuple whose last two items are (type, id)
Key = TypeVar("Key", bound=tuple[Any, ...])
#: (source type, reference parameter, target type or None, :iterate)
Include = tuple[str, str, str | None, bool]
#: one round: the frontier, the includes and the revincludes to apply -> (key, json) found
Round = Callable[[list[Key], list[Include], list[Include]], Sequence[tuple[Key, bytes]]]


def iterate(
    query: Query, matches: list[Key], one_round: Round[Key]
) -> list[tuple[str, str, bytes]]:
    """(type, id, json) of what the matches include and revinclude, first seen first; the first
    round applies every include, later rounds only the `:iterate` ones, over what the previous
    round added, until nothing new appears."""
    if not matches or not (query.includes or query.revincludes):
        return []
    seen = {m[-2:] for m in matches}
    frontier = matches
    out: list[tuple[str, str, bytes]] = []
    first = True
    while frontier:
        incs = [x for x in query.includes if first or x[3]]
        revs = [x for x in query.revincludes if first or x[3]]
        if not incs and not revs:
            break
        first = False
        added: list[Key] = []
        for key, raw in one_round(frontier, incs, revs):
            ti = key[-2:]
            if ti not in seen:
                seen.add(ti)
                out.append((ti[0], ti[1], raw))
                added.append(key)
        frontier = added
    return out
