"""The consultation feature's write hooks: a plain PUT/PATCH (or create, delete) of a
consultation Task keeps to the transition table (rules.py; 409 otherwise) and to the sides
(work.py), and a legal move gets its Provenance and lastModified as by its operation.

Its ServiceRequest, Appointment and booked Slot are written by the operations, which keep them
in step with the Task (on_linked_write): a plain write may change what the workflow does not
decide (a note, a comment), and is refused (409, naming the operation to use) when it would
move their status, re-time or re-book the session, change its parties, delete them, or book a
Slot a consultation holds into another Appointment."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..model import literal
from ..model.resource import now
from ..referral.rules import provenance
from ..referral.work import Work, split
from ..search import query as q
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

#: Appointment statuses in which a consultation's Appointment holds its Slots (booking.py
#: frees them on cancel, decline and propose-time; a fulfilled session keeps its history)
HOLDS = ("proposed", "pending", "booked", "arrived", "checked-in")
#: what the operations decide on each resource, and which operations change it
SR_KEPT = {"subject": "a new consultation is a new request",
           "requester": "a new consultation is a new request",
           "performer": "Task/$decline redirects to another expert"}  # fmt: skip
SR_STATUS = ("ServiceRequest/$request-consultation makes it active, Task/$sign completes it, "
             "Task/$cancel revokes it")  # fmt: skip
APPOINTMENT_KEPT = {
    "status": "Task/$schedule, $propose-time, $start, $sign and $cancel move it",
    "start": "Task/$schedule or $propose-time re-times it",
    "end": "Task/$schedule or $propose-time re-times it",
    "minutesDuration": "Task/$schedule or $propose-time re-times it",
    "slot": "Task/$schedule books a Slot, $propose-time or $cancel frees it",
    "participant": "Task/$accept and $decline answer for an expert",
    "basedOn": "a new consultation is a new request",
}
SLOT_KEPT = ("status", "start", "end", "schedule")


def is_linked(resource: Json) -> bool:
    """Cheap: the resources on_linked_write may be about (a consultation ServiceRequest, an
    Appointment naming a request or a Slot, a busy Slot); it looks closer."""
    kind = resource.get("resourceType")
    if kind == "ServiceRequest":
        return is_consultation_request(resource)
    if kind == "Appointment":
        return bool(resource.get("basedOn") or resource.get("slot"))
    return kind == "Slot" and resource.get("status") == "busy"


def on_linked_write(change: Change) -> Effect | None:
    {"ServiceRequest": _request, "Appointment": _appointment, "Slot": _slot}[change.rtype](change)
    return None


def _conflict(message: str, expression: str) -> None:
    raise error(409, "business-rule", message, expression)


def _request(change: Change) -> None:
    """A consultation ServiceRequest is a draft until $request-consultation takes it; from then
    on its status and parties follow the operations."""
    before, after = change.before, change.resource
    old = before.get("status") if before is not None else None
    if before is None or not is_consultation_request(before):
        if after is not None and after.get("status") != "draft":
            _conflict("A consultation ServiceRequest is created as a draft; "
                      "ServiceRequest/$request-consultation sends it", "ServiceRequest.status")
        return
    if old == "draft":
        if after is not None and after.get("status") not in ("draft", "revoked",
                                                             "entered-in-error"):  # fmt: skip
            _conflict(f"A draft consultation ServiceRequest becomes {after.get('status')} only "
                      "by ServiceRequest/$request-consultation", "ServiceRequest.status")
        return
    if after is None:
        _conflict("A sent consultation's ServiceRequest is not deleted; use Task/$cancel",
                  "ServiceRequest")  # fmt: skip
        return
    if after.get("status") != old:
        _conflict(f"A consultation's ServiceRequest does not move from {old} to "
                  f"{after.get('status')} by a plain write: {SR_STATUS}", "ServiceRequest.status")
    if not is_consultation_request(after):
        _conflict("A sent consultation's ServiceRequest stays a consultation (category "
                  "Consultation)", "ServiceRequest.category")  # fmt: skip
    for name, how in SR_KEPT.items():
        if before.get(name) != after.get(name):
            _conflict(f"A sent consultation's ServiceRequest.{name} is kept by plain writes: "
                      f"{how}", f"ServiceRequest.{name}")  # fmt: skip


def _appointment(change: Change) -> None:
    """A consultation's Appointment is made and moved by the operations; and no Appointment
    books a Slot a consultation holds."""
    before, after = change.before, change.resource
    ours = any(_consultation_of(change, a) for a in (before, after) if a is not None)
    if ours and before is None:
        _conflict("A consultation's Appointment is made by ServiceRequest/$request-consultation",
                  "Appointment.basedOn")  # fmt: skip
    if ours and after is None:
        _conflict("A consultation's Appointment is not deleted; use Task/$cancel", "Appointment")
    if ours and before is not None and after is not None:
        for name, how in APPOINTMENT_KEPT.items():
            if before.get(name) != after.get(name):
                _conflict(f"A consultation's Appointment.{name} is kept by plain writes: {how}",
                          f"Appointment.{name}")  # fmt: skip
    had = {str(r.get("reference")) for r in (before or {}).get("slot") or []}
    for n, slot in enumerate((after or {}).get("slot") or []):
        if str(slot.get("reference")) not in had and _holder(change, slot, change.rid):
            _conflict(f"{slot.get('reference')} is booked for a consultation; its Task/$cancel "
                      "or $propose-time frees it", f"Appointment.slot[{n}]")  # fmt: skip


def _slot(change: Change) -> None:
    """A Slot a consultation's Appointment holds keeps its status, time and Schedule."""
    before, after = change.before, change.resource
    if before is None or before.get("status") != "busy":
        return
    if not _holder(change, {"reference": f"Slot/{change.rid}"}, None):
        return
    if after is None:
        _conflict("A Slot booked for a consultation is not deleted; the consultation's "
                  "Task/$cancel or $propose-time frees it", "Slot")  # fmt: skip
        return
    for name in SLOT_KEPT:
        if before.get(name) != after.get(name):
            _conflict(f"A Slot booked for a consultation keeps its {name}: the consultation's "
                      "Task/$cancel or $propose-time frees it, $schedule books another",
                      f"Slot.{name}")  # fmt: skip


def _consultation_of(change: Change, appointment: Json) -> bool:
    """Whether the Appointment is based on a consultation ServiceRequest."""
    for based in appointment.get("basedOn") or []:
        key = split(based)
        found = change.session.current(*key) if key and key[0] == "ServiceRequest" else None
        if found is not None and found[1].json is not None and not found[1].deleted \
                and is_consultation_request(literal.loads(found[1].json)):  # fmt: skip
            return True
    return False


def _holder(change: Change, slot: Json, own: str | None) -> bool:
    """Whether a consultation's Appointment (other than `own`) holds the Slot. Searched
    without the caller's narrowing: the Slot is booked whether or not they see the patient's
    Appointment."""
    key = split(slot)
    if key is None or key[0] != "Slot":
        return False
    clause = q.parse_clause(change.services.registry, "Appointment", "slot", f"Slot/{key[1]}")
    base = change.ctx.base_url
    for _, rid in change.session.match_ids(base, "Appointment", [clause], None):
        found = change.session.current("Appointment", rid)
        if rid == own or found is None or found[1].json is None or found[1].deleted:
            continue
        other = literal.loads(found[1].json)
        if other.get("status") in HOLDS and _consultation_of(change, other):
            return True
    return False
