"""OBR + OBX (+ NTE, SPM) -> DiagnosticReport, Observations and Specimen, after the IG's segment
maps OBR[DiagnosticReport], OBX[Observation] and NTE[Observation] (message map ORU_R01).

A report is found by its filler order number (ORC-3, else OBR-3), so a corrected report
(OBR-25 C) replaces the one it corrects; each Observation by the report's number, OBX-3 and
OBX-4 (sub-id) and its place among the OBX that share them, so a replay writes nothing new."""

from __future__ import annotations

import base64
from typing import Any

from .. import tables
from ..er7 import Segment
from . import datatypes as dt
from .context import Context
from .orders import Order, has_specimen, note_text, numbers, service_request, specimen
from .plan import Op, token

_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: OBR-24 sections (table 0074) whose results are imaging or procedures; anything else
#: (or nothing) is a laboratory result
_IMAGING = frozenset({"RAD", "RX", "CT", "NMR", "NMS", "US", "VUS", "XRC", "CUS", "OUS"})
#: ED.2 type of data (HL7 table 0191) -> media type
_MEDIA = {"AP": "application", "APPLICATION": "application", "IM": "image", "IMAGE": "image",
          "TEXT": "text", "TX": "text", "AU": "audio", "AUDIO": "audio"}
_PROCEDURE = frozenset({"EC", "PF", "CTH", "ICU", "OSL", "VR", "PHY", "PT", "OT"})


def report(ctx: Context, order: Order, patient: Op, encounter: Op | None, n: int) -> Op:
    """The DiagnosticReport op of an order group (key `report:<n>`) with its Observations,
    Specimen and, when the order has a placer number or an ORC, its ServiceRequest."""
    obr = order.obr
    assert obr is not None
    placer, filler = numbers(ctx, order)
    key = filler or placer or dt.identifier(
        f"{ctx.header.control_id}-{obr.value(1) or n}", ctx.system("hl7v2-message"))
    code = ctx.codeable(obr, 4)
    if code is None:
        raise ctx.at(obr, 4, 1).error(101, "OBR-4 (universal service id) is empty")
    resource: dict[str, Any] = {"resourceType": "DiagnosticReport",
                                "identifier": [i for i in (placer, filler) if i] or [key]}
    request = None
    if order.orc is not None or placer is not None:
        request = service_request(ctx, order, patient, encounter, "keep", n, "completed")
        resource["basedOn"] = [{"reference": request.ref}]
    observation_statuses = [o.value(11) for o, _ in order.observations]
    resource["status"] = _report_status(ctx, obr, observation_statuses)
    section = obr.value(24)
    if section:
        coding = tables.coding("DiagnosticServiceSectionID", section) or dt.v2_coding(
            "0074", section)
        resource["category"] = [{"coding": [coding]}]
    resource["code"] = code
    resource["subject"] = {"reference": patient.ref}
    if encounter is not None:
        resource["encounter"] = {"reference": encounter.ref}
    start, end = ctx.date_time(obr, 7), ctx.date_time(obr, 8)
    if start and end:
        resource["effectivePeriod"] = {"start": start, "end": end}
    elif start:
        resource["effectiveDateTime"] = start
    issued = ctx.instant(obr, 22)
    if issued:
        resource["issued"] = issued
    interpreter = ctx.practitioner(obr.composite(32).component(1))
    if interpreter:
        resource["resultsInterpreter"] = [interpreter]
    sample = None
    if has_specimen(order):
        sample = specimen(ctx, order, order.specimens[0] if order.specimens else None, patient)
        resource["specimen"] = [{"reference": sample.ref}]
    results, forms = [], []
    seen: dict[tuple[str, str], int] = {}
    for obx, notes in order.observations:
        if obx.value(2) == "ED":  # an embedded document (a PDF of the report)
            forms.append(_attachment(ctx, obx))
            continue
        ident = (obx.value(3), obx.value(4))
        seen[ident] = seen.get(ident, 0) + 1
        number = f"{key['value']}/{ident[0]}/{ident[1]}/{seen[ident]}"
        obs = observation(ctx, obx, notes, key["system"], number, resource, sample, request)
        results.append({"reference": obs.ref})
    if results:
        resource["result"] = results
    if forms:
        resource["presentedForm"] = forms
    return ctx.plan.add(Op(f"report:{n}", "DiagnosticReport", resource,
                           match=token("identifier", key["system"], key["value"])))


def _report_status(ctx: Context, obr: Segment, observations: list[str]) -> str:
    """OBR-25 (ResultStatus[Non-Queries]); empty, the OBX-11 statuses say it (all F: final,
    any P: preliminary, any C: corrected), else unknown."""
    code = obr.value(25)
    if code:
        mapped = tables.code("ResultStatus[Non-Queries]", code)
        if mapped is None:
            raise ctx.at(obr, 25).error(103, f"'{code}' is not a result status of table 0123")
        return mapped
    statuses = set(observations)
    if statuses and statuses <= {"F"}:
        return "final"
    if "C" in statuses:
        return "corrected"
    return "preliminary" if "P" in statuses else "unknown"


def observation(ctx: Context, obx: Segment, notes: list[Segment], system: str, number: str,
                report: dict[str, Any], sample: Op | None, request: Op | None) -> Op:  # fmt: skip
    """OBX (+ its NTE) -> Observation (IG OBX[Observation], NTE[Observation])."""
    code = ctx.codeable(obx, 3)
    if code is None:
        raise ctx.at(obx, 3, 1).error(101, "OBX-3 (observation identifier) is empty")
    resource: dict[str, Any] = {"resourceType": "Observation"}
    own = obx.composite(21)
    resource["identifier"] = [
        dt.identifier(own[1], ctx.system("observation", own[2] or own[3]))
        if own[1] else {"system": system, "value": number}
    ]  # fmt: skip
    if request is not None:
        resource["basedOn"] = [{"reference": request.ref}]
    resource["status"] = _observation_status(ctx, obx, report["status"])
    category = _category(report)
    if category:
        resource["category"] = [{"coding": [{"system": _CATEGORY, "code": category}]}]
    resource["code"] = code
    resource["subject"] = report["subject"]
    if "encounter" in report:
        resource["encounter"] = report["encounter"]
    effective = ctx.date_time(obx, 14) or report.get("effectiveDateTime") or (
        report.get("effectivePeriod", {}).get("start"))
    if effective:
        resource["effectiveDateTime"] = effective
    if "issued" in report:
        resource["issued"] = report["issued"]
    performer = ctx.practitioner(obx.composite(16))
    if performer:
        resource["performer"] = [performer]
    units = dt.unit(obx.composite(6))
    kind, value = _value(ctx, obx, units)
    if kind:
        resource[kind] = value
    interpretations = [
        {"coding": [tables.coding("InterpretationCodes", flag) or dt.v2_coding("0078", flag)]}
        for flag in (obx.value(8, rep=r) for r in range(len(obx.reps(8))))
        if flag
    ]
    if interpretations:
        resource["interpretation"] = interpretations
    comments = [{"text": t} for t in (note_text(n) for n in notes) if t]
    if comments:
        resource["note"] = comments
    method = ctx.codeable(obx, 17)
    if method:
        resource["method"] = method
    site = ctx.codeable(obx, 20)
    if site:
        resource["bodySite"] = site
    if sample is not None:
        resource["specimen"] = {"reference": sample.ref}
    limits = obx.value(7)
    if limits:
        resource["referenceRange"] = [dt.reference_range(limits, units)]
    key = f"observation:{resource['identifier'][0]['system']}|{resource['identifier'][0]['value']}"
    ident = resource["identifier"][0]
    return ctx.plan.add(Op(key, "Observation", resource,
                           match=token("identifier", ident["system"], ident["value"])))


def _observation_status(ctx: Context, obx: Segment, report_status: str) -> str:
    """OBX-11 (ObservationResultStatusCodesInterpretation); empty, the report's status."""
    code = obx.value(11)
    if not code:
        return tables.code("ReportObservationStatus", report_status) or "unknown"
    mapped = tables.code("ObservationResultStatusCodesInterpretation", code)
    if mapped is None:
        if code in ("I", "O", "R", "S"):  # pending, order detail, unverified, partial
            return "preliminary" if code in ("R", "S") else "registered"
        if code == "X":  # results cannot be obtained (IG: status + alternate-codes)
            return "cancelled"
        raise ctx.at(obx, 11).error(103, f"'{code}' is not a result status of table 0085")
    return mapped


def _category(report: dict[str, Any]) -> str | None:
    sections = {c["code"] for cat in report.get("category", []) for c in cat["coding"]}
    if sections & _IMAGING:
        return "imaging"
    if sections & _PROCEDURE:
        return "procedure"
    return "laboratory"


def _value(ctx: Context, obx: Segment, units: dict[str, str]) -> tuple[str | None, Any]:
    """OBX-5 by OBX-2 (IG OBX[Observation]): NM quantity, ST/FT/TX string (repetitions as
    lines), CE/CWE/CNE/CF/IS codeable concept, SN quantity/range/ratio, DT/DTM/TS dateTime, TM
    time, NR range, DR period."""
    kind = obx.value(2)
    reps = obx.reps(5)
    if not reps:
        return None, None
    if not kind:
        raise ctx.at(obx, 2).error(101, "OBX-2 (value type) is empty but OBX-5 is valued")
    where = ctx.at(obx, 5)
    first = obx.composite(5)
    if kind == "NM":
        return "valueQuantity", dt.quantity(first[1], units, where.of(1))
    if kind in ("ST", "FT", "TX"):
        return "valueString", "\n".join(obx.value(5, 1, rep=r) if kind != "FT"
                                        else obx.value(5, rep=r) for r in range(len(reps)))
    if kind in ("CE", "CWE", "CNE", "CF", "IS", "ID"):
        return "valueCodeableConcept", dt.codeable(first, ctx.facility)
    if kind == "SN":
        return dt.structured_numeric(first, units, where)
    if kind in ("DT", "DTM", "TS"):
        return "valueDateTime", dt.date_time(first[1], where, ctx.zone)
    if kind == "TM":
        text = first[1]
        if not text[:4].isdigit():
            raise where.error(102, f"'{text}' is not a time (HHMM[SS])")
        return "valueTime", f"{text[:2]}:{text[2:4]}:{text[4:6] or '00'}"
    if kind == "NR":
        return "valueRange", dt.numeric_range(first, units, where)
    if kind == "DR":
        start = dt.date_time(first.sub(1, 1), where, ctx.zone)
        end = dt.date_time(first.sub(2, 1), where, ctx.zone)
        return "valuePeriod", {k: v for k, v in (("start", start), ("end", end)) if v}
    raise ctx.at(obx, 2).error(103, f"value type '{kind}' is not mapped (OBX-2)")


def _attachment(ctx: Context, obx: Segment) -> dict[str, Any]:
    """ED (source ^ type ^ subtype ^ encoding ^ data) -> Attachment (IG ED[Attachment])."""
    ed = obx.composite(5)
    major = _MEDIA.get(ed[2].upper(), "application")
    media = f"{major}/{ed[3].lower()}" if ed[3] else "application/octet-stream"
    data = ed[5]
    if ed[4].upper() == "BASE64":
        try:
            base64.b64decode(data, validate=True)
        except ValueError:
            raise ctx.at(obx, 5, 5).error(102, "OBX-5.5 is not base64") from None
    else:
        data = base64.b64encode(data.encode("utf-8")).decode("ascii")
    out = {"contentType": media, "data": data}
    title = ctx.codeable(obx, 3)
    if title and title.get("text"):
        out["title"] = title["text"]
    return out
