"""PV1 (+ PV2, ROL/PRT) -> Encounter, after the IG's segment maps PV1[Encounter], PV2[Encounter]
and ROL[Encounter-PractitionerRole] (roles.py); condition.py adds its diagnoses (DG1).

An Encounter is found by its visit number (PV1-19, identifier type VN), so an ADT^A03 updates the
Encounter its ADT^A01 made. Status, one rule (the IG gives two that disagree for A04): PV1-45
(discharge time) valued -> finished; else the event where it says what happened (A03 finished,
A11 cancelled, A05/A14 planned, A01/A02/A13 in-progress); else PV1-2 (PatientClass[EncounterStatus]:
P planned, U unknown, else in-progress), so an outpatient registration (A04) is in progress
(the patient is there). An A08 (update) keeps the status an Encounter already has."""

from __future__ import annotations

from typing import Any

from .. import tables
from ..er7 import Segment
from . import datatypes as dt
from . import roles
from .context import Context
from .plan import Mode, Op, token

#: events that say what happened to the visit (HL7 table 0003; IG Event[EncounterStatus])
_EVENT_STATUS = {"A01": "in-progress", "A02": "in-progress", "A13": "in-progress",
                 "A03": "finished", "A11": "cancelled", "A05": "planned", "A14": "planned"}
#: PV1-7, -8, -9, -17: participant types (v3 ParticipationType, IG PV1[Encounter])
_PARTICIPANTS = ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"),
                 (17, "ADM", "admitter"))  # fmt: skip
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def has_visit(pv1: Segment | None) -> bool:
    """A PV1 that describes a visit: not the empty `PV1|1|N` of A28/A31 (patient class N, not
    applicable) and with a visit number."""
    return pv1 is not None and pv1.value(2) != "N" and bool(pv1.value(19))


def encounter(ctx: Context, pv1: Segment, patient: Op, mode: Mode) -> Op:
    """The Encounter op (key `encounter`), found by PV1-19."""
    event = ctx.header.event
    visit = pv1.composite(19)
    if not visit[1]:
        raise ctx.at(pv1, 19, 1).error(101, "PV1-19 (visit number) is needed to find the visit")
    system = ctx.system("visit-number", dt.authority(visit, 4))
    vn = dt.identifier(visit[1], system, "VN")
    resource: dict[str, Any] = {"resourceType": "Encounter", "identifier": [vn]}
    alternate = pv1.composite(50)
    if alternate[1]:
        resource["identifier"].append(
            dt.identifier(alternate[1], ctx.system("visit-number", dt.authority(alternate, 4)))
        )
    patient_class = pv1.value(2)
    ended = ctx.date_time(pv1, 45)
    status = ("finished" if ended else _EVENT_STATUS.get(event)
              or tables.code("PatientClass[EncounterStatus]", patient_class) or "unknown")
    resource["status"] = status
    resource["class"] = tables.coding("PatientClass[EncounterClass]", patient_class) or {
        "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"
    }  # fmt: skip
    admission = ctx.codeable(pv1, 4, "AdmissionType")
    if admission:
        resource["type"] = [admission]
    service = dt.codeable(pv1.composite(10), ctx.facility, None)
    if service:
        resource["serviceType"] = service
    resource["subject"] = {"reference": patient.ref}
    participants = []
    for field, code, display in _PARTICIPANTS:
        for c in pv1.composites(field):
            who = ctx.practitioner(c)
            if who:
                kind = {"coding": [{"system": _PARTICIPATION, "code": code, "display": display}]}
                participants.append({"type": [kind], "individual": who})
    participants += roles.participants(ctx, pv1)
    if participants:
        resource["participant"] = participants
    period = {}
    started = ctx.date_time(pv1, 44)
    if started:
        period["start"] = started
    if ended:
        period["end"] = ended
    elif event == "A03":  # discharged without PV1-45: when the event happened (EVN-6, EVN-2)
        evn = ctx.message.first("EVN")
        when = evn and (ctx.date_time(evn, 6) or ctx.date_time(evn, 2))
        if when:
            period["end"] = when
    if period:
        resource["period"] = period
    hospitalization: dict[str, Any] = {}
    for key, field, table in (("admitSource", 14, "0023"), ("reAdmission", 13, "0092"),
                              ("dischargeDisposition", 36, "0112")):  # fmt: skip
        c = pv1.composite(field)
        if c[1]:
            hospitalization[key] = {"coding": [dt.v2_coding(table, c[1], c[2])]}
            if c[2]:
                hospitalization[key]["text"] = c[2]
    if hospitalization:
        resource["hospitalization"] = hospitalization
    locations = []
    for field, state in ((3, "planned" if patient_class == "P" else "active"), (6, "completed"),
                         (11, "active"), (42, "reserved")):  # fmt: skip
        shown = place(pv1, field)
        if shown:
            locations.append({"location": {"display": shown}, "status": state})
    if locations:
        resource["location"] = locations
    pv2 = ctx.message.first("PV2")
    reason = pv2 and ctx.codeable(pv2, 3)
    if reason:
        resource["reasonCode"] = [reason]
    resource["serviceProvider"] = ctx.organization()
    keep = ("status",) if event == "A08" else ()
    return ctx.plan.add(Op("encounter", "Encounter", resource,
                           match=token("identifier", system, visit[1]), mode=mode,
                           combine=("period", "hospitalization"), keep=keep))  # fmt: skip


def place(segment: Segment, field: int) -> str:
    """PL (point of care, room, bed, facility ... description) as words, the description (PL.9)
    standing for the point of care: the wards, rooms and beds of a hospital are not Location
    resources here, the Encounter names them."""
    c = segment.composite(field)
    if not c:
        return ""
    return " ".join(x for x in (c[9] or c.sub(1, 1), c.sub(2, 1), c.sub(3, 1)) if x)
