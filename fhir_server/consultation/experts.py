"""PractitionerRole/$find-experts: experts by specialty, hospital and service, ranked by their
free Slots in a time window (the 日程管理 of each expert is a Schedule of Slots)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..context import RequestContext
from ..errors import error
from ..interactions.search import find
from ..model import literal
from ..operations.registry import Call, Operations, Outcome
from ..referral.work import instant, parse_instant
from ..storage.contract import Session
from .codes import OPDEF

OPERATIONS = Operations()

Json = dict[str, Any]


@OPERATIONS.operation(
    "$find-experts",
    "type",
    types=("PractitionerRole",),
    methods=("GET", "POST"),
    definition=f"{OPDEF}PractitionerRole-find-experts",
)
def find_experts(call: Call) -> Outcome:
    """Active PractitionerRoles matching `specialty` (token), `organization` and `service`
    (HealthcareService), each with its free Slots starting in [start, end) (default: now to
    7 days on) in the Schedules whose actor it is; ranked by more free Slots, then the earlier
    first free Slot, then id. Answers Parameters, one `expert` per role."""
    start = _instant(call, "start") or datetime.now(UTC)
    end = _instant(call, "end") or start + timedelta(days=7)
    if end <= start:
        raise error(400, "invalid", "end must be after start", "end")
    criteria = ["active=true"]
    for name, param in (("specialty", "specialty"), ("organization", "organization"),
                        ("service", "service")):  # fmt: skip
        value = call.value(name)
        if value is None:
            continue
        if isinstance(value, dict):
            value = value.get("reference") or f"{value.get('system', '')}|{value.get('code', '')}"
        criteria.append(f"{param}={value}")
    session = call.services.store.reader()
    rows = []
    for _, rid in find(session, call.services, call.ctx, "PractitionerRole", "&".join(criteria),
                       limit=None):  # fmt: skip
        slots = _free_slots(session, call, rid, start, end)
        rows.append((-len(slots), slots[0][0] if slots else "9999", rid, slots))
    rows.sort()
    count = call.value("count")
    if count is not None:
        rows = rows[: int(count)]
    out: list[Json] = []
    for _, _, rid, slots in rows:
        role = _load(session, "PractitionerRole", rid) or {}
        parts: list[Json] = [{"name": "practitionerRole",
                              "valueReference": {"reference": f"PractitionerRole/{rid}"}},
                             {"name": "freeSlots", "valueInteger": len(slots)}]  # fmt: skip
        if role.get("organization"):
            parts.append({"name": "organization", "valueReference": role["organization"]})
        if role.get("practitioner"):
            parts.append({"name": "practitioner", "valueReference": role["practitioner"]})
        if slots:
            parts.append(
                {"name": "firstFreeSlot", "valueReference": {"reference": f"Slot/{slots[0][1]}"}}
            )
            parts.append({"name": "firstFreeStart", "valueDateTime": slots[0][0]})
        out.append({"name": "expert", "part": parts})
    return Outcome({"resourceType": "Parameters", "parameter": out})


def _instant(call: Call, name: str) -> datetime | None:
    value = call.value(name)
    if value is None:
        return None
    found = parse_instant(value)
    if found is None:
        raise error(400, "invalid", f"'{name}' must be a date-time", name)
    return found


def _free_slots(
    session: Session, call: Call, role: str, start: datetime, end: datetime
) -> list[tuple[str, str]]:
    """(start, Slot id) of the free Slots of the role's Schedules starting in [start, end)."""
    ctx: RequestContext = call.ctx
    found: list[tuple[str, str]] = []
    for _, sid in find(session, call.services, ctx, "Schedule",
                       f"actor=PractitionerRole/{role}&active=true", limit=None):  # fmt: skip
        query = (f"schedule=Schedule/{sid}&status=free&start=ge{instant(start)}"
                 f"&start=lt{instant(end)}")  # fmt: skip
        for _, slot_id in find(session, call.services, ctx, "Slot", query, limit=None):
            slot = _load(session, "Slot", slot_id)
            if slot is not None:
                found.append((slot["start"], slot_id))
    return sorted(found)


def _load(session: Session, rtype: str, rid: str) -> Json | None:
    current = session.current(rtype, rid)
    if current is None or current[1].deleted or current[1].json is None:
        return None
    loaded: Json = literal.loads(current[1].json)
    return loaded
