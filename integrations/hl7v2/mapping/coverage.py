"""IN1 (+ IN2) -> Coverage and its payor Organization, after the IG's segment map IN1[Coverage]
(message maps ADT_A01, ADT_A05: the INSURANCE group; IN2 has no IG map).

A Coverage is found by its policy number (IN1-36, which the IG leaves unmapped: we make it the
Coverage's first identifier, in the insurer's system), else by an identifier we derive from the
patient, the insurer and the plan (IN1-2). The payor is the insurer (IN1-3 its id, IN1-4 its
name, IN1-5 its address: IG XON[Organization]), found or created by IN1-3. Our choices: status
`active` (R4 requires one, v2 sends none); IN1-49 as R4 `subscriberId` (the IG, written for R5,
uses an extension); IN2-61 (patient member number, the medical insurance card) as an identifier
of type MB; the subscriber (IN1-17 not SEL) a RelatedPerson with IN1-16's name."""

from __future__ import annotations

from typing import Any

from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Op, reference, token

#: IN1-17 (HL7 table 0063) of a patient insured in their own name
_SELF = "SEL"


def coverages(ctx: Context, patient: Op) -> list[Op]:
    """A Coverage per IN1, with the IN2 that follows it."""
    out = []
    segments = ctx.message.segments
    for n, segment in enumerate(segments):
        if segment.name == "IN1":
            after = segments[n + 1] if n + 1 < len(segments) else None
            out.append(coverage(ctx, segment, after if after and after.name == "IN2" else None,
                                patient))  # fmt: skip
    return out


def coverage(ctx: Context, in1: Segment, in2: Segment | None, patient: Op) -> Op:
    """IG IN1[Coverage] row by row."""
    company = in1.composite(3)
    name = in1.composite(4)
    insurer_id = company[1] or name[10] or name[3]
    authority = dt.authority(company, 4) if company[1] else dt.authority(name, 6)
    payor = ctx.named_organization("insurer-id", name[1], insurer_id, authority,
                                   dt.address(in1.composite(5)))  # fmt: skip
    if payor is None:
        raise ctx.at(in1, 3, 1).error(101, "IN1 names no insurance company (IN1-3, IN1-4)")
    identifiers = []
    policy = in1.value(36)
    if policy:
        identifiers.append({"system": ctx.system("policy-number", insurer_id or name[1]),
                            "value": policy})
    else:
        person_authority, person = ctx.subject_key()
        identifiers.append({"system": ctx.system("hl7v2-coverage", person_authority),
                            "value": f"{person}/{insurer_id or name[1]}/{in1.value(2)}"})
    member = in2.composite(61) if in2 is not None else None
    if member:
        identifiers.append(dt.identifier(member[1], ctx.system("member-id", dt.authority(
            member, 4) or insurer_id), member[5] or "MB"))
    plan = in1.composite(2)
    if plan[1]:  # IN1-2 CWE[Identifier]: .1 value, .3 system
        identifiers.append({"system": dt.system_uri(plan[3], ctx.facility)
                            or ctx.system("health-plan", insurer_id), "value": plan[1]})
    resource: dict[str, Any] = {"resourceType": "Coverage", "identifier": identifiers,
                                "status": "active"}
    kind = ctx.codeable(in1, 15)
    if kind:
        resource["type"] = kind
    relation = in1.composite(17)
    subscriber = None
    if relation[1] == _SELF:
        subscriber = {"reference": patient.ref}
    elif in1.value(16):
        subscriber = _related_person(ctx, in1, patient, identifiers[0])
    if subscriber:
        resource["subscriber"] = subscriber
    insured_id = in1.value(49)
    if insured_id:
        resource["subscriberId"] = insured_id
    resource["beneficiary"] = {"reference": patient.ref}
    relationship = ctx.codeable(in1, 17, "Relationship", v2_table="0063")
    if relationship:
        resource["relationship"] = relationship
    period = {k: v for k, v in (("start", ctx.date(in1, 12)), ("end", ctx.date(in1, 13))) if v}
    if period:
        resource["period"] = period
    resource["payor"] = [payor]
    first = identifiers[0]
    return ctx.plan.add(Op(f"coverage:{first['system']}|{first['value']}", "Coverage", resource,
                           match=token("identifier", first["system"], first["value"])))


def _related_person(ctx: Context, in1: Segment, patient: Op, policy: dict[str, str]
                    ) -> dict[str, str]:  # fmt: skip
    """IN1-16 (name of insured) when not the patient: the RelatedPerson (IG IN1-16 row
    subscriber(RelatedPerson)), found by the coverage it subscribes."""
    name = dt.human_name(in1.composite(16))
    value = f"{policy['value']}/subscriber"
    resource: dict[str, Any] = {"resourceType": "RelatedPerson",
                                "identifier": [{"system": policy["system"], "value": value}],
                                "active": True, "patient": {"reference": patient.ref}}
    relationship = ctx.codeable(in1, 17, "Relationship", v2_table="0063")
    if relationship:
        resource["relationship"] = [relationship]
    if name:
        resource["name"] = [name]
    op = ctx.plan.add(Op(f"subscriber:{policy['system']}|{value}", "RelatedPerson", resource,
                         match=token("identifier", policy["system"], value)))
    return reference(op, (name or {}).get("text"))
