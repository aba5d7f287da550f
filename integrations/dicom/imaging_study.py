"""DICOM -> FHIR R4: the ImagingStudy of a stored study, its Endpoints and a Patient for an
unknown PatientID (hl7.org/fhir/R4/imagingstudy.html, "DICOM Mapping" of each element). Pure
functions over the index rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
#: ImagingStudy.identifier of the StudyInstanceUID (imagingstudy.html#notes: "urn:dicom:uid")
UID_SYSTEM = "urn:dicom:uid"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
#: the shared Endpoints (one per service, for every study: integrations.md §3.3)
WADO_ENDPOINT = "dicom-wado-rs"
IID_ENDPOINT = "dicom-iid"

#: Body Part Examined (0018,0015) -> SNOMED CT (PS3.16 Annex L, CID 4031), the common ones
BODY_PARTS = {
    "ABDOMEN": ("818983003", "Abdomen"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("51185008", "Thorax"),
    "CSPINE": ("122494005", "Cervical spine"),
    "ELBOW": ("16953009", "Elbow joint"),
    "EXTREMITY": ("66019005", "Limb"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "KNEE": ("72696002", "Knee"),
    "LIVER": ("10200004", "Liver"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "NECK": ("45048000", "Neck"),
    "PELVIS": ("12921003", "Pelvis"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "TSPINE": ("122495006", "Thoracic spine"),
}
#: Laterality (0020,0060) -> SNOMED CT (the R4 binding's example value set)
LATERALITY = {"R": ("24028007", "Right"), "L": ("7771000", "Left")}
GENDER = {"M": "male", "F": "female", "O": "other"}


def study_identifier(study_uid: str) -> str:
    """The token searching ImagingStudy by this study: `urn:dicom:uid|urn:oid:<uid>`."""
    return f"{UID_SYSTEM}|urn:oid:{study_uid}"


def imaging_study(
    study: dict[str, Any],
    series: list[dict[str, Any]],
    instances: list[dict[str, Any]],
    patient: str,
    based_on: str | None,
    endpoints: list[str],
) -> dict[str, Any]:
    """The ImagingStudy of one study. `patient`, `based_on` and `endpoints` are references
    (`Patient/x`); instances carry their `attrs` (DICOM JSON)."""
    by_series: dict[str, list[dict[str, Any]]] = {}
    for it in instances:
        by_series.setdefault(it["series_uid"], []).append(it)
    attrs = orjson.loads(study["attrs"])
    out: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": UID_SYSTEM, "value": f"urn:oid:{study['uid']}"}],
        "status": "available",
    }
    if study["accession"]:
        out["identifier"].append(
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                         "code": "ACSN"}  # fmt: skip
                    ]
                },
                "value": study["accession"],
            }
        )
    modalities = sorted({s["modality"] for s in series if s["modality"]})
    if modalities:
        out["modality"] = [{"system": DCM, "code": m} for m in modalities]
    out["subject"] = {"reference": patient}
    started = date_time(study["study_date"], study["study_time"], _tz(attrs))
    if started:
        out["started"] = started
    if based_on:
        out["basedOn"] = [{"reference": based_on}]
    referrer = _name(attrs.get("00080090"))
    if referrer:
        out["referrer"] = {"display": referrer}
    if endpoints:
        out["endpoint"] = [{"reference": e} for e in endpoints]
    kept = [s for s in series if by_series.get(s["uid"])]
    out["numberOfSeries"] = len(kept)
    out["numberOfInstances"] = sum(len(by_series[s["uid"]]) for s in kept)
    if study["description"]:
        out["description"] = study["description"]
    out["series"] = [_series(s, by_series[s["uid"]], _tz(attrs)) for s in kept]
    return out


def _series(series: dict[str, Any], instances: list[dict[str, Any]], tz: str | None) -> dict:
    attrs = orjson.loads(series["attrs"])
    out: dict[str, Any] = {"uid": series["uid"]}
    if series["number"] is not None and series["number"] >= 0:
        out["number"] = series["number"]
    # Modality is Type 1 in the General Series module; OT ("other") for a sender leaving it out
    out["modality"] = {"system": DCM, "code": series["modality"] or "OT"}
    if series["description"]:
        out["description"] = series["description"]
    out["numberOfInstances"] = len(instances)
    body = _first(attrs.get("00180015"))
    if body:
        code = BODY_PARTS.get(body.upper())
        out["bodySite"] = (
            {"system": SCT, "code": code[0], "display": code[1]} if code else {"display": body}
        )
    side = _first(attrs.get("00200060"))
    if side in LATERALITY:
        out["laterality"] = {"system": SCT, "code": LATERALITY[side][0],
                             "display": LATERALITY[side][1]}  # fmt: skip
    started = date_time(_first(attrs.get("00080021")), _first(attrs.get("00080031")), tz)
    if started:
        out["started"] = started
    out["instance"] = [_instance(i) for i in instances]
    return out


def _instance(instance: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uid": instance["uid"],
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{instance['sop_class']}"},
    }
    if instance["number"] is not None and instance["number"] >= 0:
        out["number"] = instance["number"]
    return out


def patient(
    system: str, patient_id: str, attrs: bytes, *, identified: bool = True
) -> dict[str, Any]:
    """A Patient for a PatientID no Patient has yet: the identifier, the name (the
    ideographic group as the official name, the alphabetic one, pinyin, as a second name:
    both are kept), birth date and sex from the study's attributes."""
    values = orjson.loads(attrs)
    out: dict[str, Any] = {"resourceType": "Patient"}
    if identified:
        out["identifier"] = [{"system": system, "value": patient_id}]
    pn = ((values.get("00100010") or {}).get("Value") or [{}])[0]
    names = []
    for group, use in (("Ideographic", "official"), ("Alphabetic", None)):
        name = human_name(pn.get(group, ""), use)
        if name:
            names.append(name)
    if names:
        out["name"] = names
    sex = GENDER.get(_first(values.get("00100040")) or "")
    if _first(values.get("00100040")) is not None:
        out["gender"] = sex or "unknown"
    birth = fhir_date(_first(values.get("00100030")) or "")
    if birth:
        out["birthDate"] = birth
    return out


def human_name(group: str, use: str | None = None) -> dict[str, Any] | None:
    """One PN component group (family^given^middle^prefix^suffix, PS3.5 §6.2) as a HumanName."""
    parts = [p.strip() for p in group.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    if not any((family, given, middle, prefix, suffix)):
        return None
    name: dict[str, Any] = {}
    if use:
        name["use"] = use
    name["text"] = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [g for g in (given, middle) if g]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    if family and not (prefix or suffix) and _ideographic(family + given + middle):
        name["text"] = family + given + middle  # 张三: no space between family and given
    return name


def endpoint_wado(address: str) -> dict[str, Any]:
    """The DICOMweb base of this server (R4 endpoint-example-wadors)."""
    return {
        "resourceType": "Endpoint",
        "id": WADO_ENDPOINT,
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "name": "DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def endpoint_iid(address: str) -> dict[str, Any]:
    """IHE Invoke Image Display (IID): `{address}/IHEInvokeImageDisplay?requestType=STUDY&
    studyUID=...` opens the study in the configured web viewer."""
    return {
        "resourceType": "Endpoint",
        "id": IID_ENDPOINT,
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPE, "code": "ihe-iid"},
        "name": "Web viewer (IHE IID)",
        "payloadType": [{"text": "IHE IID"}],
        "address": address,
    }


def fhir_date(value: str) -> str | None:
    """DA (YYYYMMDD) -> FHIR date; None for anything else."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return None
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def date_time(date: str | None, time: str | None, tz: str | None) -> str | None:
    """DA + TM -> FHIR dateTime. FHIR needs a zone with a time: the study's Timezone Offset
    From UTC (0008,0201), else this server's local zone (modalities send local time)."""
    day = fhir_date(date or "")
    if day is None:
        return None
    t = (time or "").strip().replace(":", "")
    whole, _, fraction = t.partition(".")
    if len(whole) < 4 or not whole.isdigit():
        return day
    hh, mm, ss = whole[:2], whole[2:4], whole[4:6] or "00"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 60:
        return day
    zone = _zone(tz) or datetime.now().astimezone().strftime("%z")
    fraction = fraction[:6] if fraction.isdigit() else ""
    return f"{day}T{hh}:{mm}:{ss}{'.' + fraction if fraction else ''}{zone[:3]}:{zone[3:]}"


def _zone(tz: str | None) -> str | None:
    if tz and len(tz) == 5 and tz[0] in "+-" and tz[1:].isdigit():
        return tz
    return None


def _tz(attrs: dict[str, Any]) -> str | None:
    return _first(attrs.get("00080201"))


def _first(element: dict[str, Any] | None) -> Any:
    values = (element or {}).get("Value") or []
    return values[0] if values else None


def _name(element: dict[str, Any] | None) -> str:
    value = _first(element)
    if isinstance(value, dict):
        for group in ("Ideographic", "Alphabetic"):
            name = human_name(value.get(group, ""))
            if name:
                return str(name["text"])
    return ""


def _ideographic(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)
