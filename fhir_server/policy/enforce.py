"""Enforcing the policy decision in the interactions (security.md §3.2 step 6): searches are
narrowed in the query, single resources and included ones are checked against the same
clauses in SQL, writes on the old and the new version. Anonymous principals (no token) are
not checked here: whether a token is required is the authorization server's setting.

Hidden resources answer 404 (no existence oracle); an interaction no scope permits, 403. A type
the principal lacks the role for (decide.ROLE_ONLY: AuditEvent) is hidden whole: its instances
answer 404, searches of it 403, and no other search reaches it (system search, chains, _has,
includes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..context import RequestContext
from ..errors import FhirError, error
from ..search import query as q
from ..spec import RESOURCE_TYPES
from ..storage.sqlite import Session
from ..storage.sqlite import search as sql
from .decide import OPERATIONS, ROLE_ONLY, decide, forbidden, role_permits

if TYPE_CHECKING:
    from ..services import Services


@dataclass(frozen=True)
class Access:
    """What one interaction on one type may touch: `clauses` ANDed onto every query of it
    ([] = the whole type, as far as scopes go)."""

    rtype: str
    clauses: list[q.Clause]

    @property
    def narrowed(self) -> bool:
        return bool(self.clauses)


def authorize(
    ctx: RequestContext, services: Services, interaction: str, rtype: str
) -> Access | None:
    """The one entry point of the interactions: None for an anonymous caller (nothing to
    enforce), else the Access the principal's scopes give; 403 when they give none."""
    if ctx.principal.kind == "anonymous":
        return None
    care = tuple(services.care)
    return Access(rtype, decide(ctx.principal, interaction, rtype, services.registry, care))


def visible(session: Session, ctx: RequestContext, access: Access, ids: Iterable[str]) -> set[str]:
    """Those of `ids` (current, undeleted resources of access.rtype) inside the Access."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    by_id = q.Clause(q.Param("_id", "token"), tuple(wanted))
    found = sql.match_ids(session, ctx.base_url, access.rtype, [by_id, *access.clauses], None)
    return {i for _, i in found}


def check_instance(
    session: Session, ctx: RequestContext, services: Services, interaction: str, rtype: str,
    rid: str,
) -> None:
    """read / vread / history-instance / update / patch / delete of an existing resource:
    404, as if it did not exist, when it is outside what the principal may see (a deleted
    resource is outside too: its 410 would tell that it existed), and so is every resource of a
    type whose role the principal lacks."""
    if not role_permits(ctx.principal, rtype):
        raise error(404, "not-found", f"{rtype}/{rid} is not known")
    access = authorize(ctx, services, interaction, rtype)
    # an Access that is not narrowed sees the whole type, as an anonymous caller does
    if access is not None and access.narrowed and not visible(session, ctx, access, [rid]):
        raise error(404, "not-found", f"{rtype}/{rid} is not known")


def check_written(
    session: Session, ctx: RequestContext, services: Services, interaction: str, rtype: str,
    rid: str,
) -> None:
    """After a create/update stored its new version (inside the write transaction): 403 when
    the new content lies outside what the principal may write, e.g. an Observation moved to
    another patient; raising rolls the transaction back. A Task written does not count as a
    care relationship for its own check: no writer grants itself access."""
    access = authorize(ctx, services, interaction, rtype)
    if access is not None and rtype == "Task":
        access = Access(rtype, [_excluding(c, rid) for c in access.clauses])
    if access is not None and access.narrowed and not visible(session, ctx, access, [rid]):
        raise forbidden(
            f"The {rtype} written lies outside what the granted scopes permit ({interaction})"
        )


def _excluding(clause: q.Clause, task_id: str) -> q.Clause:
    if clause.patients is None:
        return clause
    return replace(clause, patients=replace(clause.patients, excluding=task_id))


def narrow(
    ctx: RequestContext, services: Services, interaction: str, rtype: str,
    clauses: list[q.Clause],
) -> list[q.Clause]:
    """A type-level query's clauses plus the Access clauses (search, conditional URLs).
    Chains and _has reach resources outside the compartment: refused for narrowed access."""
    access = authorize(ctx, services, interaction, rtype)
    if access is None:
        return clauses
    _refuse_hidden(ctx, clauses)
    if access.narrowed:
        _refuse_reaching(clauses)
    return [*access.clauses, *clauses]


def narrow_system(
    ctx: RequestContext, services: Services, types: list[str], clauses: list[q.Clause]
) -> list[q.Clause]:
    """A system search: every `_type` must be permitted; each type's narrowing becomes one
    branch of an OR. Without `_type` a narrowed principal would need every type: refused."""
    if ctx.principal.kind == "anonymous":
        return clauses
    _refuse_hidden(ctx, clauses)
    if not types:  # only an unnarrowed grant on every type (user/*.s, system/*.s) fits
        try:
            authorize(ctx, services, "search-system", "*")
        except FhirError:
            raise forbidden("Name the resource types searched with _type", "_type") from None
        return [*_without_hidden(ctx), *clauses]
    accesses = [authorize(ctx, services, "search-system", t) for t in types]
    if not any(a is not None and a.narrowed for a in accesses):
        return clauses
    _refuse_reaching(clauses)
    branches = tuple((a.rtype, tuple(a.clauses)) for a in accesses if a is not None)
    return [q.Clause(q.Param("_type", "special"), (), by_type=branches), *clauses]


def _refuse_reaching(clauses: list[q.Clause]) -> None:
    for c in clauses:
        if c.chain is not None or c.has is not None:
            name = "_has" if c.has is not None else f"{c.param.code}.(chain)"
            raise forbidden(
                "Chained and _has search parameters are not available under patient-level "
                "scopes", name
            )


def _hidden(ctx: RequestContext) -> set[str]:
    """The types whose role the principal lacks (decide.ROLE_ONLY)."""
    return {t for t in ROLE_ONLY if not role_permits(ctx.principal, t)}


def _without_hidden(ctx: RequestContext) -> list[q.Clause]:
    """A system search without _type: every type but the hidden ones (one _type branch each)."""
    hidden = _hidden(ctx)
    if not hidden:
        return []
    branches = tuple((t, ()) for t in sorted(RESOURCE_TYPES - hidden))
    return [q.Clause(q.Param("_type", "special"), (), by_type=branches)]


def _refuse_hidden(ctx: RequestContext, clauses: list[q.Clause]) -> None:
    """403 for a chain or _has that reaches a hidden type: its values would leak through the
    matches (an inference oracle, security.md §3.2)."""
    hidden = _hidden(ctx)
    pending = list(clauses)
    while hidden and pending:
        c = pending.pop()
        if c.chain is not None:
            if c.target_type in hidden:
                raise forbidden(f"{c.target_type} is not available to this user", c.param.code)
            pending.append(c.chain)
        if c.has is not None:
            if c.has[0] in hidden:
                raise forbidden(f"{c.has[0]} is not available to this user", "_has")
            pending.append(c.has[2])


def check_history(ctx: RequestContext, services: Services, rtype: str | None) -> None:
    """Type and system history cannot be narrowed to a compartment (versions of resources
    that left it, deletions): refused for a narrowed principal, allowed for an unnarrowed one."""
    if ctx.principal.kind == "anonymous":
        return
    interaction = "history-system" if rtype is None else "history-type"
    access = authorize(ctx, services, interaction, rtype or "Resource")
    if rtype is None or (access is not None and access.narrowed):
        raise forbidden(f"{interaction} is not available under the granted scopes")


def keep_visible(
    session: Session, ctx: RequestContext, services: Services,
    items: list[tuple[str, str, bytes]],
) -> list[tuple[str, str, bytes]]:
    """_include/_revinclude results: those the principal may read; the others are dropped
    silently (a search returns what it may, search.html and security.md §3.2 step 7)."""
    if ctx.principal.kind == "anonymous" or not items:
        return items
    keep: set[tuple[str, str]] = set()
    for rtype in {t for t, _, _ in items}:
        try:
            access = authorize(ctx, services, "read", rtype)
        except FhirError:  # 403: the type is not readable at all
            continue
        assert access is not None
        ids = [i for t, i, _ in items if t == rtype]
        keep |= {(rtype, i) for i in visible(session, ctx, access, ids)}
    return [item for item in items if (item[0], item[1]) in keep]


def check_operation(
    session: Session, ctx: RequestContext, services: Services, name: str,
    rtype: str | None, rid: str | None,
) -> None:
    """Operations by the explicit table (decide.OPERATIONS); unknown ones: 403."""
    if ctx.principal.kind == "anonymous":
        return
    if rtype is not None and not role_permits(ctx.principal, rtype):
        if rid is not None:
            raise error(404, "not-found", f"{rtype}/{rid} is not known")
        raise forbidden(f"Operations on {rtype} are not available to this user")
    if name not in OPERATIONS:
        raise forbidden(f"Operation {name} is not available under the granted scopes")
    needed = OPERATIONS[name]
    if needed is None:
        return
    interaction, on_type = needed
    target = on_type or rtype
    if target is None or (on_type is not None and rtype not in (None, on_type)):
        raise forbidden(f"Operation {name} is not available here under the granted scopes")
    if rid is not None and rtype is not None:
        check_instance(session, ctx, services, interaction, rtype, rid)
    else:
        authorize(ctx, services, interaction, target)
