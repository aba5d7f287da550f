"""ServiceRequest/{id}/$referral-slip: the printable 双向转诊单 (上转单/下转单) as HTML or PDF.

Layout after the 国家基本公共卫生服务规范（第三版）双向转诊单 (存根 + 转出单; 回转单 for 下转),
filled from the referral ServiceRequest (yl-referral-request), its referral Task (yl-referral-task,
found by `Task.focus`) and the resources they reference (design: referral-model.md §3.3).

Where each section comes from:

* 初步印象 (下转: 诊断结果): `reasonCode`, then the codes of `reasonReference` Conditions.
* 主要现病史（转出原因）, 主要既往史, 治疗经过, 主要检查结果, 下一步治疗方案及康复建议:
  1. the sections of a Composition in `supportingInfo` whose `section.code` is from
     `yl-referral-slip-section` (present-illness, past-history, treatment, results, plan);
  2. `note` entries that start with the section's title and a colon (``主要既往史：…``); a note
     without such a label belongs to 主要现病史（转出原因）;
  3. other `supportingInfo`: Condition → 主要既往史, Procedure/MedicationStatement/
     MedicationRequest → 治疗经过, Observation/DiagnosticReport → 主要检查结果;
  4. `patientInstruction` → 下一步治疗方案及康复建议.
* 档案编号: the Patient identifier with system `…/sid/health-record-number` (居民健康档案编号),
  else one typed MR, else the first identifier.
* The QR code carries `Task/{id}` of the referral Task for `$check-in` (the ServiceRequest
  reference while no Task exists); 有效期 is the Task's `restriction.period.end`.

The PDF (pdf.py) embeds (subsets) WenQuanYi Micro Hei from `fhir_server/referral/fonts/`
(Apache-2.0), so Chinese
text renders on machines without CJK fonts.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson

from ...context import RequestContext
from ...interactions import read as reads
from ...interactions.search import find
from ...services import Services
from ...storage.contract import Session
from ...terminology import Terminology
from ..codes import (
    BUSINESS_SYSTEM,
    DIRECTION_URL,
    HEALTH_RECORD_NUMBER,
    ORG_LEVEL_URL,
    REFERRAL_NUMBER,
)
from ..codes import SLIP_SECTION_SYSTEM as SLIP_SECTION
from ..codes import TYPE_SYSTEM as REFERRAL_TYPE

#: printed titles by direction (公卫规范: 转出单 for 上转, 回转单 for 下转)
TITLES = {
    "up": ("双向转诊单（上转单）", "转出单"),
    "down": ("双向转诊单（下转单）", "回转单"),
    "lateral": ("双向转诊单（平转单）", "转出单"),
}


PRIORITY_NAMES = {"routine": "普通", "urgent": "紧急", "asap": "尽快", "stat": "急诊"}


GENDER_NAMES = {"male": "男", "female": "女", "other": "其他", "unknown": "未知"}


#: narrative sections: (slip-section code, printed title)
SECTIONS = (
    ("present-illness", "主要现病史（转出原因）"),
    ("past-history", "主要既往史"),
    ("treatment", "治疗经过"),
    ("results", "主要检查结果"),
    ("plan", "下一步治疗方案及康复建议"),
)


_BY_TYPE = {
    "Condition": "past-history",
    "Procedure": "treatment",
    "MedicationStatement": "treatment",
    "MedicationRequest": "treatment",
    "Observation": "results",
    "DiagnosticReport": "results",
}


_TAGS = re.compile(r"<[^>]+>")


_LABEL = re.compile(r"^\s*([^:：\n]{1,20})[:：]\s*(.*)$", re.S)


@dataclass
class Party:
    """An organization with its department and doctor, as printed."""

    organization: str = ""
    level: str = ""
    department: str = ""
    doctor: str = ""
    phone: str = ""


@dataclass
class Slip:
    """Everything printed on one slip, as plain strings."""

    direction: str
    title: str
    subtitle: str
    number: str
    referral_type: str
    priority: str
    authored: str
    patient_name: str
    gender: str
    age: str
    record_number: str
    address: str
    phone: str
    source: Party
    target: Party
    impression: str
    sections: dict[str, list[str]]
    qr_payload: str
    valid_until: str
    status: str
    appointment: str = ""
    bed: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _load(stored_json: bytes | None) -> dict[str, Any]:
    return orjson.loads(stored_json) if stored_json else {}


def _resolve(session: Session, ref: Any) -> dict[str, Any] | None:
    """The current resource a relative reference `Type/id` points at, or None."""
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or target.count("/") != 1:
        return None
    rtype, rid = target.split("/")
    found = session.current(rtype, rid)
    if found is None or found[1].deleted:
        return None
    return _load(found[1].json)


def referral_task(services: Services, session: Session, sr_id: str) -> dict[str, Any] | None:
    """The newest non-deleted Task whose focus is the ServiceRequest (a fulfil Task first)."""
    ctx = RequestContext(base_url="")
    found = find(session, services, ctx, "Task", f"focus=ServiceRequest/{sr_id}", limit=None)
    stored = [s[1] for t, i in found if (s := session.current(t, i)) is not None]
    stored.sort(key=lambda s: s.last_updated, reverse=True)
    tasks = [_load(s.json) for s in stored]
    tasks = [t for t in tasks if not t.get("partOf")]
    for task in tasks:
        if any(c.get("code") == "fulfill" for c in _codings(task.get("code"))):
            return task
    return tasks[0] if tasks else None


#: What one slip prints at most: a field must fit its table cell (a longer one made reportlab
#: fail with LayoutError) and a section its pages (thousands of lines took minutes to lay out).
FIELD_CHARS = 200
SECTION_LINES = 300
LINE_CHARS = 1000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(texts: list[str]) -> list[str]:
    """A section's texts cut to SECTION_LINES lines of at most LINE_CHARS characters."""
    lines = [_clip(line, LINE_CHARS) for t in texts for line in t.splitlines()]
    if len(lines) > SECTION_LINES:
        rest = len(lines) - SECTION_LINES + 1
        lines = [*lines[: SECTION_LINES - 1], f"……（另有 {rest} 行未打印）"]
    return lines


def _bound(slip: Slip) -> Slip:
    """Every printed field clipped to FIELD_CHARS, every section to its bounds."""
    for obj in (slip, slip.source, slip.target):
        for name, value in vars(obj).items():
            if isinstance(value, str) and name != "impression":
                setattr(obj, name, _clip(value, FIELD_CHARS))
    slip.impression = "\n".join(_bounded([slip.impression]))
    slip.sections = {code: _bounded(texts) for code, texts in slip.sections.items()}
    return slip


def build(services: Services, session: Session, sr_id: str) -> Slip:
    """Collect the slip's contents from the ServiceRequest and what it references, bounded
    so that any content prints in linear time."""
    sr = _load(reads.read(session, "ServiceRequest", sr_id).json)
    terminology = services.terminology
    task = referral_task(services, session, sr_id)
    direction = _direction(sr) or (_direction(task) if task else None) or "up"
    title, subtitle = TITLES.get(direction, TITLES["up"])
    patient = _resolve(session, sr.get("subject")) or {}
    source = _party_of(session, sr.get("requester"))
    target = Party()
    for performer in sr.get("performer") or []:
        party = _party_of(session, performer)
        target = _merge(target, party)
    if task is not None:  # the booked doctor, else the Task's owner (after $claim)
        for candidate in (*_appointment_actors(session, task), task.get("owner")):
            target = _merge(target, _party_of(session, candidate))
    if not target.department:
        target.department = _text(sr.get("performerType"))
    sections = _sections(session, sr)
    appointment, bed = _task_outputs(session, task) if task else ("", "")
    authored = str(sr.get("authoredOn") or "")
    slip = Slip(
        direction=direction,
        title=title,
        subtitle=subtitle,
        number=_identifier(sr, REFERRAL_NUMBER) or sr_id,
        referral_type=_referral_type(terminology, sr),
        priority=PRIORITY_NAMES.get(str(sr.get("priority") or ""), str(sr.get("priority") or "")),
        authored=authored[:10],
        patient_name=_name(patient),
        gender=GENDER_NAMES.get(str(patient.get("gender") or ""), ""),
        age=_age(patient.get("birthDate"), authored),
        record_number=_record_number(patient),
        address=_address(patient),
        phone=_phone(patient),
        source=source,
        target=target,
        impression=_impression(session, sr),
        sections=sections,
        qr_payload=f"Task/{task['id']}" if task else f"ServiceRequest/{sr_id}",
        valid_until=_valid_until(task),
        status=_business_status(terminology, task) if task else str(sr.get("status") or ""),
        appointment=appointment,
        bed=bed,
    )
    return _bound(slip)


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _text(concept: Any) -> str:
    """A CodeableConcept as printed: its text, else the first display, else the first code."""
    if isinstance(concept, list):
        return "；".join(t for t in (_text(c) for c in concept) if t)
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in _codings(concept):
        if c.get("display"):
            return str(c["display"])
    codes = [str(c["code"]) for c in _codings(concept) if c.get("code")]
    return codes[0] if codes else ""


def _direction(resource: dict[str, Any] | None) -> str | None:
    for ext in (resource or {}).get("extension") or []:
        if ext.get("url") == DIRECTION_URL:
            code = (ext.get("valueCoding") or {}).get("code")
            if code in TITLES:
                return str(code)
    return None


def _identifier(resource: dict[str, Any], system: str) -> str:
    for ident in resource.get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return ""


def _referral_type(terminology: Terminology, sr: dict[str, Any]) -> str:
    for concept in sr.get("category") or []:
        for c in _codings(concept):
            if c.get("system") == REFERRAL_TYPE:
                code = str(c.get("code") or "")
                name = terminology.display(REFERRAL_TYPE, code, "zh-CN")
                return name or str(c.get("display") or code)
    return ""


def _name(resource: dict[str, Any]) -> str:
    names = resource.get("name")
    if isinstance(names, str):  # Organization, Location, HealthcareService
        return names
    for name in names or []:
        if name.get("text"):
            return str(name["text"])
        family = str(name.get("family") or "")
        given = "".join(name.get("given") or [])
        if family or given:
            return family + given  # Chinese order: family name first, no space
    return ""


def _age(birth: Any, at: str) -> str:
    if not isinstance(birth, str) or len(birth) < 4:
        return ""
    try:
        ref = date.fromisoformat(at[:10]) if len(at) >= 10 else date.today()
        born = date.fromisoformat(birth[:10]) if len(birth) >= 10 else date(int(birth[:4]), 7, 1)
    except ValueError:
        return ""
    years = ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))
    return f"{years}岁"


def _record_number(patient: dict[str, Any]) -> str:
    found = _identifier(patient, HEALTH_RECORD_NUMBER)
    if found:
        return found
    idents = patient.get("identifier") or []
    for ident in idents:
        if any(c.get("code") == "MR" for c in _codings(ident.get("type"))) and ident.get("value"):
            return str(ident["value"])
    return str(idents[0].get("value") or "") if idents else ""


def _address(resource: dict[str, Any]) -> str:
    for addr in resource.get("address") or []:
        if addr.get("text"):
            return str(addr["text"])
        parts = [addr.get(k) for k in ("state", "city", "district")] + list(addr.get("line") or [])
        joined = "".join(str(p) for p in parts if p)
        if joined:
            return joined
    return ""


def _phone(resource: dict[str, Any]) -> str:
    for telecom in resource.get("telecom") or []:
        if telecom.get("system") in ("phone", "sms", None) and telecom.get("value"):
            return str(telecom["value"])
    return ""


def _level(org: dict[str, Any]) -> str:
    for ext in org.get("extension") or []:
        if ext.get("url") == ORG_LEVEL_URL:
            coding = ext.get("valueCoding") or {}
            return str(coding.get("display") or coding.get("code") or "")
    return ""


def _party_of(session: Session, ref: Any) -> Party:
    """Organization / department / doctor from a reference to an Organization, a
    PractitionerRole, a Practitioner or a HealthcareService."""
    resource = _resolve(session, ref)
    display = str(ref.get("display") or "") if isinstance(ref, dict) else ""
    if resource is None:
        return Party(doctor=display) if "Practitioner" in str(ref) else Party(display)
    kind = resource.get("resourceType")
    if kind == "Organization":
        return Party(_name(resource), _level(resource), phone=_phone(resource))
    if kind == "Practitioner":
        return Party(doctor=_name(resource), phone=_phone(resource))
    org = _resolve(session, resource.get("organization") or resource.get("providedBy")) or {}
    party = Party(_name(org), _level(org), phone=_phone(resource) or _phone(org))
    if kind == "PractitionerRole":
        practitioner = _resolve(session, resource.get("practitioner")) or {}
        party.doctor = _name(practitioner) or str(
            (resource.get("practitioner") or {}).get("display") or ""
        )
        party.department = _text(resource.get("specialty")) or _department(session, resource)
    elif kind == "HealthcareService":
        party.department = _name(resource)
    return party


def _department(session: Session, role: dict[str, Any]) -> str:
    for loc in role.get("location") or []:
        found = _resolve(session, loc)
        if found:
            return _name(found)
    return ""


def _merge(a: Party, b: Party) -> Party:
    return Party(
        a.organization or b.organization,
        a.level or b.level,
        a.department or b.department,
        a.doctor or b.doctor,
        a.phone or b.phone,
    )


def _impression(session: Session, sr: dict[str, Any]) -> str:
    parts = [_text(c) for c in sr.get("reasonCode") or []]
    for ref in sr.get("reasonReference") or []:
        found = _resolve(session, ref)
        parts.append(_text(found.get("code")) if found else str(ref.get("display") or ""))
    return "；".join(p for p in parts if p)


def _sections(session: Session, sr: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {code: [] for code, _ in SECTIONS}
    titles = {title.split("（")[0]: code for code, title in SECTIONS}
    titles.update({title: code for code, title in SECTIONS})
    for ref in sr.get("supportingInfo") or []:
        found = _resolve(session, ref)
        if found is None:
            if ref.get("display"):
                out["results"].append(str(ref["display"]))
            continue
        kind = found.get("resourceType")
        if kind == "Composition":
            for section in found.get("section") or []:
                code = next(
                    (
                        c.get("code")
                        for c in _codings(section.get("code"))
                        if c.get("system") == SLIP_SECTION
                    ),
                    None,
                )
                text = _narrative(section.get("text"))
                if code in out and text:
                    out[str(code)].append(text)
        elif kind in _BY_TYPE:
            line = _summary(found)
            if line:
                out[_BY_TYPE[kind]].append(line)
    for note in sr.get("note") or []:
        text = str(note.get("text") or "").strip()
        if not text:
            continue
        labelled = _LABEL.match(text)
        if labelled and labelled.group(1).strip() in titles:
            out[titles[labelled.group(1).strip()]].append(labelled.group(2).strip())
        else:
            out["present-illness"].append(text)
    if sr.get("patientInstruction"):
        out["plan"].append(str(sr["patientInstruction"]))
    return out


def _narrative(text: Any) -> str:
    div = text.get("div") if isinstance(text, dict) else None
    return html.unescape(_TAGS.sub("", div)).strip() if isinstance(div, str) else ""


def _summary(resource: dict[str, Any]) -> str:
    """One printed line for a supporting resource: its code and value or conclusion."""
    name = _text(resource.get("code"))
    if resource.get("resourceType") == "MedicationStatement":
        name = _text(resource.get("medicationCodeableConcept"))
    value = ""
    if "valueQuantity" in resource:
        q = resource["valueQuantity"]
        value = f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
    elif "valueString" in resource:
        value = str(resource["valueString"])
    elif "valueCodeableConcept" in resource:
        value = _text(resource["valueCodeableConcept"])
    elif resource.get("conclusion"):
        value = str(resource["conclusion"])
    when = str(
        resource.get("effectiveDateTime")
        or resource.get("onsetDateTime")
        or resource.get("performedDateTime")
        or ""
    )[:10]
    line = f"{name}：{value}" if value else name
    return f"{line}（{when}）" if when and line else line


def _stub_rows(slip: Slip) -> list[tuple[str, str]]:
    """The 存根 (stub) the sending hospital keeps, printed the same in HTML and PDF."""
    return [
        ("转诊单号", slip.number),
        ("患者姓名", slip.patient_name),
        ("转入机构", slip.target.organization),
        ("转入科室", slip.target.department),
        ("转出医生", slip.source.doctor),
        ("日期", slip.authored),
    ]


def _meta_rows(slip: Slip) -> list[tuple[str, str]]:
    """The slip's header fields, printed the same in HTML and PDF."""
    rows = [
        ("转诊单号", slip.number),
        ("转诊类型", slip.referral_type),
        ("优先级", slip.priority),
        ("开单日期", slip.authored),
        ("有效期至", slip.valid_until or "—"),
        ("状态", slip.status),
    ]
    if slip.appointment:
        rows.append(("预约就诊时间", slip.appointment))
    if slip.bed:
        rows.append(("床位", slip.bed))
    return rows


def _valid_until(task: dict[str, Any] | None) -> str:
    end = (((task or {}).get("restriction") or {}).get("period") or {}).get("end")
    return str(end)[:10] if end else ""


def _business_status(terminology: Terminology, task: dict[str, Any]) -> str:
    concept = task.get("businessStatus")
    for c in _codings(concept):
        name = terminology.display(BUSINESS_SYSTEM, str(c.get("code")), "zh-CN")
        if c.get("system") == BUSINESS_SYSTEM and name:
            return name
    return _text(concept) or str(task.get("status") or "")


def _task_outputs(session: Session, task: dict[str, Any]) -> tuple[str, str]:
    """The booked appointment time and the assigned bed (with planned admission), if any."""
    appointment = bed = planned = ""
    for output in task.get("output") or []:
        codes = {str(c.get("code")) for c in _codings(output.get("type"))}
        if "appointment" in codes:
            found = _resolve(session, output.get("valueReference"))
            if found and found.get("start"):
                appointment = _when(str(found["start"]))
        elif "bed" in codes:
            found = _resolve(session, output.get("valueReference"))
            bed = (
                _name(found)
                if found
                else str((output.get("valueReference") or {}).get("display") or "")
            )
        elif "plannedAdmission" in codes or "planned-admission" in codes:
            planned = _when(str(output.get("valueDateTime") or ""))
    if bed and planned:
        bed = f"{bed}（计划入院 {planned}）"
    return appointment, bed


def _appointment_actors(session: Session, task: dict[str, Any]) -> list[Any]:
    """The PractitionerRoles taking part in the referral's booked Appointment."""
    for output in task.get("output") or []:
        if any(c.get("code") == "appointment" for c in _codings(output.get("type"))):
            found = _resolve(session, output.get("valueReference")) or {}
            return [
                p.get("actor")
                for p in found.get("participant") or []
                if "PractitionerRole/" in str((p.get("actor") or {}).get("reference"))
            ]
    return []


def _when(value: str) -> str:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value[:16].replace("T", " ")


def _rows(slip: Slip) -> list[tuple[str, str]]:
    return [
        ("姓名", slip.patient_name),
        ("性别", slip.gender),
        ("年龄", slip.age),
        ("档案编号", slip.record_number),
        ("家庭住址", slip.address),
        ("联系电话", slip.phone),
    ]


def _parties(slip: Slip) -> list[tuple[str, str]]:
    src, dst = slip.source, slip.target
    return [
        (
            "转出机构",
            " ".join(x for x in (src.organization, f"（{src.level}）" if src.level else "") if x),
        ),
        ("转出医生", " ".join(x for x in (src.doctor, src.phone) if x)),
        (
            "转入机构",
            " ".join(x for x in (dst.organization, f"（{dst.level}）" if dst.level else "") if x),
        ),
        ("转入科室", dst.department),
        ("接诊医生", dst.doctor),
    ]


def _impression_title(slip: Slip) -> str:
    return "诊断结果（初步印象）" if slip.direction == "down" else "初步印象"

