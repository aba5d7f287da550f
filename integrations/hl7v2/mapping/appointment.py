"""SCH (+ AIS, AIG, AIL, AIP, NTE, TQ1) -> Appointment, after the IG's segment maps
SCH[Appointment], AIS/AIG/AIL/AIP[Appointment] and NTE[Appointment-Comment] (message map
SIU_S12, which S13-S26 share).

An appointment is found by its filler id (SCH-2), else its placer id (SCH-1). Its status is
SCH-25 (FillerStatusCodes[Appointment]); empty, what the event says (S15 cancelled, S17 deleted,
S26 no-show; local.json SiuEventStatus); its time is SCH-11 (TQ, before v2.5), else TQ1, else
the first AIS (start, duration)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .. import tables
from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .encounter import place
from .orders import note_text
from .plan import Op, token

_MINUTES = {"MIN": 1, "M": 1, "MINUTES": 1, "H": 60, "HR": 60, "HOURS": 60, "S": 1 / 60,
            "D": 1440}  # fmt: skip


def appointment(ctx: Context, sch: Segment, patient: Op | None) -> Op:
    ids = []
    for field, number_type in ((1, "PLAC"), (2, "FILL")):
        c = sch.composite(field)
        if c[1]:
            ids.append(dt.identifier(c[1], ctx.system("appointment", c[2] or c[3]), number_type))
    if not ids:
        raise ctx.at(sch, 2, 1).error(101, "SCH-1 and SCH-2 (appointment ids) are both empty")
    event = ctx.header.event
    filler_status = sch.value(25)
    status = (tables.code("FillerStatusCodes[Appointment]", filler_status) if filler_status
              else tables.code("SiuEventStatus", event)) or "booked"  # fmt: skip
    resource: dict[str, Any] = {"resourceType": "Appointment", "identifier": ids,
                                "status": status}
    kind = ctx.codeable(sch, 8)
    if kind:
        resource["appointmentType"] = kind
    reason = ctx.codeable(sch, 7)
    if reason:
        resource["reasonCode"] = [reason]
    services = [ctx.codeable(s, 3) for s in ctx.message.all("AIS")]
    if any(services):
        resource["serviceType"] = [s for s in services if s]
    start, end, minutes = _timing(ctx, sch)
    if start:
        resource["start"] = start
    if end:
        resource["end"] = end
    if minutes:
        resource["minutesDuration"] = minutes
    comments = [t for t in (note_text(n) for n in ctx.message.all("NTE")) if t]
    if comments:
        resource["comment"] = "\n".join(comments)
    participants: list[dict[str, Any]] = []
    if patient is not None:
        participants.append({"actor": {"reference": patient.ref}, "status": "accepted"})
    for aip in ctx.message.all("AIP"):
        who = ctx.practitioner(aip.composite(3))
        if who:
            role = ctx.codeable(aip, 4)
            participants.append({**({"type": [role]} if role else {}), "actor": who,
                                 "status": "accepted"})  # fmt: skip
    for ail in ctx.message.all("AIL"):
        shown = place(ail, 3)
        if shown:
            participants.append({"actor": {"display": shown}, "status": "accepted"})
    for aig in ctx.message.all("AIG"):
        resource_name = aig.value(3, 2) or aig.value(3, 1)
        if resource_name:
            participants.append({"actor": {"display": resource_name}, "status": "accepted"})
    if not participants:
        raise ctx.at(sch, 1).error(100, "the appointment names no patient (PID) nor resource")
    resource["participant"] = participants
    first = ids[-1]  # the filler's id when there is one
    return ctx.plan.add(Op("appointment", "Appointment", resource,
                           match=token("identifier", first["system"], first["value"])))


def _timing(ctx: Context, sch: Segment) -> tuple[str | None, str | None, int | None]:
    """(start, end, minutes): SCH-11.4/.5 (TQ start/end), TQ1-7/8, else the first AIS-4 with
    AIS-7/8 (duration and its units); SCH-9/10 give the duration too."""
    start = end = None
    if sch.value(11, 4):
        start = dt.date_time(sch.value(11, 4), ctx.at(sch, 11, 4), ctx.zone)
        end = dt.date_time(sch.value(11, 5), ctx.at(sch, 11, 5), ctx.zone)
    tq1 = ctx.message.first("TQ1")
    if not start and tq1 is not None:
        start, end = ctx.date_time(tq1, 7), ctx.date_time(tq1, 8)
    minutes = _minutes(ctx, sch, 9, 10)
    ais = ctx.message.first("AIS")
    if not start and ais is not None:
        start = ctx.date_time(ais, 4)
        minutes = _minutes(ctx, ais, 7, 8) or minutes
    if start and minutes and not end and len(start) > 10:
        end = _plus(start, minutes)
    return start, end, minutes


def _minutes(ctx: Context, segment: Segment, field: int, units_field: int) -> int | None:
    raw = segment.value(field)
    if not raw:
        return None
    amount = dt.number(raw, ctx.at(segment, field))
    factor = _MINUTES.get(segment.value(units_field).upper(), 1)
    minutes = round(amount * factor)
    return minutes if minutes > 0 else None


def _plus(start: str, minutes: int) -> str:
    moment = datetime.fromisoformat(start) + timedelta(minutes=minutes)
    return moment.isoformat()
