"""The consultation feature's write hooks: a plain PUT/PATCH (or create, delete) of a
consultation Task keeps to the transition table (rules.py; 409 otherwise) and to the sides
(work.py), and a legal move gets its Provenance and lastModified as by its operation.

Its ServiceRequest, Appointment and booked Slot are written by the operations, which keep them
in step with the Task (on_request_write; CONSULTATION for referral/booking_guard.py, which
guards the referral's the same way): a plain write may change what the workflow does not
decide (a note, a comment), and is refused (409, naming the operation to use) when it would
move their status, re-time or re-book the session, change its parties, delete them, or book a
Slot a consultation holds into another Appointment."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..model.resource import now
from ..referral.booking_guard import Workflow, based_on, conflict, guard
from ..referral.rules import provenance
from ..referral.work import Work, split
from .codes import TRANSITION_SYSTEM
from .rules import check_task_write, is_consultation_request, is_consultation_task
from .transitions import table_of
from .work import EITHER, TRANSITION_SIDES, side_organizations


def is_ours(resource: dict[str, Any]) -> bool:
    return is_consultation_task(resource)


def on_write(change: Change) -> Effect | None:
    before, after = change.before, change.resource
    if before is not None and not is_consultation_task(before) and after is not None \
            and not is_consultation_task(after):  # fmt: skip
        return None
    table = table_of(change.services)
    transition = check_task_write(table, before, after)
    if before is not None and after is not None:
        for name in ("for", "focus", "requester"):
            if before.get(name) != after.get(name):
                raise error(409, "business-rule", f"A consultation Task keeps its {name}: a new "
                            "consultation is a new request", f"Task.{name}")  # fmt: skip
        side = EITHER if transition is None else TRANSITION_SIDES[transition.code]
        _check_side(change, side, before)
    if transition is None or after is None:
        return None
    stamp, agent = now(), {"display": change.ctx.principal.label}
    trail = provenance(change.rid, transition.code, stamp, agent, label=transition.number,
                       system=TRANSITION_SYSTEM)  # fmt: skip
    return Effect({**after, "lastModified": stamp}, [trail])


def _check_side(change: Change, side: str | None, task: dict[str, Any]) -> None:
    principal = change.ctx.principal
    if principal.kind == "anonymous":
        return
    if side is None:
        raise error(403, "forbidden", "Only the server's sweep expires a consultation")
    work = Work(change.session, change.services, change.ctx, "", table_of(change.services))
    key = split(task.get("focus"))
    focus = work.load(*key) if key else None
    mine = principal.organization if principal.kind in ("user", "system") else None
    if focus is None or mine not in side_organizations(work, side, focus):
        raise error(403, "forbidden", "Only a party to this consultation may change its Task")


Json = dict[str, Any]

#: what the operations decide on a sent consultation's ServiceRequest, and which change it
SR_KEPT = {"subject": "a new consultation is a new request",
           "requester": "a new consultation is a new request",
           "performer": "Task/$decline redirects to another expert"}  # fmt: skip
SR_STATUS = ("ServiceRequest/$request-consultation makes it active, Task/$sign completes it, "
             "Task/$cancel revokes it")  # fmt: skip


def _consultation_of(change: Change, appointment: Json, rid: str) -> bool:
    """Whether the Appointment is based on a consultation ServiceRequest (only
    $request-consultation makes one)."""
    return any(is_consultation_request(sr) for sr in based_on(change, appointment))


#: the consultation's Appointment and booked Slots (referral/booking_guard.py)
CONSULTATION = Workflow(
    name="consultation",
    owns=_consultation_of,
    kept={
        "status": "Task/$schedule, $propose-time, $start, $sign and $cancel move it",
        "start": "Task/$schedule or $propose-time re-times it",
        "end": "Task/$schedule or $propose-time re-times it",
        "minutesDuration": "Task/$schedule or $propose-time re-times it",
        "slot": "Task/$schedule books a Slot, $propose-time or $cancel frees it",
        "participant": "Task/$accept and $decline answer for an expert",
        "basedOn": "a new consultation is a new request",
    },
    makes="ServiceRequest/$request-consultation",
    ends="Task/$cancel",
    frees="Task/$cancel or $propose-time frees it",
    rebooks="$schedule books another",
)
on_booking_write = guard(CONSULTATION)


def on_request_write(change: Change) -> Effect | None:
    """A consultation ServiceRequest is a draft until $request-consultation takes it; from then
    on its status and parties follow the operations."""
    before, after = change.before, change.resource
    old = before.get("status") if before is not None else None
    if before is None or not is_consultation_request(before):
        if after is not None and after.get("status") != "draft":
            conflict("A consultation ServiceRequest is created as a draft; "
                      "ServiceRequest/$request-consultation sends it", "ServiceRequest.status")
        return None
    if old == "draft":
        if after is not None and after.get("status") not in ("draft", "revoked",
                                                             "entered-in-error"):  # fmt: skip
            conflict(f"A draft consultation ServiceRequest becomes {after.get('status')} only "
                      "by ServiceRequest/$request-consultation", "ServiceRequest.status")
        return None
    if after is None:
        conflict("A sent consultation's ServiceRequest is not deleted; use Task/$cancel",
                  "ServiceRequest")  # fmt: skip
        return None
    if after.get("status") != old:
        conflict(f"A consultation's ServiceRequest does not move from {old} to "
                  f"{after.get('status')} by a plain write: {SR_STATUS}", "ServiceRequest.status")
    if not is_consultation_request(after):
        conflict("A sent consultation's ServiceRequest stays a consultation (category "
                  "Consultation)", "ServiceRequest.category")  # fmt: skip
    for name, how in SR_KEPT.items():
        if before.get(name) != after.get(name):
            conflict(f"A sent consultation's ServiceRequest.{name} is kept by plain writes: "
                      f"{how}", f"ServiceRequest.{name}")  # fmt: skip
    return None
