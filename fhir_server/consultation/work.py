"""The unit of work of a consultation operation (the referral's Work with the consultation
table and transition codes), the one step every transition takes, and who may invoke what:
the inviting side (the organization of ServiceRequest.requester) or the invited side (the
organizations of the invited experts, ServiceRequest.performer)."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.hooks import transaction
from ..model.resource import now
from ..operations.registry import Call, Outcome
from ..referral.transitions import Transition
from ..referral.work import Json, Work, bundle, coding, organization_of, split
from .codes import BUSINESS_SYSTEM, TRANSITION_SYSTEM
from .rules import business_status, is_consultation_task
from .transitions import table_of

INVITING, INVITED, EITHER = "inviting", "invited", "either"

#: operation -> the side whose users (or clients) may invoke it
SIDES: dict[str, str] = {
    "$request-consultation": INVITING,
    "$accept": INVITED,
    "$decline": INVITED,
    "$propose-time": INVITED,
    "$schedule": EITHER,
    "$start": EITHER,
    "$submit-opinion": INVITED,
    "$sign": INVITED,
    "$cancel": INVITING,
}
#: the side of each transition made by a plain PUT/PATCH of the Task (as its operation's)
TRANSITION_SIDES: dict[str, str | None] = {
    "accept": INVITED, "decline": INVITED, "redirect": INVITED, "propose-time": INVITED,
    "schedule": EITHER, "start": EITHER, "submit-opinion": INVITED, "sign": INVITED,
    "cancel": INVITING, "expire": None,
}  # fmt: skip


class ConsultWork(Work):
    """Work whose Provenance.activity codes are yl-consultation-transition."""

    activity_system = TRANSITION_SYSTEM

    def __init__(self, session: Any, services: Any, ctx: Any, at: str) -> None:
        super().__init__(session, services, ctx, at, table_of(services))


def transition(
    work: Work, task: Json, code: str, agent: Json, reason: Json | None = None
) -> Transition:
    """Check the table (409 otherwise), set status/businessStatus/statusReason and
    lastModified, and record the Provenance to write. The first answer of an expert (accept,
    decline, redirect) starts Task.executionPeriod: the response time of the statistics."""
    t = work.table.allowed(code, task.get("status", ""), business_status(task))
    task["status"], business = t.target
    task["businessStatus"] = {"coding": [coding(BUSINESS_SYSTEM, business)]}
    if reason is not None:
        task["statusReason"] = reason
    else:
        task.pop("statusReason", None)
    if code in ("accept", "decline", "redirect") and "executionPeriod" not in task:
        task["executionPeriod"] = {"start": work.at}
    if t.target[0] in ("completed", "rejected", "cancelled"):
        task.setdefault("executionPeriod", {})["end"] = work.at
    task["lastModified"] = work.at
    work.changed(task)
    work.lead = work.lead or ("Task", task["id"])
    work.records.append((task["id"], agent, t.code, t.number, reason))
    return t


def consultation_task(task: Json) -> Json:
    if not is_consultation_task(task):
        raise error(409, "business-rule", f"Task/{task['id']} is not a consultation Task", "Task")
    return task


def side_organizations(work: Work, side: str, sr: Json) -> set[str]:
    """The organizations of one side of the consultation of ServiceRequest `sr`."""
    refs: list[Any] = []
    if side in (INVITING, EITHER):
        refs.append(sr.get("requester"))
    if side in (INVITED, EITHER):
        refs.extend(sr.get("performer") or [])
    found = {organization_of(work, r) for r in refs}
    return {o for o in found if o is not None}


def check_side(work: Work, operation: str, sr: Json) -> None:
    """403 unless the caller acts for an organization on the operation's side (a user of it,
    or a backend client registered with it). Anonymous callers (auth off) are not checked."""
    principal = work.ctx.principal
    if principal.kind == "anonymous":
        return
    side = SIDES[operation]
    mine = principal.organization if principal.kind in ("user", "system") else None
    if mine is None or mine not in side_organizations(work, side, sr):
        who = {INVITING: "the inviting organization", INVITED: "an invited expert's organization",
               EITHER: "the inviting or an invited organization"}[side]  # fmt: skip
        raise error(403, "forbidden", f"Only a user or client of {who} may invoke {operation}")


def request_of(work: Work, task: Json) -> Json:
    return work.resolve(
        task.get("focus") or (task.get("basedOn") or [None])[0], "ServiceRequest", "Task.focus"
    )


def run(call: Call, body: Any, operation: str) -> Outcome:
    """Load the consultation Task, check the caller's side, honour If-Match, apply `body`
    and commit, in one write transaction; answer a collection Bundle, the Task first."""
    assert call.rid is not None
    with transaction(call.services, call.ctx) as session:
        work = ConsultWork(session, call.services, call.ctx, now())
        task = consultation_task(work.get("Task", call.rid))
        sr = request_of(work, task)
        check_side(work, operation, sr)
        work.if_match("Task", call.rid, call.if_match)
        work.lead = ("Task", call.rid)
        body(work, task, sr)
        saved = work.commit()
    return Outcome(bundle(call.ctx.base_url, saved))


def key_of(reference: Any) -> str | None:
    """`Type/id` of a reference, or None."""
    found = split(reference)
    return f"{found[0]}/{found[1]}" if found else None
