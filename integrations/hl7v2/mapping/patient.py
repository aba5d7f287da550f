"""PID (+ NK1, PD1, ROL/PRT) -> Patient, after the IG's segment maps PID[Patient], NK1[Patient]
and PD1[Patient] (roles.py: generalPractitioner); MRG -> the
identifiers of the patient record merged away (ADT^A40).

A patient is found by the first PID-3 identifier (the primary id, by HL7 convention), in the
identifier system its assigning authority names (integrations/patients.py; the sending facility
when PID-3.4 is empty), so the same patient in two messages is one Patient."""

from __future__ import annotations

from typing import Any

from integrations.patients import identifier_system

from .. import tables
from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Mode, Op, token
from .roles import general_practitioners

BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


def identifiers(ctx: Context, segment: Segment, field: int) -> list[dict[str, Any]]:
    """CX repetitions -> Identifiers (IG CX[Identifier]: .1 value, .4 assigning authority as
    the system, .5 type, .7/.8 period)."""
    out = []
    for c in segment.composites(field):
        if not c[1]:
            continue
        if len(c[1]) > 199:
            raise ctx.at(segment, field, 1).error(102, "an identifier of more than 199 characters")
        system = identifier_system(ctx.settings, dt.authority(c, 4) or ctx.facility)
        ident = dt.identifier(c[1], system, c[5])
        period = {}
        where = ctx.at(segment, field)
        for key, n in (("start", 7), ("end", 8)):
            value = dt.date_time(c[n], where, ctx.zone)
            if value:
                period[key] = value
        if period:
            ident["period"] = period
        out.append(ident)
    return out


def patient(ctx: Context, pid: Segment, mode: Mode) -> Op:
    """The Patient op of the message (key `patient`), found by its primary identifier."""
    ids = identifiers(ctx, pid, 3)
    if not ids:
        raise ctx.at(pid, 3, 1).error(101, "PID-3 holds no patient identifier")
    resource: dict[str, Any] = {"resourceType": "Patient", "active": True}
    resource["identifier"] = ids + identifiers(ctx, pid, 2) + identifiers(ctx, pid, 4)
    names = [n for n in (dt.human_name(c) for c in pid.composites(5)) if n]
    names += [{**n, "use": "nickname"} if "use" not in n else n
              for n in (dt.human_name(c) for c in pid.composites(9)) if n]  # fmt: skip
    if names:
        resource["name"] = names
    born = pid.value(7)
    if born:
        resource["birthDate"] = ctx.date(pid, 7)
        if len(born) > 8:  # IG: PID-7 longer than a date -> patient-birthTime
            resource["_birthDate"] = {"extension": [
                {"url": BIRTH_TIME, "valueDateTime": ctx.date_time(pid, 7)}]}  # fmt: skip
    sex = pid.value(8)
    if sex:
        gender = tables.code("AdministrativeSex", sex.upper()) or tables.code(
            "AdministrativeSexLocal", sex
        )
        if gender is None:
            raise ctx.at(pid, 8).error(103, f"'{sex}' is not a sex of HL7 table 0001")
        resource["gender"] = gender
    addresses = [a for a in (dt.address(c) for c in pid.composites(11)) if a]
    if addresses:
        resource["address"] = addresses
    telecom = [t for t in (dt.contact_point(c, "home") for c in pid.composites(13)) if t]
    telecom += [t for t in (dt.contact_point(c, "work") for c in pid.composites(14)) if t]
    if telecom:
        resource["telecom"] = telecom
    language = ctx.codeable(pid, 15)
    if language:
        resource["communication"] = [{"language": language}]
    marital = ctx.codeable(pid, 16, "MaritalStatus")
    if marital:
        resource["maritalStatus"] = marital
    births = pid.value(25)
    if births:
        resource["multipleBirthInteger"] = int(dt.number(births, ctx.at(pid, 25)))
    elif pid.value(24) in ("Y", "N"):
        resource["multipleBirthBoolean"] = pid.value(24) == "Y"
    if pid.value(29):
        resource["deceasedDateTime"] = ctx.date_time(pid, 29)
    elif pid.value(30) in ("Y", "N"):
        resource["deceasedBoolean"] = pid.value(30) == "Y"
    contacts = [c for c in (contact(ctx, nk1) for nk1 in ctx.message.all("NK1")) if c]
    if contacts:
        resource["contact"] = contacts
    carers = general_practitioners(ctx, pid)
    if carers:
        resource["generalPractitioner"] = carers
    resource["managingOrganization"] = ctx.organization()
    first = ids[0]
    query = token("identifier", first["system"], first["value"])
    return ctx.plan.add(Op("patient", "Patient", resource, match=query, mode=mode,
                           merge=("identifier", "link"), follow=True))  # fmt: skip


def contact(ctx: Context, nk1: Segment) -> dict[str, Any] | None:
    """NK1 -> Patient.contact (IG NK1[Patient]): .2 name, .3 relationship, .4 address, .5/.6
    phones."""
    out: dict[str, Any] = {}
    relationship = ctx.codeable(nk1, 3, "Relationship")
    if relationship:
        out["relationship"] = [relationship]
    name = dt.human_name(nk1.composite(2))
    if name:
        out["name"] = name
    telecom = [t for t in (dt.contact_point(c, "home") for c in nk1.composites(5)) if t]
    telecom += [t for t in (dt.contact_point(c, "work") for c in nk1.composites(6)) if t]
    if telecom:
        out["telecom"] = telecom
    place = dt.address(nk1.composite(4))
    if place:
        out["address"] = place
    return out if set(out) - {"relationship"} else None


def prior_identifiers(ctx: Context, mrg: Segment) -> list[dict[str, Any]]:
    """MRG-1 (prior patient identifier list) as Identifiers, in the systems PID-3 uses."""
    found = identifiers(ctx, mrg, 1)
    if not found:
        raise ctx.at(mrg, 1, 1).error(101, "MRG-1 names no prior patient identifier")
    return found

