"""Enforcing the policy decision in the interactions (security.md §3.2 step 6): searches are
narrowed in the query, single resources and included ones are checked against the same
clauses in SQL, writes on the old and the new version. Anonymous principals (no token) are
not checked here: whether a token is required is the authorization server's setting.

Hidden resources answer 404 (no existence oracle); an interaction no scope permits, 403. A type
the principal lacks the role for (decide.ROLE_ONLY: AuditEvent) is hidden whole: its instances
answer 404, searches of it 403, and no other search reaches it (system search, chains, _has,
includes); nor does a chain or _has reach a type the principal sees only part of.

Break-the-glass: a request carrying a reason (X-Break-Glass-Reason, RequestContext.break_glass)
from a user with the break-glass role reads past the consortium rule; it is refused (403) to
anyone else, and while the audit trail is off (no emergency access goes unrecorded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from ..context import RequestContext
from ..errors import FhirError, error
from ..search import query as q
from ..spec import RESOURCE_TYPES
from ..storage.contract import Session, Stored
from .decide import (
    OPERATIONS,
    ROLE_ONLY,
    STAFF_ONLY,
    decide,
    forbidden,
    may_break_glass,
    role_permits,
)
from .owner import OWNER, check_owner

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
    care, emergency = tuple(services.care), breaks_glass(ctx, services)
    clauses = decide(ctx.principal, interaction, rtype, services.registry, care, None, emergency)
    return Access(rtype, clauses)


#: the longest break-the-glass reason kept (it goes into every AuditEvent of the request)
MAX_REASON = 500


def breaks_glass(ctx: RequestContext, services: Services) -> bool:
    """Whether this request breaks the glass (security.md §3.2: an explicit step with a
    reason; HIPAA 164.312(a)(2)(ii) emergency access): False without a reason given; 403 for
    a principal who may not (decide.may_break_glass) and while the audit trail is off; 400
    for an empty or overlong reason."""
    reason = ctx.break_glass
    if reason is None:
        return False
    header = "X-Break-Glass-Reason"
    if not may_break_glass(ctx.principal):
        raise forbidden("Break-the-glass is reserved to users with the break-glass role", header)
    if not services.settings.audit:
        raise forbidden("Break-the-glass needs the audit trail (setting audit) on", header)
    if not reason or len(reason) > MAX_REASON:
        raise error(
            400, "required", f"{header} must give the reason, 1-{MAX_REASON} characters", header
        )
    return True


def visible(session: Session, ctx: RequestContext, access: Access, ids: Iterable[str]) -> set[str]:
    """Those of `ids` (current, undeleted resources of access.rtype) inside the Access."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    by_id = q.Clause(q.Param("_id", "token"), tuple(wanted))
    found = session.match_ids(ctx.base_url, access.rtype, [by_id, *access.clauses], None)
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
    rid: str, before: Stored | None = None, after: dict[str, Any] | None = None,
) -> None:
    """After a create/update stored its new version `after` over `before` (inside the write
    transaction): 403 when the new content lies outside what the principal may write, e.g. an
    Observation moved to another patient, or when a shared resource's old or new version is
    another organization's (owner.py); raising rolls the transaction back. A Task written
    does not count as a care relationship for its own check (no writer grants itself access),
    except in an update keeping its patient (Task.for) of a Task the writer could read
    (check_instance): that gives the writer nothing they did not have, and lets the receiving
    hospital of a referral update its Task (which side may change what is the referral
    feature's check: referral/guard.py)."""
    access = authorize(ctx, services, interaction, rtype)
    if access is not None and rtype == "Task" and not _keeps_patient(before, after):
        access = Access(rtype, [_excluding(c, rid) for c in access.clauses])
    if access is not None and access.narrowed and not visible(session, ctx, access, [rid]):
        raise forbidden(
            f"The {rtype} written lies outside what the granted scopes permit ({interaction})"
        )
    if rtype in OWNER:  # a shared resource: its owner writes it (owner.py)
        current = session.current(rtype, rid)
        new = after if after is not None else _json(current)
        old = _json(before) if before is not None else _before_deleted(session, current)
        check_owner(session, ctx, services, rtype, rid, old, new)


def _before_deleted(session: Session, current: tuple[Any, Stored] | None) -> dict[str, Any] | None:
    """What a shared resource was before its delete, when a PUT brings its id back: still
    its owner's, so no other hospital takes the id and its history over (a new resource gets
    a new id). None for a resource never stored before."""
    if current is None:
        return None
    stored = current[1]
    for version in range(stored.version - 1, 0, -1):
        found = _json(session.version(stored.type, stored.id, version))
        if found is not None:
            return found
    return None


def _json(found: Stored | tuple[Any, Stored] | None) -> dict[str, Any] | None:
    """A stored version (or session.current's answer) as JSON; None when none or deleted."""
    stored = found[1] if isinstance(found, tuple) else found
    if stored is None or stored.deleted or stored.json is None:
        return None
    parsed: dict[str, Any] = orjson.loads(stored.json)
    return parsed


def _keeps_patient(before: Stored | None, after: dict[str, Any] | None) -> bool:
    old = _json(before)
    return old is not None and after is not None and old.get("for") == after.get("for")


def _excluding(clause: q.Clause, task_id: str) -> q.Clause:
    if clause.patients is None:
        return clause
    return replace(clause, patients=replace(clause.patients, excluding=task_id))


def narrow(
    ctx: RequestContext, services: Services, interaction: str, rtype: str,
    clauses: list[q.Clause],
) -> list[q.Clause]:
    """A type-level query's clauses plus the Access clauses (search, conditional URLs).
    Chains and _has reach resources outside the narrowing: refused for narrowed access, and
    into a narrowed type (_refuse_oracles)."""
    access = authorize(ctx, services, interaction, rtype)
    if access is None:
        return clauses
    if access.narrowed:
        _refuse_reaching(clauses)
    _refuse_oracles(ctx, services, clauses)
    return [*access.clauses, *clauses]


def narrow_system(
    ctx: RequestContext, services: Services, types: list[str], clauses: list[q.Clause]
) -> list[q.Clause]:
    """A system search: every `_type` must be permitted; each type's narrowing becomes one
    branch of an OR. Without `_type` a narrowed principal would need every type: refused."""
    if ctx.principal.kind == "anonymous":
        return clauses
    _refuse_oracles(ctx, services, clauses)
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
                "Chained and _has search parameters are not available on a type this user "
                "sees only in part", name
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


def _refuse_oracles(ctx: RequestContext, services: Services, clauses: list[q.Clause]) -> None:
    """403 for a chain or _has that reaches a type the principal may not search, or sees only
    part of (a hidden type; the Patient compartment under the consortium rule): its values
    would leak through the matches, e.g. `Organization?_has:Patient:organization:name=X`
    telling whether another hospital has such a patient (an inference oracle, security.md
    §3.2)."""
    pending = list(clauses)
    while pending:
        c = pending.pop()
        reached = c.target_type if c.chain is not None else c.has[0] if c.has else None
        if reached is None:
            continue
        name = "_has" if c.has is not None else c.param.code
        try:
            partial = authorize(ctx, services, "search-type", reached)
        except FhirError:
            raise forbidden(f"{reached} is not available to this user", name) from None
        if partial is not None and partial.narrowed:
            raise forbidden(
                f"Chained and _has search parameters cannot reach {reached} resources, which "
                "this user sees only in part", name
            )
        pending.append(c.chain if c.chain is not None else c.has[2])  # type: ignore[index]


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
    if name in STAFF_ONLY and ctx.principal.kind == "patient":
        raise forbidden(f"Operation {name} is not available to patients")
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
