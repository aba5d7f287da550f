"""The consultation's Appointment (several participants, one AppointmentResponse per invited
expert's answer) and the Slots it books: a Slot booked twice, or an expert booked into two
sessions at once, is refused (409), inside the write transaction that books it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import error
from ..interactions.search import find
from ..referral.booking import check_free
from ..referral.work import Json, Work, coding, parse_instant, ref, split
from .codes import ROLE_SYSTEM
from .work import key_of

#: Appointment statuses that hold an expert's time
HOLDING = ("booked", "arrived", "checked-in")


def participant(actor: Json, role: str, status: str) -> Json:
    return {
        "type": [{"coding": [coding(ROLE_SYSTEM, role)]}],
        "actor": {"reference": actor["reference"]},
        "required": "required",
        "status": status,
    }


def experts_of(appointment: Json) -> list[Json]:
    """The invited experts' participant entries (type invited-expert)."""
    return [
        p
        for p in appointment.get("participant") or []
        if any(c.get("code") == "invited-expert"
               for t in p.get("type") or [] for c in t.get("coding") or [])
    ]  # fmt: skip


def expert_entry(appointment: Json, expert: Json, name: str = "expert") -> Json:
    """The participant entry of `expert`; 422 when they were not invited."""
    wanted = key_of(expert)
    for p in experts_of(appointment):
        if key_of(p.get("actor")) == wanted:
            return p
    raise error(422, "business-rule", f"{wanted} is not an invited expert of this consultation",
                name)  # fmt: skip


def respond(
    work: Work,
    appointment: Json,
    expert: Json,
    status: str,
    comment: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Json:
    """The expert's answer: their participant status on the Appointment, and an
    AppointmentResponse (R4 appointmentresponse.html) recording it."""
    entry = expert_entry(appointment, expert)
    entry["status"] = status
    work.changed(appointment)
    answer: Json = {
        "resourceType": "AppointmentResponse",
        "appointment": ref(appointment),
        "actor": {"reference": entry["actor"]["reference"]},
        "participantStatus": status,
    }
    if comment:
        answer["comment"] = comment
    if start:
        answer["start"] = start
    if end:
        answer["end"] = end
    return work.add(answer)


def book_slot(work: Work, appointment: Json, slot_ref: Json) -> None:
    """Book `slot_ref` for the Appointment: the Slot must be free and belong to the Schedule of
    an invited expert; the Appointment takes its times."""
    slot = work.resolve(slot_ref, "Slot", "slot")
    check_free(work, slot, "slot", appointment)
    schedule = work.resolve(slot.get("schedule"), "Schedule", "Slot.schedule")
    invited = {key_of(p.get("actor")) for p in experts_of(appointment)}
    owners = [key_of(a) for a in schedule.get("actor") or []]
    if not invited & set(owners):
        raise error(
            422,
            "business-rule",
            f"Slot/{slot['id']} is not in the schedule of an invited expert",
            "slot",
        )
    slot["status"] = "busy"
    work.changed(slot)
    appointment["slot"] = [ref(slot)]
    set_time(work, appointment, slot["start"], slot["end"])


def set_time(work: Work, appointment: Json, start: str, end: str) -> None:
    """Book the Appointment at [start, end), refusing when an invited expert already holds an
    Appointment overlapping it (double booking)."""
    low, high = parse_instant(start), parse_instant(end)
    if low is None or high is None or high <= low:
        raise error(400, "invalid", "start and end must be instants, start before end", "start")
    for p in experts_of(appointment):
        if p.get("status") == "declined":
            continue
        clash = overlapping(work, key_of(p.get("actor")) or "", low, high, appointment["id"])
        if clash:
            raise error(
                409,
                "business-rule",
                f"{key_of(p.get('actor'))} is already booked then ({clash})",
                "start",
            )
    appointment.update(start=start, end=end, status="booked")
    work.changed(appointment)


def overlapping(work: Work, actor: str, low: datetime, high: datetime, own: str) -> str | None:
    """An Appointment of `actor` holding time that overlaps [low, high), other than `own`."""
    for rtype, rid in find(work.session, work.services, work.ctx, "Appointment",
                           f"actor={actor}&status={','.join(HOLDING)}", limit=None):  # fmt: skip
        if rid == own:
            continue
        other = work.load(rtype, rid)
        if other is None or other.get("status") not in HOLDING:
            continue
        start, end = parse_instant(other.get("start")), parse_instant(other.get("end"))
        if start is not None and end is not None and start < high and low < end:
            return f"Appointment/{rid}"
    return None


def free_slots(work: Work, appointment: Json) -> None:
    """Give the Appointment's Slots back (cancelled, declined or re-timed)."""
    for slot_ref in appointment.pop("slot", None) or []:
        key = split(slot_ref)
        slot = work.load(*key) if key else None
        if slot is not None and slot.get("status") == "busy":
            slot["status"] = "free"
            work.changed(slot)
    work.changed(appointment)


def end_appointment(work: Work, appointment: Json | None, status: str, why: Any = None) -> None:
    if appointment is None or appointment.get("status") == status:
        return
    if status == "cancelled":
        free_slots(work, appointment)
        if why:
            appointment["cancelationReason"] = why
    appointment["status"] = status
    work.changed(appointment)
