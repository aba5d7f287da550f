"""Booking: a referral's Appointment in a reserved Slot, and freeing it again."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.search import find
from .codes import SD
from .work import Json, Work, add_output, linked, ref, split


def release(work: Work, appointment: Json | None) -> None:
    """Free every Slot an Appointment held."""
    for slot_ref in (appointment or {}).get("slot") or []:
        key = split(slot_ref)
        slot = work.load(*key) if key else None
        if slot is not None and slot.get("status") in ("busy", "busy-tentative"):
            work.set_status(slot, "free")


def end_appointment(work: Work, task: Json, status: str, reason: Json | None) -> None:
    """Appointment -> cancelled / noshow / entered-in-error (with reason), its Slot freed."""
    appointment = linked(work, task, "appointment", "Appointment")
    if appointment is None or appointment.get("status") in (
        "cancelled",
        "noshow",
        "entered-in-error",
        "fulfilled",
    ):
        return
    fields = {"cancelationReason": reason} if reason and status != "entered-in-error" else {}
    work.set_status(appointment, status, **fields)
    release(work, appointment)


#: Appointment statuses that book their Slots (a proposed or pending one only asks for them)
BOOKS = ("booked", "arrived", "checked-in")


def check_free(work: Work, slot: Json, name: str, own: Json | None = None,
               where: str = "") -> None:  # fmt: skip
    """409 (business-rule, at parameter `name`) unless the Slot is free: its status is free and
    no Appointment other than `own` books it (one made by hand may not have marked it busy).
    The one check behind both ways to book, `slot` and `appointment`, so that neither books a
    Slot twice. An `own` Appointment booked already (elsewhere) has made its Slot busy
    itself (slot.html: booked appointments take their Slots): busy is then its own."""
    what = f"Slot/{slot['id']}{where}"
    owned = (own is not None and own.get("status") in BOOKS and slot.get("status") == "busy"
             and any(split(s) == ("Slot", slot["id"]) for s in own.get("slot") or []))  # fmt: skip
    if slot.get("status") != "free" and not owned:
        raise error(409, "business-rule", f"{what} is {slot.get('status')}, not free", name)
    found = find(work.session, work.services, work.ctx, "Appointment",
                 f"slot=Slot/{slot['id']}&status={','.join(BOOKS)}", limit=None)  # fmt: skip
    for _, rid in found:
        if own is None or rid != own["id"]:
            raise error(409, "business-rule", f"{what} is already booked by Appointment/{rid}",
                        name)  # fmt: skip


def book(work: Work, task: Json, sr: Json, slot_ref: Any) -> Json:
    """Book the referral into a free Slot: Appointment booked (basedOn SR), Slot busy."""
    slot = work.resolve(slot_ref, "Slot", "slot")
    check_free(work, slot, "slot")
    work.set_status(slot, "busy")
    participants: list[Json] = [
        {"actor": sr["subject"], "required": "required", "status": "accepted"}
    ]
    schedule_key = split(slot.get("schedule"))
    schedule = work.load(*schedule_key) if schedule_key else None
    for actor in (schedule or {}).get("actor") or []:
        key = split(actor)
        if key and key[0] in ("Practitioner", "PractitionerRole", "HealthcareService", "Location"):
            participants.append({"actor": actor, "required": "required", "status": "accepted"})
    appointment: Json = {
        "resourceType": "Appointment",
        "meta": {"profile": [f"{SD}yl-referral-appointment"]},
        "status": "booked",
        "basedOn": [ref(sr)],
        "slot": [ref(slot)],
        "start": slot.get("start"),
        "end": slot.get("end"),
        "created": work.at[:10],
        "participant": participants,
    }
    for name in ("serviceType", "specialty", "appointmentType"):
        if slot.get(name):
            appointment[name] = slot[name]
    work.add(appointment)
    add_output(task, "appointment", "valueReference", ref(appointment))
    return appointment


def attach_appointment(work: Work, task: Json, sr: Json, reference: Any) -> Json:
    """Accept with an Appointment made elsewhere (a hold): it must be open and each of its
    Slots free, as a `slot` must be; it becomes booked and its Slots busy."""
    appointment = work.resolve(reference, "Appointment", "appointment")
    if appointment.get("status") not in ("proposed", "pending", "booked"):
        raise error(409, "business-rule", "The appointment is not open for booking", "appointment")
    slots = []
    for n, slot_ref in enumerate(appointment.get("slot") or []):
        where = f" (Appointment/{appointment['id']}.slot[{n}])"
        key = split(slot_ref)
        slot = work.load(*key) if key and key[0] == "Slot" else None
        if slot is None:
            raise error(422, "processing", f"{slot_ref.get('reference')}{where} is not a known "
                        "Slot", "appointment")  # fmt: skip
        check_free(work, slot, "appointment", appointment, where)
        slots.append(slot)
    based_on = appointment.setdefault("basedOn", [])
    if ref(sr) not in based_on:
        based_on.append(ref(sr))
    appointment["status"] = "booked"
    work.changed(appointment)
    for slot in slots:
        work.set_status(slot, "busy")
    add_output(task, "appointment", "valueReference", ref(appointment))
    return appointment

