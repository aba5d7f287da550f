"""AL1 -> AllergyIntolerance, after the IG's segment map AL1[AllergyIntolerance] (message maps
ADT_A01, ADT_A05).

AL1 carries no identifier (AL1-1 numbers the segments of one message only), so an allergy is
found by an identifier we derive from the patient and the allergen (AL1-3 system and code, else
its text): an A08 that restates an allergy with another severity or reaction updates the one
its A01 made. An allergy the HIS no longer sends is left as it is (the IG says nothing of
removal). Severity (AL1-4) maps to criticality, the IG's reading for v2 ("an overall
assessment"): SV high, MI low; MO and U have no criticality in its map."""

from __future__ import annotations

from typing import Any

from .. import tables
from ..er7 import Segment
from .context import Context
from .plan import Op, token

_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
#: HL7 table 0128 (allergy severity)
_SEVERITIES = frozenset({"SV", "MO", "MI", "U"})


def allergies(ctx: Context, patient: Op) -> list[Op]:
    return [allergy(ctx, al1, patient) for al1 in ctx.message.all("AL1")]


def allergy(ctx: Context, al1: Segment, patient: Op) -> Op:
    """IG AL1[AllergyIntolerance] row by row."""
    allergen = al1.composite(3)
    what = allergen[1] or allergen[2]
    if not what:
        raise ctx.at(al1, 3, 1).error(101, "AL1-3 (allergen) is empty")
    authority, person = ctx.subject_key()
    system = ctx.system("hl7v2-allergy", authority)
    value = f"{person}/{allergen[3]}/{what}"
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "identifier": [{"system": system, "value": value}],
        # IG row AL1: clinicalStatus "active" (constraint ait-1 needs one)
        "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
    }
    kind = al1.value(2)
    if kind:  # AL1-2 -> type (AllergyType), category (AllergenType[...Category])
        allergy_type = tables.code("AllergyType", kind)
        if allergy_type:
            resource["type"] = allergy_type
        category = tables.code("AllergenType[AllergyIntoleranceCategory]", kind)
        if category:
            resource["category"] = [category]
    severity = al1.value(4)
    if severity:
        if severity not in _SEVERITIES:
            raise ctx.at(al1, 4, 1).error(
                103, f"'{severity}' is not an allergy severity of HL7 table 0128 (SV, MO, MI, U)")
        criticality = tables.code("AllergySeverity[AllergyIntolerance.criticality]", severity)
        if criticality:
            resource["criticality"] = criticality
    resource["code"] = ctx.codeable(al1, 3)
    resource["patient"] = {"reference": patient.ref}
    onset = ctx.date_time(al1, 6)
    if onset:
        resource["onsetDateTime"] = onset
    reactions = [{"text": c[1]} for c in al1.composites(5) if c[1]]
    if reactions:  # AL1-5 (ST, repeating) -> reaction.manifestation.text
        resource["reaction"] = [{"manifestation": reactions}]
    return ctx.plan.add(Op(f"allergy:{system}|{value}", "AllergyIntolerance", resource,
                           match=token("identifier", system, value)))
