"""What the printed consultation opinion (会诊意见单) shows, gathered from the Composition and
the resources it names: patient, inviting and invited doctors and hospitals, the four
sections, status and signature."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import error
from ...model import literal
from ...storage.contract import Session

Json = dict[str, Any]


@dataclass
class Opinion:
    title: str
    status: str
    date: str
    patient: list[tuple[str, str]]
    parties: list[tuple[str, str]]
    sections: list[tuple[str, str]] = field(default_factory=list)
    signed: str = ""


def _load(session: Session, reference: Any) -> Json | None:
    value = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(value, str) or "/" not in value:
        return None
    rtype, rid = value.split("/")[-2:]
    current = session.current(rtype, rid)
    if current is None or current[1].deleted or current[1].json is None:
        return None
    found: Json = literal.loads(current[1].json)
    return found


def _name(resource: Json | None) -> str:
    if not resource:
        return ""
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    for n in resource.get("name") or []:
        if n.get("text"):
            return str(n["text"])
        return "".join([n.get("family", ""), *n.get("given", [])])
    return ""


def _person(session: Session, reference: Any) -> tuple[str, str]:
    """(doctor, hospital) of a PractitionerRole (or Practitioner) reference."""
    role = _load(session, reference)
    if role is None:
        return ((reference or {}).get("display", ""), "")
    if role["resourceType"] == "PractitionerRole":
        return (_name(_load(session, role.get("practitioner"))),
                _name(_load(session, role.get("organization"))))  # fmt: skip
    return (_name(role), "")


def _text(section: Json) -> str:
    div = (section.get("text") or {}).get("div") or ""
    lines = re.sub(r"</p>\s*<p>", "\n", div)
    return literal_unescape(re.sub(r"<[^>]+>", "", lines)).strip()


def literal_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def build(session: Session, composition_id: str) -> Opinion:
    composition = _load(session, {"reference": f"Composition/{composition_id}"})
    if composition is None:
        raise error(404, "not-found", f"Composition/{composition_id} is not known")
    patient = _load(session, composition.get("subject")) or {}
    request = next((_load(session, d) for e in composition.get("event") or []
                    for d in e.get("detail") or []
                    if str(d.get("reference", "")).startswith("ServiceRequest/")),
                   None)  # fmt: skip
    inviting = _person(session, (request or {}).get("requester"))
    expert = _person(session, (composition.get("author") or [None])[0])
    gender = {"male": "男", "female": "女"}.get(patient.get("gender", ""), "")
    reason = "；".join(r.get("text", "") for r in (request or {}).get("reasonCode") or [])
    opinion = Opinion(
        title="远程会诊意见单",
        status="已签署" if composition.get("status") == "final" else "草稿（未签署）",
        date=str(composition.get("date", ""))[:16].replace("T", " "),
        patient=[("姓名", _name(patient)), ("性别", gender),
                 ("出生日期", patient.get("birthDate", "")), ("会诊目的", reason)],
        parties=[("邀请医生", inviting[0]), ("邀请医院", inviting[1]),
                 ("会诊专家", expert[0]), ("专家医院", expert[1])],
    )  # fmt: skip
    for section in composition.get("section") or []:
        opinion.sections.append((str(section.get("title", "")), _text(section)))
    for attester in composition.get("attester") or []:
        who = _person(session, attester.get("party"))[0]
        opinion.signed = f"{who} {str(attester.get('time', ''))[:16].replace('T', ' ')}"
    return opinion
