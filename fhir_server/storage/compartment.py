"""What a compartment walk ($everything) asks of a backend (compartmentdefinition.html): the
branches (one per resource type of the compartment) and the window. Plain data, no backend:
each backend's `Session.compartment_members` reads them (sqlite/compartment.py,
mongo/compartment.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..search.query import Clause

#: a member of a compartment: (0 for the owners' own type, 1 for the others; row; type), in
#: this order (owners first, then by row), the first two being the page cursor
Member = tuple[int, int, str]
#: (row, type, id, json) of a current resource
Entry = tuple[int, str, str, bytes]


@dataclass(frozen=True)
class Branch:
    """One resource type of a compartment: the reference parameters that put its resources in
    it, whether the owners themselves are of this type (a Patient in its own compartment), the
    clauses (access narrowing, filters) its members must also meet, and the date parameter
    a care-date window reads (None: the window does not apply to the type)."""

    rtype: str
    params: tuple[str, ...]
    owners: bool
    clauses: tuple[Clause, ...] = ()
    care_date: str | None = None


@dataclass(frozen=True)
class Window:
    """Filters on every member: changed after `since` (meta.lastUpdated), care dates
    overlapping [low, high] (instants; None: unbounded). Resources without a care date are
    kept: their care date is unknown, not outside."""

    since: str | None = None
    low: str | None = None
    high: str | None = None
