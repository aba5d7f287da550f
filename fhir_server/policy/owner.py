"""Who may write the consortium's shared resources (security.md §3.2: "writes only into
owner_org = caller_org"): every hospital reads the Organizations, Practitioners, Schedules and
Slots of the others (the consortium rule shares them), but a create, update, patch or delete,
alone or inside a batch or transaction, is allowed only to the organization that owns the
resource and to the organizations above it in the Organization.partOf chain (the consortium
office). The owner is read from one element per type (OWNER), following references:

    Organization      itself and its partOf chain (a hospital writes itself and its
                      departments; the office every member)
    PractitionerRole  .organization
    Location          .managingOrganization, else the owner of its .partOf Location
    HealthcareService .providedBy
    Endpoint          .managingOrganization
    CareTeam          .managingOrganization (every one named)
    Schedule          .actor: each actor's owner (PractitionerRole, Location,
                      HealthcareService, Practitioner, Device.owner)
    Slot              .schedule: the Schedule's owner
    Practitioner      the organizations of the PractitionerRoles naming it, all of them

A resource with several owners (a Schedule of two hospitals' doctors, a Practitioner working in
two) is written only by someone above every one of them: the consortium office. So a hospital
that gives another hospital's Practitioner a PractitionerRole of its own does not co-own the
person record: it makes it the office's to write. A Practitioner no role names yet belongs to
no one (a hospital creates it, then its role). Schedules and CareTeams naming a Patient are
the patient's record, under the consortium rule (decide.SHARED_UNLESS_PATIENT), not here.

The old version is checked as well as the new one, so nobody takes a resource over by
rewriting its owner element; an Organization's partOf changes only by someone at or above the
old and the new parent (no hospital leaves the office's oversight or places itself
elsewhere); an old version naming no owner (data from before this rule) may be claimed by any
writer; a PUT bringing back a deleted id is checked against the version before its delete
(enforce.check_written). New content must name an owner the writer may write for. Only users
and patients are bound: system clients and anonymous callers (auth off) keep their rights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import RequestContext
from ..model import literal
from ..search import query as q
from ..storage.contract import Session
from .decide import forbidden, organization_id

if TYPE_CHECKING:
    from ..services import Services

Json = dict[str, Any]

#: the shared types this rule binds, with the element that decides each one's owner
OWNER = {
    "Organization": "Organization.partOf",
    "PractitionerRole": "PractitionerRole.organization",
    "Location": "Location.managingOrganization",
    "HealthcareService": "HealthcareService.providedBy",
    "Endpoint": "Endpoint.managingOrganization",
    "CareTeam": "CareTeam.managingOrganization",
    "Schedule": "Schedule.actor",
    "Slot": "Slot.schedule",
    "Practitioner": "PractitionerRole.organization",
}
#: types whose owner lives in another resource: new content may name no owner
_OWNED_ELSEWHERE = frozenset({"Practitioner"})
#: how far references (partOf chains, Location in Location) are followed: beyond, a loop
_DEPTH = 8


def check_owner(
    session: Session, ctx: RequestContext, services: Services, rtype: str, rid: str,
    before: Json | None, after: Json | None,
) -> None:
    """403 unless the caller may write this shared resource: the old version (update, patch,
    delete) and the new one (create, update, patch) must both be owned by the caller's
    organization or an organization below it in the partOf chain."""
    kind = ctx.principal.kind
    if rtype not in OWNER or kind in ("anonymous", "system"):
        return
    mine = organization_id(ctx.principal) or None
    look = _Lookup(session, ctx, services)
    element = OWNER[rtype]
    for state, version in (("old", before), ("new", after)):
        if version is None or _names_patient(rtype, version):
            continue
        look.pinned = {(rtype, rid): version}  # this version, not the one stored now
        owners = look.owners(rtype, rid, version, 0)
        if not owners:
            if state == "old" or rtype in _OWNED_ELSEWHERE:
                continue  # nobody's: may be claimed
            raise forbidden(
                f"{element} must name your organization"
                f"{f' (Organization/{mine})' if mine else ''}: it decides who owns {rtype}/{rid}",
                element,
            )
        foreign = sorted(o for o in owners if mine is None or mine not in look.chain(o))
        if foreign:
            named = ", ".join(f"Organization/{o}" for o in foreign)
            whose = "belongs to" if state == "old" else "would belong to"
            raise forbidden(
                f"{rtype}/{rid} {whose} {named} ({element}): only that organization or the "
                "consortium office above it (Organization.partOf) may write it",
                element,
            )
    if rtype == "Organization" and after is not None:
        _check_placed(look, mine, rid, before, after)


def _check_placed(look: _Lookup, mine: str | None, rid: str, before: Json | None,
                  after: Json) -> None:  # fmt: skip
    """An Organization is put under another, or taken from under one, only by someone at or
    above that one: a hospital does not leave the consortium office's oversight, nor place
    itself (or a new organization) under an organization that is not its own."""
    old, new = _key((before or {}).get("partOf")), _key(after.get("partOf"))
    if old == new:
        return
    for parent in (old, new):
        if parent is not None and (mine is None or mine not in look.chain(parent[1])):
            raise forbidden(
                f"Organization/{rid} is placed under or taken from Organization/{parent[1]} "
                "(Organization.partOf) only by that organization or one above it",
                "Organization.partOf",
            )


def _names_patient(rtype: str, resource: Json) -> bool:
    """A Schedule or CareTeam of a patient: their record, not a shared resource."""
    if rtype == "Schedule":
        refs = resource.get("actor") or []
    elif rtype == "CareTeam":
        refs = [resource.get("subject"), *(
            p.get("member") for p in resource.get("participant") or [] if isinstance(p, dict)
        )]  # fmt: skip
    else:
        return False
    return any((_key(r) or ("", ""))[0] == "Patient" for r in refs)


def _key(reference: Any) -> tuple[str, str] | None:
    """(type, id) of a literal relative or absolute reference; None for others (contained,
    conditional, logical)."""
    value = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(value, str) or value.startswith("#") or "?" in value:
        return None
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 and parts[-1] else None


class _Lookup:
    """Reads the resources ownership follows, inside the write transaction (so a transaction
    that creates a Schedule and its Slots sees the Schedule)."""

    def __init__(self, session: Session, ctx: RequestContext, services: Services) -> None:
        self.session, self.ctx, self.services = session, ctx, services
        #: the version of the resource being checked, read instead of the stored one
        self.pinned: dict[tuple[str, str], Json] = {}

    def load(self, reference: Any, rtype: str) -> tuple[str, Json] | None:
        key = _key(reference)
        if key is None or key[0] != rtype:
            return None
        if key in self.pinned:
            return key[1], self.pinned[key]
        found = self.session.current(*key)
        if found is None or found[1].deleted or found[1].json is None:
            return None
        return key[1], literal.loads(found[1].json)

    def chain(self, org: str) -> list[str]:
        """The organization and those above it (Organization.partOf), nearest first."""
        out = [org]
        current = self.load({"reference": f"Organization/{org}"}, "Organization")
        while current is not None and len(out) < _DEPTH:
            parent = _key(current[1].get("partOf"))
            if parent is None or parent[0] != "Organization" or parent[1] in out:
                break
            out.append(parent[1])
            current = self.load(current[1].get("partOf"), "Organization")
        return out

    def owners(self, rtype: str, rid: str, resource: Json, depth: int) -> set[str]:
        """The ids of the organizations owning `resource` (see the module's table)."""
        if depth > _DEPTH:
            return set()
        if rtype == "Organization":
            return {rid}  # its chain (partOf) decides who else may write it
        if rtype == "Practitioner":
            return self._roles_of(rid)
        if rtype == "Slot":
            return self._owners_of(resource.get("schedule"), "Schedule", depth)
        if rtype == "Schedule":
            found: set[str] = set()
            for actor in resource.get("actor") or []:
                key = _key(actor)
                if key is not None:
                    found |= self._owners_of(actor, key[0], depth)
            return found
        if rtype == "Location" and not resource.get("managingOrganization"):
            return self._owners_of(resource.get("partOf"), "Location", depth)
        field = {"Device": "owner", **{t: e.split(".")[1] for t, e in OWNER.items()}}[rtype]
        value = resource.get(field)
        refs = value if isinstance(value, list) else [value]
        return {o for r in refs for o in self._org(r)}

    def _org(self, reference: Any) -> set[str]:
        key = _key(reference)
        return {key[1]} if key is not None and key[0] == "Organization" else set()

    def _owners_of(self, reference: Any, rtype: str, depth: int) -> set[str]:
        if rtype not in OWNER and rtype != "Device":
            return set()
        if rtype == "Practitioner":
            key = _key(reference)
            return self._roles_of(key[1]) if key is not None and key[0] == rtype else set()
        found = self.load(reference, rtype)
        return set() if found is None else self.owners(rtype, found[0], found[1], depth + 1)

    def _roles_of(self, practitioner: str) -> set[str]:
        """The organizations of the PractitionerRoles naming the Practitioner."""
        registry = self.services.registry
        clause = q.parse_clause(registry, "PractitionerRole", "practitioner",
                                f"Practitioner/{practitioner}")  # fmt: skip
        found: set[str] = set()
        for _, rid in self.session.match_ids(self.ctx.base_url, "PractitionerRole", [clause],
                                             None):  # fmt: skip
            role = self.load({"reference": f"PractitionerRole/{rid}"}, "PractitionerRole")
            if role is not None:
                found |= self._org(role[1].get("organization"))
        return found
