"""TXA + OBX -> DocumentReference, after the IG's segment map TXA[DocumentReference] (message map
MDM_T02, which T04, T06, T08 and T10 share): the document's text travels in OBX-5 (TX or FT
lines, or an ED attachment).

A document is found by its unique document number (TXA-12, masterIdentifier), so an edit
(T08) or a replacement (T10) updates the DocumentReference its original (T02) made."""

from __future__ import annotations

import base64
from typing import Any

from .. import tables
from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .plan import Op, token
from .results import _attachment


def document(ctx: Context, txa: Segment, patient: Op, encounter: Op | None) -> Op:
    unique = txa.composite(12)
    if not unique[1]:
        raise ctx.at(txa, 12, 1).error(101, "TXA-12 (unique document number) is empty")
    system = ctx.system("document", unique[2] or unique[3])
    availability = txa.value(19)
    status = tables.code("DocumentAvailability", availability) if availability else "current"
    if status is None:
        raise ctx.at(txa, 19).error(103, f"'{availability}' is not an availability of table 0275")
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": system, "value": unique[1]},
        "status": status,
    }
    placer = txa.composite(14)  # placer order number: the document answers an order
    if placer[1]:
        resource["identifier"] = [dt.identifier(placer[1], ctx.system("placer-order",
                                                                      placer[2]), "PLAC")]
    completion = txa.value(17)
    if completion:
        doc_status = tables.code("DocumentCompletion", completion)
        if doc_status:
            resource["docStatus"] = doc_status
    kind = dt.codeable(txa.composite(2), ctx.facility)
    if kind:
        if "coding" in kind and len(kind["coding"]) == 1 and "system" not in kind["coding"][0]:
            kind["coding"][0] = {"system": f"{dt.V2_TABLE}0270", **kind["coding"][0]}
        resource["type"] = kind
    resource["subject"] = {"reference": patient.ref}
    written = ctx.instant(txa, 6) if len(txa.value(6)) >= 14 else None
    activity = ctx.date_time(txa, 4)
    if written:
        resource["date"] = written
    authors = [a for a in (ctx.practitioner(c) for c in txa.composites(9)) if a]
    if authors:
        resource["author"] = authors
    authenticator = ctx.practitioner(txa.composite(10))
    if authenticator:
        resource["authenticator"] = authenticator
    description = txa.value(25) or txa.value(16)
    if description:
        resource["description"] = description
    resource["content"] = [{"attachment": _content(ctx, txa)}]
    context: dict[str, Any] = {}
    if encounter is not None:
        context["encounter"] = [{"reference": encounter.ref}]
    if activity:
        context["period"] = {"start": activity}
    if context:
        resource["context"] = context
    return ctx.plan.add(Op("document", "DocumentReference", resource,
                           match=token("identifier", system, unique[1])))


def _content(ctx: Context, txa: Segment) -> dict[str, Any]:
    """The OBX lines as one text/plain attachment (TX, ST, FT; FT escapes such as \\.br\\ as
    line breaks), or the first ED attachment."""
    lines: list[str] = []
    for obx in ctx.message.all("OBX"):
        if obx.value(2) == "ED":
            return _attachment(ctx, obx)
        lines += [obx.value(5, rep=r) if obx.value(2) == "FT" else obx.value(5, 1, rep=r)
                  for r in range(len(obx.reps(5)))]  # fmt: skip
    if not lines:
        raise ctx.at(txa, 3).error(101, "the document has no content (no OBX)")
    text = "\n".join(lines)
    out = {"contentType": "text/plain; charset=utf-8",
           "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}
    title = txa.value(2, 2)
    if title:
        out["title"] = title
    return out
