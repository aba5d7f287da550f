"""The referral feature's write hook: plain REST writes of referral resources must keep to the
rules (rules.py, over the transition table) and to the sides (sides.py: a transition made by
PUT/PATCH is its side's, as by its operation; other changes of a submitted referral Task are
either side's, and keep its patient and sides), and a legal Task move made by PUT/PATCH gets
the milestones and Provenance an operation would have given it. The referral's Appointment
and the Slot it holds keep to the workflow as a consultation's do (REFERRAL, booking_guard.py).
The operations themselves write through the unit of work (work.py), not through these hooks."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..interactions.search import find
from ..model.resource import now
from ..search import query as q
from .booking_guard import Workflow, based_on, guard
from .rules import (
    DRAFTED,
    check_request_change,
    check_task_change,
    check_task_create,
    check_task_delete,
    is_referral_request,
    is_referral_task,
    pair_of,
    provenance,
    record_plain_update,
)
from .sides import EITHER, TRANSITIONS
from .transitions import TERMINAL, Transition, table_of
from .work import Work, check_side, organization_of, output, split


def is_ours(resource: dict[str, Any]) -> bool:
    """The resources this hook guards: referral Tasks and referral ServiceRequests."""
    return is_referral_task(resource) or is_referral_request(resource)


def on_write(change: Change) -> Effect | None:
    before, after = change.before, change.resource
    work = Work(change.session, change.services, change.ctx, "")  # to look up the sides
    if change.rtype == "ServiceRequest":
        check_request_change(before, after)
        if before and after and is_referral_request(before) and before.get("status") != "draft":
            _check_kept(work, before, after, ("subject", "requester", "performer"))
        return None
    if after is None:
        if before is not None:
            check_task_delete(before)
            if is_referral_task(before):
                check_side(work, EITHER, "delete this referral Task", before)
        return None
    table = table_of(change.services)
    if before is None:
        transition = check_task_create(table, after)
        _check_one_active(change)
        if transition is not None:
            check_side(work, TRANSITIONS[transition.code], _what(transition), after)
    else:
        transition = check_task_change(table, before, after)
        if is_referral_task(before) and pair_of(before) != DRAFTED:
            _check_kept(work, before, after, ("for", "focus", "owner", "requester"))
            side = EITHER if transition is None else TRANSITIONS[transition.code]
            what = "change this referral Task" if transition is None else _what(transition)
            check_side(work, side, what, before)
    if transition is None:
        return _keep_last_modified(before, after)
    stamp, agent = now(), {"display": change.ctx.principal.label}
    stamped = record_plain_update(after, transition, stamp, agent, created=before is None)
    trail = provenance(change.rid, transition.code, stamp, agent, label=transition.number)
    return Effect(stamped, [trail])


def _check_one_active(change: Change) -> None:
    """409 when a new referral Task's ServiceRequest already has a referral Task that is not
    finished: one referral, one Task."""
    task = change.resource
    assert task is not None
    focus = (task.get("focus") or {}).get("reference")
    if not is_referral_task(task) or not isinstance(focus, str) or "?" in focus:
        return
    for rtype, rid in find(change.session, change.services, change.ctx, "Task",
                           f"focus={focus}", limit=None):  # fmt: skip
        found = change.session.current(rtype, rid)
        if rid == change.rid or found is None or found[1].json is None:
            continue
        other = orjson.loads(found[1].json)
        if is_referral_task(other) and pair_of(other)[0] not in TERMINAL:
            raise error(
                409,
                "business-rule",
                f"{focus} already has an open referral Task (Task/{rid}); one referral, one Task",
                "Task.focus",
            )


def _what(transition: Transition) -> str:
    return f"make transition {transition.number} ({transition.code}) of this referral"


def _check_kept(
    work: Work, before: dict[str, Any], after: dict[str, Any], names: tuple[str, ...]
) -> None:
    """409 when a plain write changes the patient, request or sides of a submitted referral
    (its Task's for, focus, owner, requester; its ServiceRequest's subject, requester,
    performer): else a side could hand the patient's record to another hospital, or make
    itself the other side. Owner and requester are compared by organization (a claim by PUT
    may name a PractitionerRole of the owning organization)."""
    rtype = before["resourceType"]
    for name in names:
        old, new = before.get(name), after.get(name)
        if name in ("owner", "requester"):
            old, new = organization_of(work, old) or old, organization_of(work, new) or new
        if old != new:
            raise error(
                409,
                "business-rule",
                f"A submitted referral's {rtype}.{name} is kept by plain writes (its patient, "
                "its request and its sides); a new referral is a new request",
                f"{rtype}.{name}",
            )


def _keep_last_modified(before: dict[str, Any] | None, after: dict[str, Any]) -> Effect | None:
    """Task.lastModified of a referral Task is the time of its last transition, stamped by
    the server: a plain write that makes none keeps it (it dates when an ended referral's
    access ends: policy/decide.py, referral_access_days)."""
    if before is None or before.get("lastModified") == after.get("lastModified"):
        return None
    kept = {k: v for k, v in after.items() if k != "lastModified"}
    if "lastModified" in before:
        kept["lastModified"] = before["lastModified"]
    return Effect(kept)


def _task_of(change: Change, appointment: dict[str, Any], rid: str) -> dict[str, Any] | None:
    """The referral Task whose Appointment this is: based on a referral ServiceRequest, and
    named by a referral Task of it (output appointment: ServiceRequest/$submit or Task/$accept
    booked or attached it). An Appointment made by hand to be attached (a hold) is its
    writer's until then. Tasks are searched without the caller's narrowing, as the Slot's
    holder is."""
    for sr in based_on(change, appointment):
        if not is_referral_request(sr):
            continue
        clause = q.parse_clause(change.services.registry, "Task", "focus",
                                f"ServiceRequest/{sr['id']}")  # fmt: skip
        for _, tid in change.session.match_ids(change.ctx.base_url, "Task", [clause], None):
            found = change.session.current("Task", tid)
            if found is None or found[1].json is None or found[1].deleted:
                continue
            task: dict[str, Any] = orjson.loads(found[1].json)
            if is_referral_task(task) and ("Appointment", rid) in map(
                split, output(task, "appointment")
            ):
                return task
    return None


#: Task (status, or status/businessStatus) -> the Appointment status the consistency table
#: pairs with it (referral-model.md §2.5): what the operation would have set
AGREES = {"accepted": "booked", "in-progress": "arrived", "completed": "fulfilled",
          "failed/treatment-aborted": "fulfilled", "failed/no-show": "noshow",
          "rejected": "cancelled", "cancelled": "cancelled",
          "entered-in-error": "entered-in-error"}  # fmt: skip


def _agrees(change: Change, appointment: dict[str, Any], rid: str) -> tuple[str, ...]:
    """After a plain PUT/PATCH of the Task made a transition (which does not touch the
    Appointment), the Appointment may follow by a plain write to the status its operation
    would have given it, and so free its Slot."""
    task = _task_of(change, appointment, rid)
    if task is None:
        return ()
    status, business = pair_of(task)
    found = AGREES.get(f"{status}/{business}") or AGREES.get(str(status))
    return (found,) if found else ()


#: how the operations book, move and free a referral's Appointment (operations.py, T2-T19)
BOOKED = "ServiceRequest/$submit or Task/$accept books the Slot"
REFERRAL = Workflow(
    name="referral",
    owns=lambda change, appointment, rid: _task_of(change, appointment, rid) is not None,
    agrees=_agrees,
    kept={
        "status": "Task/$accept books it, $check-in marks it arrived, $complete or $fail "
                  "fulfils it, $cancel, $reject or $no-show ends it",
        "start": f"it is the booked Slot's time ({BOOKED}); Task/$cancel or $reject frees it",
        "end": f"it is the booked Slot's time ({BOOKED}); Task/$cancel or $reject frees it",
        "minutesDuration": f"it is the booked Slot's time ({BOOKED}); Task/$cancel or $reject "
                           "frees it",
        "slot": f"{BOOKED}; Task/$cancel, $reject or $no-show frees it",
        "participant": f"{BOOKED} for the patient with its Schedule's actors",
        "basedOn": "a new referral is a new request",
    },
    makes="ServiceRequest/$submit or Task/$accept",
    ends="Task/$cancel (the sender) or $reject (the receiving hospital)",
    frees="Task/$cancel, $reject or $no-show frees it",
)
on_booking_write = guard(REFERRAL)
