"""The policy decision point: which grants let a principal do an interaction on a type, and the
search clauses each grant narrows it to (security.md §3.2 steps 3 and 4). Pure: no I/O.

Effective access = scopes ∩ launch context ∩ the consortium rule: a practitioner (and a system
client registered with an organization) sees the Patient compartments of the patients their
organization manages, has a care relationship for (relationships registered by features on
Services.care) or holds a permitting Consent for, unless a Consent denies it; a user with the
break-glass role may lift the rule for reads in an emergency. Security labels are not decided
here yet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..context import Principal
from ..errors import FhirError, error
from ..search import query as q
from ..search.registry import Registry
from .scopes import Grant, parse_scopes

#: REST interactions (http.html) as the SMART v2 letter that permits them (§1.4)
LETTER = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}
#: operations this server lets a non-anonymous principal invoke: name -> None when it needs
#: no grant (it reads nothing stored), or (interaction, resource type or None for the type it
#: is invoked on). An operation not listed is refused (default deny).
OPERATIONS: dict[str, tuple[str, str | None] | None] = {
    "$validate": None,
    "$referral-slip": ("read", "ServiceRequest"),
    "$lookup": ("read", None),
    "$validate-code": ("read", None),
    "$expand": ("read", None),
    "$subsumes": ("read", None),
    "$translate": ("read", None),
    # the patient-centred operations (issue 15): narrowed like the searches they are
    "$match": ("search-type", "Patient"),
    "$link": ("update", "Patient"),
    "$unlink": ("update", "Patient"),
    "$everything": ("read", None),  # each type of the compartment narrowed as its search
    "$export": None,  # reads nothing at kick-off: each type is authorized as its search
    # the video room (issue 14): being a participant of the Appointment is the grant (an
    # invited expert of another hospital joins without reading the patient's record); the
    # room checks it, and answers others as a read would (consultation/room/join.py)
    "$join": None,
    # the referral operations (referral-model.md §2.5) change the Task (ServiceRequest for
    # $submit) they are invoked on: an update grant on it; which side of the referral may
    # invoke each is the referral feature's check (referral/sides.py)
    "$submit": ("update", "ServiceRequest"),
    # counts per direction, hospital and month, no patient's data: the consortium's referral
    # offices and managers read them with a search grant on ServiceRequest (patients may not:
    # STAFF_ONLY)
    "$referral-stats": ("search-type", "ServiceRequest"),
    **{
        name: ("update", "Task")
        for name in (
            "$claim", "$accept", "$reject", "$request-info", "$provide-info", "$cancel",
            "$check-in", "$start-treatment", "$no-show", "$complete", "$fail",
            "$enter-in-error",
        )
    },
    # the consultation operations (issue 14): an update grant on the Task (ServiceRequest,
    # Communication) invoked on; which side may invoke each is consultation/work.py's check
    "$request-consultation": ("update", "ServiceRequest"),
    **{
        name: ("update", "Task")
        for name in ("$decline", "$propose-time", "$schedule", "$start", "$submit-opinion", "$sign")
    },
    "$mark-read": ("update", "Communication"),
    "$find-experts": ("search-type", "PractitionerRole"),
    "$consultation-stats": ("search-type", "Task"),
    "$consultation-opinion": ("read", "Composition"),
}


#: operations over the whole consortium's figures: for practitioners and system clients, never
#: for a patient's token (its compartment is one patient; the figures are everyone's)
STAFF_ONLY = frozenset({"$referral-stats"})

#: compartment types whose resources are often about no patient at all (R4 puts Schedule in the
#: Patient compartment by `actor`, which is mostly a PractitionerRole or Location): one naming
#: no Patient is shared like the resources outside the compartment, so hospitals see each
#: other's reserved-slot Schedules (referral booking) and collaboration teams (CareTeam of
#: doctors, 协作医生关系: whom to invite to a consultation); a patient's own stays confined
SHARED_UNLESS_PATIENT = frozenset({"Schedule", "CareTeam"})

#: types R4 leaves out of the Patient compartment whose resources name a patient and their care:
#: the consortium rule confines them like the compartment's (a referral Task names its patient
#: in Task.for, search parameter `subject`; else every hospital would see every referral)
BEYOND_COMPARTMENT = {"Task": ["subject"]}

#: compartment types whose resources often name no Patient but a resource that does: one is
#: seen by whoever sees that resource (reference parameter, its type, the type's parameters
#: naming the patient). A workflow's Provenance targets the Task (referral/work.py), so the
#: hospitals of a referral or consultation read its activity (操作记录)
SEEN_WITH_TARGET = {"Provenance": (("target", "Task", tuple(BEYOND_COMPARTMENT["Task"])),)}

#: resource types only principals holding a server role may touch at all, whatever their
#: scopes: the audit trail is for the auditor role only (issue 10; security.md §4: "only the
#: privacy/security officer reads them"). Anonymous callers are not checked here: they reach
#: the interactions only while `auth` is off (auth/bearer.py answers 401 otherwise).
ROLE_ONLY: dict[str, str] = {"AuditEvent": "auditor"}


#: the server role that lets a practitioner break the glass (`fhir-server user add --role`)
BREAK_GLASS_ROLE = "break-glass"
#: the server roles a user may hold beyond their scopes
ROLES = ("auditor", BREAK_GLASS_ROLE)


def may_break_glass(principal: Principal) -> bool:
    """Only users (practitioners) holding the break-glass role: patients see their own record
    anyway, and a system client acts for no one in an emergency (HIPAA 164.312(a)(2)(ii)
    emergency access is a person's, reviewed afterwards)."""
    return principal.kind == "user" and BREAK_GLASS_ROLE in principal.roles


def role_permits(principal: Principal, rtype: str) -> bool:
    """Whether the principal holds the role `rtype` needs (ROLE_ONLY), if it needs one."""
    role = ROLE_ONLY.get(rtype)
    return role is None or principal.kind == "anonymous" or role in principal.roles


def patient_id(principal: Principal) -> str | None:
    """The launch-context patient as a bare id (a token may carry `Patient/x` or `x`)."""
    pid = principal.patient
    return pid.removeprefix("Patient/") if pid else None


def allowed(principal: Principal, interaction: str, rtype: str) -> list[Grant]:
    """The principal's grants that permit `interaction` on `rtype`. Unknown interactions get
    none, nor does a type whose role (ROLE_ONLY) the principal lacks. A grant confined to a
    patient (confining_patient) needs that patient and a type in the Patient compartment (a
    compartment membership cannot be worked out for other types)."""
    letter = LETTER.get(interaction)
    if letter is None or not role_permits(principal, rtype):
        return []
    grants = [g for g in parse_scopes(principal.scopes) if g.covers(letter, rtype)]
    return [g for g in grants if _within_context(confining_patient(principal, g), rtype)]


def confining_patient(principal: Principal, grant: Grant) -> str | None:
    """The patient whose compartment confines `grant`, "" when it must be confined but no
    patient is known (it then permits nothing), None when no patient confines it. A patient/
    grant is confined to the launch patient; any grant of a patient user to that user (their
    fhirUser): `user/` gives what the user may see, and a patient may see their own record only
    (SMART App Launch 2.x scopes; issue 10)."""
    if grant.level == "patient":
        return patient_id(principal) or ""
    if principal.kind == "patient":
        me = principal.fhir_user or ""
        return me.removeprefix("Patient/") if me.startswith("Patient/") else ""
    return None


def _within_context(pid: str | None, rtype: str) -> bool:
    return pid is None or (
        pid != ""
        and (
            rtype == "Patient"
            or rtype in q.COMPARTMENTS.get("Patient", {})
            or rtype in BEYOND_COMPARTMENT
        )
    )


def narrowing(
    principal: Principal, grant: Grant, rtype: str, registry: Registry,
    tenancy: q.Clause | None = None,
) -> list[q.Clause] | None:
    """The clauses (ANDed) that confine `grant` for `rtype`: the patient compartment for
    grants confined to a patient, the consortium rule (`tenancy`), plus granular criteria. None
    when a criterion does not apply to `rtype` (the grant then permits nothing: never widen)."""
    clauses: list[q.Clause] = []
    pid = confining_patient(principal, grant)
    if pid is not None:
        assert pid  # allowed() dropped grants confined to no known patient
        clauses.append(_compartment(pid, rtype))
    if tenancy is not None:
        clauses.append(tenancy)
    for name, value in grant.criteria:
        try:
            clauses.append(q.parse_clause(registry, rtype, name, value))
        except q.Unknown:
            return None
    return clauses


def _compartment(pid: str, rtype: str) -> q.Clause:
    """The patient compartment; for Patient itself, that patient alone: the R4 definition also
    lists Patients that `link` to it, but links never widen access (security.md §3.2)."""
    if rtype == "Patient":
        return q.Clause(q.Param("_compartment", "special"), (), compartment=("Patient", pid, ()))
    if rtype in BEYOND_COMPARTMENT:  # a patient's own referral Tasks (Task.for): their status
        params = tuple(BEYOND_COMPARTMENT[rtype])
        clause = q.Param("_compartment", "special")
        return q.Clause(clause, (), compartment=("Patient", pid, params))
    return q.compartment_clause("Patient", pid, rtype)


def combine(options: list[list[q.Clause]]) -> list[q.Clause]:
    """One narrowing equivalent to the union (OR) of several grants' narrowings: the least
    restrictive one, when its clauses are a subset of every other's (the union is then exactly
    its matches). Anything else would need an OR of ANDs: refused (403) rather than widened."""
    if not options:
        raise forbidden("No scope permits this")
    sets = [frozenset(o) for o in options]
    for candidate, clauses in zip(sets, options, strict=True):
        if all(candidate <= other for other in sets):
            return clauses
    raise forbidden(
        "Several granular scopes apply to this request with different criteria; "
        "search with the criteria of one of them"
    )


def organization_id(principal: Principal) -> str | None:
    """The bare id of the organization whose patients the consortium rule gives the principal:
    "" for a user without one (they see no patient's data), None when the rule does not apply
    (patients: confined to themselves; a system client registered without an organization)."""
    org = principal.organization or ""
    bare = org.removeprefix("Organization/") if org.startswith("Organization/") else ""
    if principal.kind == "user" or (principal.kind == "system" and bare):
        return bare
    return None


def tenancy(
    principal: Principal, interaction: str, rtype: str, care: tuple[q.CareRelationship, ...],
    now: datetime,
) -> q.Clause | None:
    """The consortium rule for `rtype` (security.md §3.2 step 5, issue 10 "Access decisions"):
    for a type in the Patient compartment, that compartment of the patients the principal's
    organization manages, has a care relationship for (while it holds, and for its `days`
    after it ended) or a Consent permits it, less those a Consent denies it; None for types
    outside the compartment (Organization, Practitioner, Location, terminology, ...: shared by
    the consortium; who may write them is owner.py's check) and for principals it does not
    bind. Consents are written only for the
    patients the organization manages: a patient's privacy decision is recorded by their own
    hospital (or by the patient), and no one widens their access, or lifts a denial, by
    writing one."""
    org = organization_id(principal)
    compartment = {**q.COMPARTMENTS.get("Patient", {}), **BEYOND_COMPARTMENT}
    if org is None or (rtype != "Patient" and rtype not in compartment):
        return None
    if rtype in ROLE_ONLY and ROLE_ONLY[rtype] in principal.roles:
        return None  # the consortium's auditor reads the whole trail, every hospital's
    # a Patient is in the set by its own id: the R4 definition's Patient.link would let a
    # record linking to a visible patient in, and links never widen access (§3.2)
    params = () if rtype == "Patient" else tuple(p for p in compartment[rtype] if p != "{def}")
    if rtype == "Consent" and LETTER.get(interaction) not in ("r", "s"):
        patients = q.PatientSet(org, (), params)
    else:
        since = tuple((r, (now - timedelta(days=r.days)).isoformat()) for r in care)
        patients = q.PatientSet(
            org, since, params, consents_at=now.isoformat(),
            shared_unless_patient=rtype in SHARED_UNLESS_PATIENT,
            through=SEEN_WITH_TARGET.get(rtype, ()),
        )
    return q.Clause(q.Param("_tenancy", "special"), (), patients=patients)


def decide(
    principal: Principal, interaction: str, rtype: str, registry: Registry,
    care: tuple[q.CareRelationship, ...] = (), now: datetime | None = None,
    emergency: bool = False,
) -> list[q.Clause]:
    """The clauses that confine `interaction` on `rtype` for `principal` ([] = all of the
    type); 403 when no scope permits it at all. `care`: the care relationships features
    registered; `now`: the instant relationships and Consents are judged at; `emergency`: the
    principal broke the glass (may_break_glass, checked by the caller): reads and searches are
    not bound by the consortium rule (nor by Consents denying them), writes still are."""
    options = []
    at = now or datetime.now(UTC)
    lifted = emergency and LETTER.get(interaction) in ("r", "s")
    bound = None if lifted else tenancy(principal, interaction, rtype, care, at)
    for grant in allowed(principal, interaction, rtype):
        clauses = narrowing(principal, grant, rtype, registry, bound)
        if clauses is not None:
            options.append(clauses)
    if not options:
        raise forbidden(f"No granted scope permits {interaction} on {rtype}")
    return combine(options)


def forbidden(message: str, expression: str | None = None) -> FhirError:
    """403 (security.html#AccessDenied: the type or interaction is not permitted at all)."""
    return error(403, "forbidden", message, expression)
