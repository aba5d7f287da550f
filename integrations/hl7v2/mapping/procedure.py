"""PR1 (+ its ROL/PRT) -> Procedure, after the IG's segment map PR1[Procedure] (message maps
ADT_A01, ADT_A05: the PROCEDURE group).

A Procedure is found by PR1-19 (procedure identifier) when sent, else by an identifier we derive
from the visit (else the patient), the code and PR1-5. Status: the IG leaves it to the message
context, "if not clear, use unknown"; an ADT does not say whether the procedure was done, so
`unknown`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Op, token
from .roles import performers

_SCT = "http://snomed.info/sct"
#: PR1-8 anesthesiologist, PR1-11 surgeon (IG: performer.function SNOMED CT), PR1-12 procedure
#: practitioner (no function)
_PERFORMERS = ((8, "88189002"), (11, "304292004"), (12, ""))


def procedures(ctx: Context, patient: Op, encounter: Op | None) -> list[Op]:
    return [procedure(ctx, pr1, patient, encounter) for pr1 in ctx.message.all("PR1")]


def procedure(ctx: Context, pr1: Segment, patient: Op, encounter: Op | None) -> Op:
    """IG PR1[Procedure] row by row."""
    code = ctx.codeable(pr1, 3)
    if code is None or not pr1.value(3):
        raise ctx.at(pr1, 3, 1).error(101, "PR1-3 (procedure code) is empty")
    description = pr1.value(4)
    if description and not pr1.value(3, 9):  # PR1-4 -> code.text if PR1-3.9 not valued
        code["text"] = description
    ident = _identifier(ctx, pr1, encounter)
    resource: dict[str, Any] = {"resourceType": "Procedure", "identifier": [ident],
                                "status": "unknown"}
    category = ctx.codeable(pr1, 6)
    if category:
        resource["category"] = category
    resource["code"] = code
    resource["subject"] = {"reference": patient.ref}
    if encounter is not None:
        resource["encounter"] = {"reference": encounter.ref}
    resource.update(_performed(ctx, pr1))
    people = []
    for field, function in _PERFORMERS:
        for c in pr1.composites(field):
            actor = ctx.practitioner(c)
            if actor:
                entry: dict[str, Any] = {"actor": actor}
                if function:
                    entry = {"function": {"coding": [{"system": _SCT, "code": function}]},
                             **entry}
                people.append(entry)
    people += performers(ctx, pr1)
    if people:
        resource["performer"] = people
    reasons = [r for r in (ctx.codeable(pr1, 15, rep=n) for n in range(len(pr1.reps(15)))) if r]
    if reasons:
        resource["reasonCode"] = reasons
    return ctx.plan.add(Op(f"procedure:{ident['system']}|{ident['value']}", "Procedure",
                           resource, match=token("identifier", ident["system"], ident["value"])))


def _performed(ctx: Context, pr1: Segment) -> dict[str, Any]:
    """PR1-5, and PR1-7 minutes: performedPeriod when PR1-5 is precise to the minute (PR1-5.5
    of the IG's rows is its minute), else performedDateTime."""
    start = ctx.date_time(pr1, 5)
    if not start:
        return {}
    minutes = pr1.value(7)
    if minutes and len(start) > 10:
        count = dt.number(minutes, ctx.at(pr1, 7))
        end = datetime.fromisoformat(start) + timedelta(minutes=count)
        return {"performedPeriod": {"start": start, "end": end.isoformat()}}
    return {"performedDateTime": start}


def _identifier(ctx: Context, pr1: Segment, encounter: Op | None) -> dict[str, str]:
    """PR1-19 (EI), else `<visit or patient>/<PR1-3.3>/<PR1-3.1>/<PR1-5>`."""
    own = pr1.composite(19)
    if own[1]:
        return {"system": ctx.system("procedure-id", own[2] or own[3]), "value": own[1]}
    authority, scope = ctx.scope(encounter)
    code = pr1.composite(3)
    return {"system": ctx.system("hl7v2-procedure", authority),
            "value": f"{scope}/{code[3]}/{code[1]}/{pr1.value(5)}"}
