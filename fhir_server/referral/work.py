"""The unit of work of a referral operation: the resources it reads and writes in one write
transaction, how a transition is applied to a Task, and the runner every operation uses
(referral-model.md §2.5 consistency table, §3.2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..context import RequestContext
from ..errors import error
from ..interactions.hooks import transaction
from ..interactions.search import find
from ..interactions.write import check_if_match, new_id, save
from ..model import literal
from ..model.resource import now
from ..operations.registry import Call, Outcome
from ..services import Services
from ..storage.contract import Session, Stored
from .codes import (
    BUSINESS_SYSTEM,
    DIRECTION_URL,
    OUTPUT_SYSTEM,
    STATUS_REASON_URL,
    TRANSITION_SYSTEM,
    TYPE_SYSTEM,
)
from .rules import business_status, is_referral_task, milestone, provenance
from .sides import EITHER, RECEIVER, SENDER, SIDES
from .transitions import APPROVAL_OPEN, MILESTONES, Table, Transition, table_of

SYSTEM_AGENT = {"display": "fhir-server (system)"}


TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"


ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


Json = dict[str, Any]


Key = tuple[str, str]


def parse_instant(value: Any) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime (UTC when no zone), None if unparseable."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ref(resource: Json) -> Json:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def split(reference: Any) -> Key | None:
    """(type, id) of a literal relative or absolute reference, without its _history part."""
    value = reference.get("reference") if isinstance(reference, dict) else reference
    if not isinstance(value, str):
        return None
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


class Work:
    """The resources one operation reads and writes inside one write transaction, and the
    transitions it applied; `commit` writes Provenance, validates and saves everything."""

    #: the CodeSystem of the Provenance.activity codes (a workflow's transition codes)
    activity_system = TRANSITION_SYSTEM

    def __init__(
        self, session: Session, services: Services, ctx: RequestContext, at: str,
        table: Table | None = None,
    ) -> None:
        self.session, self.services, self.ctx, self.at = session, services, ctx, at
        self.table = table or table_of(services)
        self.prev: dict[Key, tuple[int, Stored] | None] = {}
        self.res: dict[Key, Json] = {}
        self.order: list[Key] = []
        #: (Task id, agent, yl-transition code, T-number, reason) of each transition applied
        self.records: list[tuple[str, Json, str, str | None, Json | None]] = []
        #: the Task the operation is about: first in the answer
        self.lead: Key | None = None

    def load(self, rtype: str, rid: str) -> Json | None:
        key = (rtype, rid)
        if key not in self.res:
            prev = self.session.current(rtype, rid)
            if prev is None or prev[1].deleted or prev[1].json is None:
                return None
            self.prev[key] = prev
            self.res[key] = literal.loads(prev[1].json)
        return self.res[key]

    def get(self, rtype: str, rid: str) -> Json:
        found = self.load(rtype, rid)
        if found is None:
            raise error(404, "not-found", f"{rtype}/{rid} is not known")
        return found

    def resolve(self, reference: Any, rtype: str, name: str) -> Json:
        """The resource a reference parameter/element points to; 422 if it does not resolve."""
        key = split(reference)
        found = self.load(*key) if key and key[0] == rtype else None
        if found is None:
            raise error(422, "processing", f"'{name}' must reference an existing {rtype}", name)
        return found

    def if_match(self, rtype: str, rid: str, value: str | None) -> None:
        check_if_match(self.prev.get((rtype, rid)), value)

    def changed(self, resource: Json) -> Json:
        key = (resource["resourceType"], resource["id"])
        self.res[key] = resource
        if key not in self.order:
            self.order.append(key)
        return resource

    def add(self, resource: Json) -> Json:
        resource["id"] = new_id()
        self.prev[(resource["resourceType"], resource["id"])] = None
        return self.changed(resource)

    def set_status(self, resource: Json | None, status: str, **fields: Any) -> None:
        if resource is None or resource.get("status") == status:
            return
        resource["status"] = status
        resource.update(fields)
        self.changed(resource)

    def record(self, task: Json, code: str, agent: Json, reason: Json | None) -> None:
        self.records.append((task["id"], agent, code, None, reason))

    def commit(self) -> list[Json]:
        """One Provenance per transition (target = the Task + every other resource written),
        then validate and save all; returns the stored resources, in order."""
        if self.lead in self.order:
            self.order.remove(self.lead)
            self.order.insert(0, self.lead)
        written = list(self.order)
        for rid, agent, code, label, reason in self.records:
            others = tuple(f"{rt}/{i}" for rt, i in written if (rt, i) != ("Task", rid))
            self.add(
                provenance(rid, code, self.at, agent, others, reason, label, self.activity_system)
            )
        out = []
        valid = {key: self.services.validator(self.res[key]) for key in self.order}
        for key in self.order:
            method = "PUT" if self.prev.get(key) else "POST"
            stored = save(self.session, self.services, *key, valid[key], self.prev[key], method)
            assert stored.json is not None
            out.append(literal.loads(stored.json))
        return out


def bundle(base: str, resources: list[Json]) -> Json:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now(),
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }


def coding(system: str, code: str, display: str | None = None) -> Json:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def referral_type(sr: Json) -> str | None:
    for category in sr.get("category") or []:
        for c in category.get("coding") or []:
            if c.get("system") == TYPE_SYSTEM:
                return str(c.get("code"))
    return None


def direction(resource: Json) -> Json | None:
    for ext in resource.get("extension") or []:
        if ext.get("url") == DIRECTION_URL:
            value = ext.get("valueCoding")
            return value if isinstance(value, dict) else None
    return None


def service_request(work: Work, task: Json) -> Json:
    return work.resolve(
        task.get("focus") or (task.get("basedOn") or [None])[0], "ServiceRequest", "Task.focus"
    )


def output(task: Json, name: str) -> list[Any]:
    """The values of Task.output entries of one slice (yl-task-output code)."""
    found: list[Any] = []
    for out in task.get("output") or []:
        codes = [c.get("code") for c in (out.get("type") or {}).get("coding") or []]
        if name in codes:
            found.extend(v for k, v in out.items() if k.startswith("value"))
    return found


def add_output(task: Json, name: str, value_key: str, value: Any) -> None:
    task.setdefault("output", []).append(
        {"type": {"coding": [coding(OUTPUT_SYSTEM, name)]}, value_key: value}
    )


def linked(work: Work, task: Json, name: str, rtype: str) -> Json | None:
    for value in output(task, name):
        key = split(value)
        if key and key[0] == rtype:
            return work.load(*key)
    return None


def approval_tasks(work: Work, task: Json) -> list[Json]:
    """The approval sub-tasks (code approve, partOf this Task)."""
    pairs = find(
        work.session, work.services, work.ctx, "Task", f"part-of=Task/{task['id']}", limit=None
    )
    subs = [work.load(t, i) for t, i in pairs]
    return [s for s in subs if s is not None and _has_code(s, TASK_CODES, "approve")]


def _has_code(task: Json, system: str, code: str) -> bool:
    codes = (task.get("code") or {}).get("coding") or []
    return any(c.get("system") == system and c.get("code") == code for c in codes)


def transition(
    work: Work,
    task: Json,
    code: str,
    agent: Json,
    to: str | None = None,
    reason: Json | None = None,
    extra_milestones: tuple[str, ...] = (),
) -> Transition:
    """Check the table, set status/businessStatus/statusReason, stamp milestones and
    lastModified, and record the Provenance to write (the shared step of every operation)."""
    t = work.table.allowed(code, task.get("status", ""), business_status(task), to)
    task["status"], business = t.target
    task["businessStatus"] = {"coding": [coding(BUSINESS_SYSTEM, business)]}
    if reason is not None:
        task["statusReason"] = reason
    else:
        task.pop("statusReason", None)
    for code_ in dict.fromkeys((*MILESTONES[code], *extra_milestones)):
        task.setdefault("extension", []).append(milestone(code_, work.at, agent))
    task["lastModified"] = work.at
    work.changed(task)
    work.lead = work.lead or ("Task", task["id"])
    work.records.append((task["id"], agent, t.code, t.number, reason))
    return t


def revoke(work: Work, sr: Json, reason: Json | None, status: str = "revoked") -> None:
    """SR -> revoked (or entered-in-error) with the yl-status-reason extension (yl-sr-2)."""
    if sr.get("status") == status:
        return
    sr["status"] = status
    if reason is not None:
        url = STATUS_REASON_URL
        sr["extension"] = [e for e in sr.get("extension") or [] if e.get("url") != url]
        sr["extension"].append({"url": url, "valueCodeableConcept": reason})
    work.changed(sr)


def close_approvals(work: Work, task: Json) -> None:
    """Cancel the approval sub-tasks still open when the referral ends undecided by them."""
    reason = {"text": f"Referral Task/{task['id']} is {task.get('status')}"}
    for sub in approval_tasks(work, task):
        if sub.get("status") in APPROVAL_OPEN:
            work.set_status(sub, "cancelled", lastModified=work.at, statusReason=reason)


#: the types Annotation.authorReference may name (R4 datatypes.html#Annotation)
NOTE_AUTHORS = ("Practitioner/", "Patient/", "RelatedPerson/", "Organization/")


def add_note(work: Work, task: Json, text: str | None, author: Json) -> None:
    """A note by `author`; a PractitionerRole, which an Annotation cannot reference, is named
    as text."""
    if text:
        note: Json = {"text": text, "time": work.at}
        ref = author.get("reference")
        if isinstance(ref, str) and ref.startswith(NOTE_AUTHORS):
            note["authorReference"] = author
        elif ref or author.get("display"):
            note["authorString"] = author.get("display") or ref
        task.setdefault("note", []).append(note)


Body = Callable[[Work, Json], None]


Repeat = Callable[[Work, Json], Json | None]


def run(
    call: Call, rtype: str, body: Body, repeat: Repeat | None = None, *, operation: str
) -> Outcome:
    """Load the instance, check the caller is on the operation's side (sides.py), honour
    If-Match, apply `body`, commit: all in one transaction. `repeat` may answer a finished
    Bundle first (an idempotent repeat writes nothing)."""
    assert call.rid is not None
    with transaction(call.services, call.ctx) as session:
        work = Work(session, call.services, call.ctx, now())
        resource = work.get(rtype, call.rid)
        check_side(work, SIDES[operation], f"invoke {operation}", resource)
        answer = repeat(work, resource) if repeat else None
        if answer is not None:
            return Outcome(answer)
        work.if_match(rtype, call.rid, call.if_match)
        if rtype == "Task":
            work.lead = ("Task", call.rid)
        body(work, resource)
        saved = work.commit()
    return Outcome(bundle(call.ctx.base_url, saved))


def check_side(work: Work, side: str | None, what: str, resource: Json) -> None:
    """403 unless the caller acts for the organization on `side` of this referral (sides.py:
    only the receiving organization accepts, only the sender cancels; None: nobody over REST):
    a user of it, or a backend client registered with it. Anonymous callers (auth off) are
    not checked; patients belong to no side."""
    principal = work.ctx.principal
    if principal.kind == "anonymous":
        return
    where = {RECEIVER: "the receiving organization (Task.owner)",
             SENDER: "the referring organization (ServiceRequest.requester)",
             EITHER: "the referring or the receiving organization"}  # fmt: skip
    if side is None:
        raise error(403, "forbidden", f"Only the server's timers may {what}")
    mine = principal.organization if principal.kind in ("user", "system") else None
    if mine is None or mine not in side_organizations(work, side, resource):
        raise error(403, "forbidden", f"Only a user or client of {where[side]} may {what} here")


def side_organizations(work: Work, side: str, resource: Json) -> set[str | None]:
    """The organizations on `side` of the referral of `resource` (a Task, or the
    ServiceRequest itself): the receiver is Task.owner's; the sender the ServiceRequest's
    requester's (Task.requester's for a Task without one, as a plain write may make)."""
    found: set[str | None] = set()
    if side in (RECEIVER, EITHER) and resource["resourceType"] == "Task":
        found.add(organization_of(work, resource.get("owner")))
    if side in (SENDER, EITHER):
        sr = resource if resource["resourceType"] == "ServiceRequest" else None
        focus = split(resource.get("focus") or (resource.get("basedOn") or [None])[0])
        if sr is None and focus is not None and focus[0] == "ServiceRequest":
            sr = work.load(*focus)
        found.add(organization_of(work, (sr or resource).get("requester")))
    return found - {None}


def organization_of(work: Work, reference: Any) -> str | None:
    """`Organization/id` a reference stands for: the Organization itself, or a
    PractitionerRole's organization."""
    key = split(reference)
    if key is not None and key[0] == "PractitionerRole":
        role = work.load(*key)
        key = split((role or {}).get("organization"))
    return f"Organization/{key[1]}" if key is not None and key[0] == "Organization" else None


def referral_task(task: Json) -> Json:
    if not is_referral_task(task) or business_status(task) is None:
        raise error(409, "business-rule", f"Task/{task['id']} is not a referral Task", "Task")
    return task


def is_approval(task: Json) -> bool:
    return _has_code(task, TASK_CODES, "approve") and bool(task.get("partOf"))

