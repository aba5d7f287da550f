"""DG1 -> Condition and Encounter.diagnosis, after the IG's segment maps DG1[Condition] and
DG1[Encounter] (message maps ADT_A01, ADT_A05: "in context of an encounter" when the message
has a visit).

A Condition is found by DG1-20 (diagnosis identifier) when the HIS sends one (the IG's
identifier); else by an identifier we derive from what the diagnosis is, the visit (else the
patient) and the code: the same diagnosis of the same visit in an A08 updates the Condition its
A01 made. The code's system must be one we can name (datatypes.known_system): a diagnosis in an
unknown coding system cannot be used, so the message gets an AE naming DG1-3.3. Our choices:
category `encounter-diagnosis` (a diagnosis of a visit, HL7 table 0052 types); no
clinicalStatus (the IG maps none); DG1-19 as recordedDate (of the IG's two targets)."""

from __future__ import annotations

from typing import Any

from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Op, token

_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                         "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def diagnoses(ctx: Context, patient: Op, encounter: Op | None) -> list[Op]:
    """A Condition per DG1, each named by Encounter.diagnosis (DG1-6 use, DG1-15 rank) when
    the message has a visit."""
    ops, uses = [], []
    for dg1 in ctx.message.all("DG1"):
        op = condition(ctx, dg1, patient, encounter)
        ops.append(op)
        entry: dict[str, Any] = {"condition": {"reference": op.ref}}
        use = ctx.codeable(dg1, 6, "DiagnosisType", v2_table="0052")
        if use:
            entry["use"] = use
        rank = dg1.value(15)
        if rank:
            value = dt.number(rank, ctx.at(dg1, 15))
            if not isinstance(value, int) or value < 1:
                raise ctx.at(dg1, 15).error(102, f"'{rank}' is not a priority (1, 2, ...)")
            entry["rank"] = value
        uses.append(entry)
    if encounter is not None and uses:
        encounter.resource["diagnosis"] = uses
    return ops


def condition(ctx: Context, dg1: Segment, patient: Op, encounter: Op | None) -> Op:
    """IG DG1[Condition] row by row."""
    code = dg1.composite(3)
    if not code[1]:
        raise ctx.at(dg1, 3, 1).error(101, "DG1-3 (diagnosis code) is empty")
    system_name = code[3]
    if system_name and dt.known_system(system_name, ctx.facility) is None:
        raise ctx.at(dg1, 3, 3).error(
            103, f"'{system_name}' is not a diagnosis coding system we know (HL7 table 0396)")
    ident = _identifier(ctx, dg1, encounter)
    resource: dict[str, Any] = {"resourceType": "Condition", "identifier": [ident]}
    if dg1.value(21) == "D":  # DG1-21 action code D: entered in error (the IG's only value)
        resource["verificationStatus"] = {"coding": [
            {"system": _VERIFICATION, "code": "entered-in-error"}]}  # fmt: skip
    resource["category"] = [_CATEGORY]
    concept = ctx.codeable(dg1, 3)
    assert concept is not None
    description = dg1.value(4)
    if description:  # DG1-4 -> code.text (deprecated, still sent)
        concept["text"] = description
    resource["code"] = concept
    resource["subject"] = {"reference": patient.ref}
    if encounter is not None:
        resource["encounter"] = {"reference": encounter.ref}
    onset = ctx.date_time(dg1, 5)
    if onset:
        resource["onsetDateTime"] = onset
    recorded = ctx.date_time(dg1, 19)
    if recorded:
        resource["recordedDate"] = recorded
    asserter = ctx.practitioner(dg1.composite(16))
    if asserter:
        resource["asserter"] = asserter
    return ctx.plan.add(Op(f"condition:{ident['system']}|{ident['value']}", "Condition",
                           resource, match=token("identifier", ident["system"], ident["value"])))


def _identifier(ctx: Context, dg1: Segment, encounter: Op | None) -> dict[str, str]:
    """DG1-20 (EI[Identifier]), else `<visit or patient>/<DG1-3.3>/<DG1-3.1>` in the system of
    the visit number's (else the patient id's) assigning authority."""
    own = dg1.composite(20)
    if own[1]:
        return {"system": ctx.system("diagnosis-id", own[2] or own[3]), "value": own[1]}
    code = dg1.composite(3)
    authority, scope = ctx.scope(encounter)
    return {"system": ctx.system("hl7v2-diagnosis", authority),
            "value": f"{scope}/{code[3]}/{code[1]}"}
