"""Plain REST writes of a workflow's Appointment and of the Slots it holds, for each workflow
that books one (the referral here, the consultation in consultation/guard.py): its operations
make and move them in step with its Task, so a plain create, update, patch or delete that would
move the Appointment's status, re-time or re-book it, change its parties or delete it, or free,
re-time or delete a Slot it holds, or book that Slot into another Appointment, is 409
(business-rule) naming the element and the operation to use. What the workflow does not decide
(a comment, a note, patientInstruction) may still be written, and a workflow may let the
status follow its Task (Workflow.agrees). The operations write through their unit of work
(work.py), not through these hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect, OnWrite
from ..model import literal
from ..search import query as q
from .work import split

Json = dict[str, Any]

#: Appointment statuses in which a workflow's Appointment holds its Slots (the operations free
#: them when they cancel, reject or re-time it; a fulfilled visit keeps its history)
HOLDS = ("proposed", "pending", "booked", "arrived", "checked-in")
SLOT_KEPT = ("status", "start", "end", "schedule")


@dataclass(frozen=True)
class Workflow:
    """What one workflow decides of its Appointment, and the operations to name instead."""

    #: in messages: "consultation", "referral"
    name: str
    #: whether an Appointment (JSON, id) is this workflow's
    owns: Callable[[Change, Json, str], bool]
    #: Appointment element -> which operations change it
    kept: dict[str, str]
    #: the operations that make its Appointment
    makes: str
    #: the operations that end its Appointment (instead of a delete)
    ends: str
    #: the operations that free its Slot ("... frees it")
    frees: str
    #: the operation that books another Slot, if any ("... books another")
    rebooks: str = ""
    #: the Appointment statuses a plain write may set because the workflow's Task is already
    #: in the matching state (a plain Task write made the transition); none by default
    agrees: Callable[[Change, Json, str], tuple[str, ...]] = lambda *_: ()


def is_linked(resource: Json) -> bool:
    """Cheap: the resources a booking guard may be about (an Appointment naming a request or a
    Slot, a busy Slot); it looks closer."""
    kind = resource.get("resourceType")
    if kind == "Appointment":
        return bool(resource.get("basedOn") or resource.get("slot"))
    return kind == "Slot" and resource.get("status") == "busy"


def guard(workflow: Workflow) -> OnWrite:
    """The write hook for `workflow`'s Appointments and the Slots they hold."""

    def on_write(change: Change) -> Effect | None:
        if change.rtype == "Appointment":
            _appointment(change, workflow)
        elif change.rtype == "Slot":
            _slot(change, workflow)
        return None

    return on_write


def based_on(change: Change, appointment: Json) -> list[Json]:
    """The current ServiceRequests an Appointment is based on."""
    found = []
    for reference in appointment.get("basedOn") or []:
        key = split(reference)
        stored = change.session.current(*key) if key and key[0] == "ServiceRequest" else None
        if stored is not None and stored[1].json is not None and not stored[1].deleted:
            found.append(literal.loads(stored[1].json))
    return found


def conflict(message: str, expression: str) -> None:
    """409 business-rule: the write would leave the workflow; `message` names what to use."""
    raise error(409, "business-rule", message, expression)


def _appointment(change: Change, flow: Workflow) -> None:
    before, after = change.before, change.resource
    ours = any(flow.owns(change, a, change.rid) for a in (before, after) if a is not None)
    if ours and before is None:
        conflict(f"A {flow.name}'s Appointment is made by {flow.makes}", "Appointment.basedOn")
    if ours and after is None:
        conflict(f"A {flow.name}'s Appointment is not deleted; use {flow.ends}", "Appointment")
    if ours and before is not None and after is not None:
        for name, how in flow.kept.items():
            if before.get(name) == after.get(name) or (
                name == "status" and after["status"] in flow.agrees(change, before, change.rid)
            ):
                continue
            conflict(f"A {flow.name}'s Appointment.{name} is kept by plain writes: {how}",
                     f"Appointment.{name}")  # fmt: skip
    had = {str(r.get("reference")) for r in (before or {}).get("slot") or []}
    for n, slot in enumerate((after or {}).get("slot") or []):
        if str(slot.get("reference")) not in had and _held(change, flow, slot, change.rid):
            conflict(f"{slot.get('reference')} is booked for a {flow.name}; its {flow.frees}",
                      f"Appointment.slot[{n}]")  # fmt: skip


def _slot(change: Change, flow: Workflow) -> None:
    before, after = change.before, change.resource
    if before is None or before.get("status") != "busy":
        return
    if not _held(change, flow, {"reference": f"Slot/{change.rid}"}, None):
        return
    if after is None:
        conflict(f"A Slot booked for a {flow.name} is not deleted; the {flow.name}'s "
                  f"{flow.frees}", "Slot")  # fmt: skip
        return
    another = f", {flow.rebooks}" if flow.rebooks else ""
    for name in SLOT_KEPT:
        if before.get(name) != after.get(name):
            conflict(f"A Slot booked for a {flow.name} keeps its {name}: the {flow.name}'s "
                      f"{flow.frees}{another}", f"Slot.{name}")  # fmt: skip


def _held(change: Change, flow: Workflow, slot: Json, own: str | None) -> bool:
    """Whether a live Appointment of the workflow (other than `own`) holds the Slot. Searched
    without the caller's narrowing: the Slot is booked whether or not they see the patient's
    Appointment."""
    key = split(slot)
    if key is None or key[0] != "Slot":
        return False
    clause = q.parse_clause(change.services.registry, "Appointment", "slot", f"Slot/{key[1]}")
    for _, rid in change.session.match_ids(change.ctx.base_url, "Appointment", [clause], None):
        found = change.session.current("Appointment", rid)
        if rid == own or found is None or found[1].json is None or found[1].deleted:
            continue
        other = literal.loads(found[1].json)
        if other.get("status") in HOLDS and flow.owns(change, other, rid):
            return True
    return False
