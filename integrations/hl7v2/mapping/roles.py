"""PD1, ROL and PRT -> who cares for the patient, takes part in the visit or performs the
procedure, after the IG's segment maps PD1[Patient], ROL[Patient-GeneralPractitioner],
ROL[Encounter-PractitionerRole] and PRT[Patient-GeneralPractitioner-Practitioner], placed by the
ADT_A01/ADT_A05 message maps (a ROL or PRT belongs to the PID, PV1 or PR1 it follows:
Context.roles).

Where the IG gives no map we chose: a ROL after PID other than the primary care provider (the
IG's CareTeam candidates) and a ROL in the INSURANCE group are not mapped; a PRT after PV1 is an
Encounter.participant and a ROL or PRT of a PROCEDURE group a Procedure.performer, with the role
as participant type / performer function. A ROL or PRT whose action code (ROL-2, PRT-2) is D
(delete) adds nothing. A ROL becomes a PractitionerRole, as both IG ROL maps say, found by ROL-1
or else by its practitioner and role; a PRT names the Practitioner (PRT-5) itself."""

from __future__ import annotations

from typing import Any

from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Op, reference, token

_PRIMARY_CARE = "PP"


def general_practitioners(ctx: Context, pid: Segment) -> list[dict[str, str]]:
    """Patient.generalPractitioner: PD1-3 (the primary facility, an Organization) and PD1-4
    (the primary care provider, a Practitioner) by IG PD1[Patient]; then a ROL of role PP
    (HL7 table 0443) after PID by ROL[Patient-GeneralPractitioner] and a PRT of role PP by
    PRT[Patient-GeneralPractitioner-Practitioner]."""
    out: list[dict[str, str]] = []
    pd1 = ctx.message.first("PD1")
    if pd1 is not None:
        facility = ctx.xon(pd1.composite(3), "organization-id")
        if facility:
            out.append(facility)
        out += [p for p in (ctx.practitioner(c) for c in pd1.composites(4)) if p]
    for role in _active(ctx.roles(pid)):
        if role.name == "ROL" and _is_primary_care(role):
            who = practitioner_role(ctx, role, with_period=True)
        elif role.name == "PRT" and role.value(4) == _PRIMARY_CARE:
            who = ctx.practitioner(role.composite(5))
        else:
            continue
        if who and who not in out:
            out.append(who)
    return out


def participants(ctx: Context, pv1: Segment) -> list[dict[str, Any]]:
    """Encounter.participant from the ROL after PV1 (IG ROL[Encounter-PractitionerRole]: ROL-3
    type by ProviderRole, ROL-4 the individual's practitioner, ROL-5/6 the period) and the PRT
    (our choice: PRT-4 the type, PRT-5 the Practitioner, PRT-11/12 the period)."""
    out = []
    for role in _active(ctx.roles(pv1)):
        if role.name == "ROL":
            who = practitioner_role(ctx, role)
            kind = ctx.codeable(role, 3, "ProviderRole", v2_table="0443")
            period = _period(ctx, role, 5, 6)
        else:
            who = ctx.practitioner(role.composite(5))
            kind = ctx.codeable(role, 4, "Participation", v2_table="0912")
            period = _period(ctx, role, 11, 12)
        if who is None:
            continue
        entry: dict[str, Any] = {"type": [kind]} if kind else {}
        if period:
            entry["period"] = period
        entry["individual"] = who
        out.append(entry)
    return out


def performers(ctx: Context, pr1: Segment) -> list[dict[str, Any]]:
    """Procedure.performer from the ROL and PRT of the PROCEDURE group (our choice: the role
    as the function, ROL-4 through its PractitionerRole, PRT-5 the Practitioner)."""
    out = []
    for role in _active(ctx.roles(pr1)):
        if role.name == "ROL":
            who = practitioner_role(ctx, role)
            function = ctx.codeable(role, 3, "ProviderRole", v2_table="0443")
        else:
            who = ctx.practitioner(role.composite(5))
            function = ctx.codeable(role, 4, "Participation", v2_table="0912")
        if who is not None:
            out.append({**({"function": function} if function else {}), "actor": who})
    return out


def practitioner_role(ctx: Context, rol: Segment, with_period: bool = False
                      ) -> dict[str, str] | None:  # fmt: skip
    """ROL -> a reference to a PractitionerRole (IG ROL[...]: ROL-1 identifier, ROL-3 code by
    ProviderRole, ROL-4 practitioner, ROL-12 telecom; ROL-5/6 its period for a general
    practitioner), found by ROL-1, else by ROL-4.1 and ROL-3.1. A ROL-4 without an id is the
    practitioner's name as a display."""
    person = rol.composite(4)
    who = ctx.practitioner(person)
    if who is None or "reference" not in who:
        return who
    instance = rol.composite(1)
    if instance[1]:
        system, value = ctx.system("practitioner-role", instance[2] or instance[3]), instance[1]
    else:
        system = ctx.system("practitioner-role", dt.authority(person, 9))
        value = f"{person[1]}/{rol.value(3)}"
    resource: dict[str, Any] = {"resourceType": "PractitionerRole",
                                "identifier": [{"system": system, "value": value}],
                                "active": True, "practitioner": who}  # fmt: skip
    code = ctx.codeable(rol, 3, "ProviderRole", v2_table="0443")
    if code:
        resource["code"] = [code]
    period = _period(ctx, rol, 5, 6) if with_period else None
    if period:
        resource["period"] = period
    telecom = [t for t in (dt.contact_point(c, "work") for c in rol.composites(12)) if t]
    if telecom:
        resource["telecom"] = telecom
    op = ctx.plan.add(Op(f"role:{system}|{value}", "PractitionerRole", resource,
                         match=token("identifier", system, value), mode="keep"))  # fmt: skip
    return reference(op, who.get("display"))


def _is_primary_care(rol: Segment) -> bool:
    """IG ADT_A01 row 13: ROL-3.1 PP and ROL-3.3 HL70443 (a HIS that leaves ROL-3.3 empty
    means the same table: ROL-3 is a field of table 0443)."""
    return rol.value(3) == _PRIMARY_CARE and rol.value(3, 3) in ("HL70443", "")


def _active(roles: list[Segment]) -> list[Segment]:
    """Without the roles the sender deletes (ROL-2 / PRT-2 action code D, HL7 table 0287)."""
    return [r for r in roles if r.value(2) != "D"]


def _period(ctx: Context, segment: Segment, start: int, end: int) -> dict[str, str]:
    out = {}
    for key, field in (("start", start), ("end", end)):
        value = ctx.date_time(segment, field)
        if value:
            out[key] = value
    return out
