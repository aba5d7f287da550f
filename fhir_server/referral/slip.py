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

The PDF embeds (subsets) WenQuanYi Micro Hei from `fhir_server/fonts/` (Apache-2.0), so Chinese
text renders on machines without CJK fonts.
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import segno

from ..errors import error
from ..interactions import read as reads
from ..operations.registry import Call, Operations, Outcome
from ..storage.sqlite import Session
from ..terminology import Terminology
from .codes import (
    BUSINESS_SYSTEM,
    DIRECTION_URL,
    HEALTH_RECORD_NUMBER,
    ORG_LEVEL_URL,
    REFERRAL_NUMBER,
)
from .codes import SLIP_SECTION_SYSTEM as SLIP_SECTION
from .codes import TYPE_SYSTEM as REFERRAL_TYPE

FONT_DIR = Path(__file__).resolve().parent / "fonts"
FONT_FILE = FONT_DIR / "wqy-microhei.ttc"
FONT_NAME = "WenQuanYiMicroHei"
OPERATIONS = Operations()
operation = OPERATIONS.operation

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


@operation("$referral-slip", "instance", types=("ServiceRequest",), methods=("GET", "POST"))
def referral_slip(call: Call) -> Outcome:
    """Render the slip of one ServiceRequest; `format` = html (default) or pdf."""
    fmt = str(call.value("format") or "html").lower()
    if fmt not in ("html", "pdf", "text/html", "application/pdf"):
        raise error(400, "invalid", f"format must be 'html' or 'pdf', got '{fmt}'", "format")
    assert call.rid is not None
    slip = build(call.services.store.reader(), call.services.terminology, call.rid)
    if fmt.endswith("pdf"):
        return Outcome(content=render_pdf(slip), media_type="application/pdf")
    return Outcome(content=render_html(slip).encode(), media_type="text/html; charset=utf-8")


# --- gathering ----------------------------------------------------------------------------


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


def referral_task(session: Session, sr_id: str) -> dict[str, Any] | None:
    """The newest non-deleted Task whose focus is the ServiceRequest (a fulfil Task first)."""
    rows = session.query(
        "SELECT r.json FROM idx_reference x JOIN resource r ON r.rid = x.rid "
        "WHERE x.type = 'Task' AND x.param = 'focus' AND x.target_type = 'ServiceRequest' "
        "AND x.target_id = ? AND r.deleted = 0 ORDER BY r.last_updated DESC",
        (sr_id,),
    )
    tasks = [_load(row[0]) for row in rows]
    tasks = [t for t in tasks if not t.get("partOf")]
    for task in tasks:
        if any(c.get("code") == "fulfill" for c in _codings(task.get("code"))):
            return task
    return tasks[0] if tasks else None


def build(session: Session, terminology: Terminology, sr_id: str) -> Slip:
    """Collect the slip's contents from the ServiceRequest and what it references."""
    sr = _load(reads.read(session, "ServiceRequest", sr_id).json)
    task = referral_task(session, sr_id)
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
    return Slip(
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


# --- rendering ----------------------------------------------------------------------------


def qr_svg(payload: str) -> str:
    """An inline SVG QR code (segno, error correction M)."""
    qr = segno.make(payload, error="m", micro=False)
    svg = qr.svg_inline(scale=3, border=2, omitsize=False)
    return str(svg)


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


def render_html(slip: Slip) -> str:
    """A self-contained, print-ready A4 page (inline CSS and SVG, no external assets)."""
    e = html.escape

    def grid(rows: list[tuple[str, str]]) -> str:
        cells = "".join(
            f'<div class="f"><span class="k">{e(k)}：</span>{e(v) or "&#160;"}</div>'
            for k, v in rows
        )
        return f'<div class="grid">{cells}</div>'

    meta = _meta_rows(slip)
    sections = [(_impression_title(slip), [slip.impression] if slip.impression else [])]
    sections += [(title, slip.sections.get(code, [])) for code, title in SECTIONS]
    body = "".join(
        f"<section><h3>{e(title)}</h3>"
        + ("".join(f"<p>{e(t)}</p>" for t in texts) if texts else '<p class="none">无</p>')
        + "</section>"
        for title, texts in sections
    )
    stub = grid(_stub_rows(slip))
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>{e(slip.title)} {e(slip.number)}</title>
<style>
@page {{ size: A4; margin: 15mm; }}
body {{ font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", "PingFang SC",
  "Microsoft YaHei", sans-serif; font-size: 11pt; color: #000; max-width: 180mm; margin: auto; }}
h1 {{ text-align: center; font-size: 18pt; margin: 4mm 0 1mm; }}
h2 {{ text-align: center; font-size: 13pt; margin: 0 0 3mm; font-weight: normal; }}
h3 {{ font-size: 11pt; margin: 3mm 0 1mm; border-bottom: 1px solid #999; }}
.stub {{ border: 1px dashed #666; padding: 2mm 3mm; margin-bottom: 3mm; }}
.cut {{ text-align: center; color: #666; font-size: 9pt; margin-bottom: 3mm; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 1mm 4mm; }}
.k {{ color: #333; }}
.head {{ display: flex; justify-content: space-between; align-items: flex-start; }}
.qr {{ text-align: center; font-size: 8pt; }}
p {{ margin: 0.5mm 0; white-space: pre-wrap; }} .none {{ color: #777; }}
.sign {{ margin-top: 8mm; display: grid; grid-template-columns: 1fr 1fr 1fr; }}
</style></head>
<body class="referral-slip direction-{e(slip.direction)}">
<div class="stub"><strong>存根</strong>{stub}</div>
<div class="cut">- - - - - - - - - - - - 沿此线剪开 - - - - - - - - - - - -</div>
<div class="head">
<div><h1>{e(slip.title)}</h1><h2>{e(slip.subtitle)}</h2>{grid(meta)}</div>
<div class="qr" data-qr="{e(slip.qr_payload)}">{qr_svg(slip.qr_payload)}<br>
报到扫码 {e(slip.qr_payload)}</div>
</div>
<section><h3>患者信息</h3>{grid(_rows(slip))}</section>
<section><h3>转出 / 转入</h3>{grid(_parties(slip))}</section>
{body}
<div class="sign"><div>转诊医生（签字）：</div><div>联系电话：{e(slip.source.phone)}</div>
<div>日期：{e(slip.authored)}</div></div>
</body></html>
"""


@cache
def register_font() -> str:
    """Register the vendored CJK TrueType font with reportlab once; its name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont(FONT_NAME, str(FONT_FILE), subfontIndex=0))
    return FONT_NAME


def render_pdf(slip: Slip) -> bytes:
    """An A4 PDF with the font embedded (subset) and the QR code drawn as vector squares."""
    from reportlab.graphics.shapes import Drawing, Rect
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = register_font()
    e = html.escape
    base = ParagraphStyle("base", fontName=font, fontSize=10, leading=14, wordWrap="CJK")
    small = ParagraphStyle("small", parent=base, fontSize=8, leading=10)
    title = ParagraphStyle("title", parent=base, fontSize=17, leading=22, alignment=1)
    subtitle = ParagraphStyle("subtitle", parent=base, fontSize=12, leading=16, alignment=1)
    heading = ParagraphStyle(
        "heading", parent=base, fontSize=11, leading=15, spaceBefore=5, textColor=colors.black
    )

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(e(text).replace("\n", "<br/>"), style)

    def grid(rows: list[tuple[str, str]], columns: int = 3) -> Table:
        cells = [p(f"{k}：{v}") for k, v in rows]
        while len(cells) % columns:
            cells.append(p(""))
        data = [cells[i : i + columns] for i in range(0, len(cells), columns)]
        table = Table(data, colWidths=[180 * mm / columns] * columns)
        table.setStyle(
            TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 2)])
        )
        return table

    qr = segno.make(slip.qr_payload, error="m", micro=False)
    matrix = [list(row) for row in qr.matrix]
    module = 1.0 * mm
    size = (len(matrix) + 4) * module
    drawing = Drawing(size, size)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                drawing.add(
                    Rect(
                        (x + 2) * module,
                        size - (y + 3) * module,
                        module,
                        module,
                        fillColor=colors.black,
                        strokeColor=None,
                    )
                )
    meta = _meta_rows(slip)
    head = Table(
        [
            [
                [p(slip.title, title), p(slip.subtitle, subtitle), grid(meta, 2)],
                [drawing, p(f"报到扫码 {slip.qr_payload}", small)],
            ]
        ],
        colWidths=[180 * mm - size - 4 * mm, size + 4 * mm],
    )
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    stub = Table(
        [
            [
                [
                    p("存根", heading),
                    grid(_stub_rows(slip)),
                ]
            ]
        ],
        colWidths=[180 * mm],
    )
    stub.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.5, colors.grey)]))
    story: list[Any] = [
        stub,
        p("- - - - - - - - 沿此线剪开 - - - - - - - -", small),
        Spacer(1, 3 * mm),
        head,
        p("患者信息", heading),
        grid(_rows(slip)),
        p("转出 / 转入", heading),
        grid(_parties(slip)),
    ]
    sections = [(_impression_title(slip), [slip.impression] if slip.impression else [])]
    sections += [(t, slip.sections.get(code, [])) for code, t in SECTIONS]
    for section_title, texts in sections:
        story.append(p(section_title, heading))
        story.extend([p(t) for t in texts] or [p("无")])
    story += [
        Spacer(1, 8 * mm),
        grid([("转诊医生（签字）", ""), ("联系电话", slip.source.phone), ("日期", slip.authored)]),
    ]
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=f"{slip.title} {slip.number}",
        author="fhir-server",
        subject=slip.qr_payload,
    )
    doc.build(story)
    return out.getvalue()
