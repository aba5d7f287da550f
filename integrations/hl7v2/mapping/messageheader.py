"""MSH -> MessageHeader (IG MSH[MessageHeader]) and the message's Provenance (IG MSH[Provenance-
Source] and MSH[Provenance-Transformation], in one: the message is its source entity, the sending
facility its author, this server the assembler; every resource written is a target).

Z-segments (site-defined, which the IG cannot map and hl7apy drops) are kept whole on the
MessageHeader, one extension each, besides the raw message in the inbox."""

from __future__ import annotations

import hashlib
from typing import Any

from fhir_server.referral.codes import CANONICAL

from ..er7 import Composite
from .context import Context
from .plan import Op

#: our extension holding one Z-segment as written (ER7, escapes kept)
Z_SEGMENT = f"{CANONICAL}/StructureDefinition/hl7v2-z-segment"
ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
TRANSFORMATION = "http://hl7.org/fhir/uv/v2mappings/CodeSystem/provenance-activity-type-v2-to-fhir"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_URI_TYPES = {"ISO": "urn:oid:", "UUID": "urn:uuid:", "DNS": "urn:dns:", "URI": "urn:uri:"}


def message_id(sender: str, control_id: str) -> str:
    """The MessageHeader's id: the same message (sender, MSH-10) always has the same one, so a
    replay replaces it."""
    return "hl7v2-" + hashlib.sha256(f"{sender}\x00{control_id}".encode()).hexdigest()[:40]


def endpoint(hd: Composite) -> dict[str, Any]:
    """HD -> name and endpoint (IG HD[MessageHeader.source-endpoint]): a URI when HD.3 says
    what HD.2 is, else the name and the endpoint marked unknown (R4 requires one)."""
    out: dict[str, Any] = {}
    if hd[1]:
        out["name"] = hd[1]
    prefix = _URI_TYPES.get(hd[3].upper())
    if prefix and hd[2]:
        out["endpoint"] = prefix + hd[2]
    else:
        if hd[2]:
            out["name"] = f"{hd[1]} - {hd[3]}:{hd[2]}" if hd[1] else hd[2]
        out["_endpoint"] = {"extension": [{"url": ABSENT, "valueCode": "unknown"}]}
    return out


def message_header(ctx: Context, focus: list[Op]) -> Op:
    msh = ctx.message.msh
    h = ctx.header
    shown = "^".join(x for x in (h.kind, h.event, h.structure or "") if x)
    resource: dict[str, Any] = {"resourceType": "MessageHeader"}
    kept = [s.text() for s in ctx.message.segments if s.name.startswith("Z")]
    if kept:
        resource["extension"] = [{"url": Z_SEGMENT, "valueString": z} for z in kept]
    resource["eventCoding"] = {"system": "http://terminology.hl7.org/CodeSystem/v2-0003",
                               "code": h.event, "display": shown}  # fmt: skip
    receiver = msh.composite(5)
    if receiver:
        resource["destination"] = [endpoint(receiver)]
    resource["sender"] = ctx.organization()
    resource["source"] = endpoint(msh.composite(3))
    if focus:
        resource["focus"] = [{"reference": op.ref} for op in focus]
    rid = message_id(h.sender, h.control_id)
    return ctx.plan.add(Op("messageheader", "MessageHeader", resource, rid=rid,
                           provenance=False))  # fmt: skip


def provenance(ctx: Context, header: Op) -> dict[str, Any]:
    """The message's Provenance without its targets and recorded time (the writer adds them)."""
    h = ctx.header
    out: dict[str, Any] = {"resourceType": "Provenance"}
    sent = ctx.date_time(ctx.message.msh, 7)
    if sent:
        out["occurredDateTime"] = sent
    out["activity"] = {"coding": [{"system": TRANSFORMATION, "code": "v2-fhir-transformation"}],
                       "text": f"message - {h.kind}^{h.event}^{h.structure}"}  # fmt: skip
    out["agent"] = [
        {"type": {"coding": [{"system": PARTICIPANT, "code": "author"}]},
         "who": ctx.organization()},
        {"type": {"coding": [{"system": PARTICIPANT, "code": "assembler"}]},
         "who": {"display": "fhir-server HL7 v2 listener"}},
    ]  # fmt: skip
    out["entity"] = [{"role": "source", "what": {
        "reference": header.ref, "display": f"{h.type} {h.sender} {h.control_id}"}}]  # fmt: skip
    return out
