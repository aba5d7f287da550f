"""The demo's base resources (organizations, people, patients, schedules and slots) and its
referral plan; ids are fixed, everything random comes from one seeded generator."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from ...model.resident_id import check_character
from ...terminology import Terminology
from .. import codes
from .data import (
    CONSORTIUM,
    CS,
    CST,
    DOWN_CASES,
    GIVEN,
    HOSPITALS,
    SD,
    SID,
    STATES,
    STREETS,
    SURNAMES,
    UP_CASES,
)

TASK_PROFILE = codes.TASK_PROFILE
SR_PROFILE = codes.REQUEST_PROFILE


def ref(kind: str, rid: str, display: str | None = None) -> dict[str, Any]:
    """A literal Reference, `kind/rid`."""
    out: dict[str, Any] = {"reference": f"{kind}/{rid}"}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    """A Coding; display only when given."""
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def instant(moment: datetime) -> str:
    """An instant in China Standard Time, to the second."""
    return moment.astimezone(CST).isoformat(timespec="seconds")


def _name(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(SURNAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
    return family, given


class Builder:
    """Builds the base resources; ids are fixed, content comes from the seeded generator."""

    def __init__(self, today: date, seed: int, terminology: Terminology) -> None:
        self.today = today
        self.terminology = terminology
        self.rng = random.Random(seed)
        self.resources: list[dict[str, Any]] = []
        self.coordinators: dict[str, str] = {}  # org id -> coordinator PractitionerRole id
        self.doctors: dict[str, list[tuple[str, str]]] = {}  # org id -> [(role id, dept)]
        self.slots: dict[str, list[str]] = {}  # org id -> free Slot ids, soonest first
        self.patients: list[str] = []
        self.beds: dict[str, list[str]] = {}

    def ours(self, codesystem: str, code: str) -> dict[str, str]:
        """A Coding of one of our code systems, displayed by its zh-CN designation
        (terminology/ is the one source of what our codes mean)."""
        system = f"{CS}/{codesystem}"
        return coding(system, code, self.terminology.display(system, code, "zh-CN") or code)

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def build(self) -> None:
        self.organizations()
        self.people()
        self.patient_list()
        self.schedules()

    def organizations(self) -> None:
        cid, cname = CONSORTIUM
        self.add(
            {
                "resourceType": "Organization",
                "id": cid,
                "active": True,
                "name": cname,
                "type": [
                    {
                        "coding": [
                            coding(
                                "http://terminology.hl7.org/CodeSystem/organization-type",
                                "other",
                                "Other",
                            )
                        ],
                        "text": "医联体",
                    }
                ],
                "identifier": [{"system": f"{SID}/consortium", "value": "HZ-YLT-001"}],
            }
        )
        for n, (oid, name, level, district, departments) in enumerate(HOSPITALS):
            self.add(
                {
                    "resourceType": "Organization",
                    "id": oid,
                    "active": True,
                    "name": name,
                    "identifier": [
                        {"system": f"{SID}/uscc", "value": f"12330100{470000 + n * 137}X"}
                    ],
                    "type": [
                        {
                            "coding": [
                                coding(
                                    "http://terminology.hl7.org/CodeSystem/organization-type",
                                    "prov",
                                    "Healthcare Provider",
                                )
                            ],
                            "text": "社区卫生服务中心" if level == "chc" else "医院",
                        }
                    ],
                    "extension": [
                        {
                            "url": f"{SD}/yl-org-level",
                            "valueCoding": self.ours("yl-org-level", level),
                        }
                    ],
                    "telecom": [{"system": "phone", "value": f"0571-8{n + 1}{n + 2}{n + 3}0000"}],
                    "address": [
                        {
                            "text": f"浙江省杭州市{district}{STREETS[n]}{(n + 1) * 11}号",
                            "city": "杭州市",
                            "district": district,
                            "state": "浙江省",
                        }
                    ],
                    "partOf": ref("Organization", cid),
                }
            )
            role = "consortium-lead" if level == "3A" else "consortium-member"
            self.add(
                {
                    "resourceType": "OrganizationAffiliation",
                    "id": f"aff-{oid}",
                    "active": True,
                    "organization": ref("Organization", cid),
                    "participatingOrganization": ref("Organization", oid, name),
                    "code": [{"coding": [coding(f"{CS}/yl-affiliation-role", role)]}],
                    "period": {"start": "2023-01-01"},
                }
            )
            if level != "chc":
                self.beds[oid] = []
                for b in range(1, 4):
                    bid = f"bed-{oid}-{b}"
                    self.add(
                        {
                            "resourceType": "Location",
                            "id": bid,
                            "status": "active",
                            "name": f"{departments[0]}病区 {10 + b}床",
                            "physicalType": {
                                "coding": [
                                    coding(
                                        "http://terminology.hl7.org/CodeSystem/location-physical-type",
                                        "bd",
                                        "Bed",
                                    )
                                ]
                            },
                            "managingOrganization": ref("Organization", oid),
                        }
                    )
                    self.beds[oid].append(bid)

    def _practitioner(self, pid: str, oid: str, code: dict[str, Any], dept: str) -> str:
        family, given = _name(self.rng)
        gender = self.rng.choice(("male", "female"))
        self.add(
            {
                "resourceType": "Practitioner",
                "id": pid,
                "active": True,
                "gender": gender,
                "name": [{"family": family, "given": [given], "text": family + given}],
                "telecom": [{"system": "phone", "value": f"139{self.rng.randrange(10**8):08d}"}],
            }
        )
        self.add(
            {
                "resourceType": "PractitionerRole",
                "id": f"role-{pid}",
                "active": True,
                "practitioner": ref("Practitioner", pid, family + given),
                "organization": ref("Organization", oid),
                "code": [code],
                "specialty": [{"text": dept}],
                "telecom": [{"system": "phone", "value": f"0571-{self.rng.randrange(10**8):08d}"}],
            }
        )
        return f"role-{pid}"

    def people(self) -> None:
        coordinator = {"coding": [self.ours("yl-practitioner-role", "referral-coordinator")]}
        family = {"coding": [self.ours("yl-practitioner-role", "family-doctor")]}
        doctor = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/practitioner-role", "doctor", "Doctor"
                )
            ]
        }
        for oid, _, level, _, departments in HOSPITALS:
            self.coordinators[oid] = self._practitioner(
                f"{oid}-rc", oid, coordinator, "转诊服务中心"
            )
            self.doctors[oid] = []
            for d, dept in enumerate(departments * (2 if level == "chc" else 1)):
                code = family if level == "chc" else doctor
                role = self._practitioner(f"{oid}-dr{d + 1}", oid, code, dept)
                self.doctors[oid].append((role, dept))

    def patient_list(self) -> None:
        chcs = [h for h in HOSPITALS if h[2] == "chc"]
        for n in range(50):
            pid = f"pat-{n + 1:03d}"
            family, given = _name(self.rng)
            gender = self.rng.choice(("male", "female"))
            birth = date(
                1940 + self.rng.randrange(60),
                1 + self.rng.randrange(12),
                1 + self.rng.randrange(28),
            )
            chc = chcs[n % len(chcs)]
            street = f"{self.rng.choice(STREETS)}{self.rng.randrange(1, 300)}号"
            self.add(
                {
                    "resourceType": "Patient",
                    "id": pid,
                    "active": True,
                    "identifier": [
                        {
                            "system": f"{SID}/health-record-number",
                            "type": {"text": "居民健康档案编号"},
                            "value": f"3301{n % 4 + 2:02d}{self.rng.randrange(10**11):011d}",
                        },
                        {
                            "system": f"{SID}/resident-id",
                            "type": {"text": "居民身份证"},
                            # GB 11643: the sequence code is odd for men, even for women
                            "value": resident_id(
                                f"3301{n % 4 + 2:02d}{birth:%Y%m%d}"
                                f"{self.rng.randrange(500) * 2 + (gender == 'male'):03d}"
                            ),
                        },
                    ],
                    "name": [
                        {
                            "use": "official",
                            "family": family,
                            "given": [given],
                            "text": family + given,
                        }
                    ],
                    "gender": gender,
                    "birthDate": birth.isoformat(),
                    "telecom": [
                        {
                            "system": "phone",
                            "use": "mobile",
                            "value": f"13{self.rng.randrange(3, 10)}"
                            f"{self.rng.randrange(10**8):08d}",
                        }
                    ],
                    "address": [
                        {
                            "use": "home",
                            "city": "杭州市",
                            "district": chc[3],
                            "state": "浙江省",
                            "line": [street],
                            "text": f"浙江省杭州市{chc[3]}{street}",
                        }
                    ],
                    "managingOrganization": ref("Organization", chc[0], chc[1]),
                }
            )
            self.patients.append(pid)

    def schedules(self) -> None:
        pool = {
            "url": f"{SD}/yl-reserved-pool",
            "valueCoding": self.ours("yl-reserved-pool", "referral-consortium"),
        }
        for oid, _n, level, _d, _deps in HOSPITALS:
            if level == "chc":
                continue
            self.slots[oid] = []
            for role, dept in self.doctors[oid]:
                sid = f"sched-{role}"
                self.add(
                    {
                        "resourceType": "Schedule",
                        "id": sid,
                        "active": True,
                        "extension": [pool],
                        "actor": [ref("PractitionerRole", role)],
                        "specialty": [{"text": dept}],
                        "planningHorizon": {
                            "start": self.today.isoformat(),
                            "end": (self.today + timedelta(days=14)).isoformat(),
                        },
                        "comment": f"{dept} 医联体转诊预留号源",
                    }
                )
                for day in range(1, 15):
                    when = self.today + timedelta(days=day)
                    if when.weekday() == 6:
                        continue
                    for k, hour in enumerate((9, 10, 14)):
                        start = datetime.combine(when, time(hour), CST)
                        slot = f"slot-{role}-{day:02d}-{k}"
                        self.add(
                            {
                                "resourceType": "Slot",
                                "id": slot,
                                "extension": [pool],
                                "schedule": ref("Schedule", sid),
                                "status": "free",
                                "specialty": [{"text": dept}],
                                "start": instant(start),
                                "end": instant(start + timedelta(minutes=30)),
                            }
                        )
                        self.slots[oid].append(slot)


@dataclass
class Referral:
    """One demo referral: its ServiceRequest and the state its Task should reach."""

    sr_id: str
    state: str
    direction: str
    rtype: str
    source: str  # organization id
    target: str
    requester: str  # PractitionerRole id
    patient: str
    number: str
    submitted: datetime
    resource: dict[str, Any] = field(default_factory=dict)


def plan_referrals(b: Builder) -> list[Referral]:
    """Which referral reaches which state: every business state upward, plus downward and
    lateral ones, with sources and targets spread over the consortium."""
    chcs = [h[0] for h in HOSPITALS if h[2] == "chc"]
    hospitals = [h[0] for h in HOSPITALS if h[2] != "chc"]
    inpatient = {
        "under-review",
        "approved",
        "bed-assigned",
        "admitted",
        "down-referred",
        "redirected",
    }
    plan: list[tuple[str, str, str]] = [
        (s, "up", "inpatient" if s in inpatient else "outpatient") for s in STATES
    ]
    plan += [
        (s, "up", "outpatient")
        for s in ("submitted", "booked", "feedback-sent", "rejected", "arrived", "withdrawn")
    ]
    plan += [
        (s, "down", "rehabilitation" if i % 2 else "chronic-care")
        for i, s in enumerate(
            (
                "submitted",
                "received",
                "approved",
                "arrived",
                "feedback-sent",
                "rejected",
                "withdrawn",
                "feedback-sent",
            )
        )
    ]
    plan += [(s, "lateral", "outpatient") for s in ("booked", "feedback-sent", "rejected")]
    anchor = datetime.combine(b.today, time(8, 30), CST)
    out = []
    for n, (state, direction, rtype) in enumerate(plan):
        if direction == "up":
            source, target = chcs[n % len(chcs)], hospitals[n % 3 if n % 2 else 0]
        elif direction == "down":
            source, target = hospitals[n % 2], chcs[n % len(chcs)]
        else:
            source, target = hospitals[1], hospitals[2] if n % 2 else hospitals[0]
        submitted = anchor - timedelta(days=(n * 3) % 20 + 1, hours=b.rng.randrange(8))
        out.append(
            Referral(
                sr_id=f"ref-{n + 1:03d}",
                state=state,
                direction=direction,
                rtype=rtype,
                source=source,
                target=target,
                requester=b.doctors[source][0][0],
                patient=b.patients[(n * 7) % len(b.patients)],
                number=f"ZZ{submitted:%Y%m%d}-{n + 1:06d}",
                submitted=submitted,
            )
        )
    return out


def service_request(b: Builder, r: Referral) -> dict[str, Any]:
    cases = DOWN_CASES if r.direction == "down" else UP_CASES
    dx, icd, illness, past, treatment, results, plan = cases[int(r.sr_id[4:7]) % len(cases)]
    dept = next((d for _, d in b.doctors[r.target] if d != "全科"), "全科")
    return {
        "resourceType": "ServiceRequest",
        "id": r.sr_id,
        "meta": {"profile": [SR_PROFILE]},
        "extension": [
            {
                "url": f"{SD}/yl-referral-direction",
                "valueCoding": b.ours("yl-referral-direction", r.direction),
            }
        ],
        "identifier": [{"system": f"{SID}/referral-number", "value": r.number}],
        "status": "draft",
        "intent": "order",
        "category": [
            {"coding": [coding("http://snomed.info/sct", "3457005", "Patient referral")]},
            {"coding": [b.ours("yl-referral-type", r.rtype)]},
        ],
        "priority": "urgent"
        if r.rtype == "inpatient" and int(r.sr_id[4:7]) % 3 == 0
        else "routine",
        "code": {
            "text": {
                "outpatient": "门诊就诊",
                "inpatient": "住院治疗",
                "examination": "检查检验",
                "rehabilitation": "康复治疗",
                "chronic-care": "慢病管理",
            }.get(r.rtype, "转诊")
        },
        "subject": ref("Patient", r.patient),
        "authoredOn": instant(r.submitted),
        "requester": ref("PractitionerRole", r.requester),
        "performer": [ref("Organization", r.target)],
        "performerType": {"text": dept},
        "reasonCode": [
            {"coding": [coding("http://hl7.org/fhir/sid/icd-10", icd, dx)], "text": dx}
        ],
        "note": [
            {"text": illness},
            {"text": f"主要既往史：{past}"},
            {"text": f"治疗经过：{treatment}"},
            {"text": f"主要检查结果：{results}"},
        ],
        "patientInstruction": plan,
    }


def feedback_document(r: Referral) -> dict[str, Any]:
    """The 回执 (feedback to the sender) that completes a referral."""
    text = "患者已于我院完成诊治，病情稳定，建议返回基层继续管理，定期随访。"
    return {
        "resourceType": "DocumentReference",
        "id": f"fb-{r.sr_id}",
        "status": "current",
        "type": {
            "coding": [coding("http://loinc.org", "57133-1", "Referral note")],
            "text": "转诊回执",
        },
        "subject": ref("Patient", r.patient),
        "date": instant(r.submitted + timedelta(days=3)),
        "description": text,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "zh-CN",
                    "data": base64.b64encode(text.encode()).decode(),
                    "title": "转诊回执",
                }
            }
        ],
    }


def draft_task(b: Builder, r: Referral, status: str) -> list[dict[str, Any]]:
    """A referral still being composed: its draft ServiceRequest and draft Task (no operation
    leads there; $submit starts from it)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": f"task-{r.sr_id}",
        "meta": {"profile": [TASK_PROFILE]},
        "extension": [r.resource["extension"][0]],
        "identifier": r.resource["identifier"],
        "basedOn": [ref("ServiceRequest", r.sr_id)],
        "status": status,
        "businessStatus": {"coding": [b.ours("yl-referral-business-status", "drafted")]},
        "intent": "order",
        "priority": r.resource["priority"],
        "code": {"coding": [coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]},
        "focus": ref("ServiceRequest", r.sr_id),
        "for": ref("Patient", r.patient),
        "authoredOn": instant(r.submitted),
        "lastModified": instant(r.submitted),
        "requester": ref("PractitionerRole", r.requester),
        "owner": ref("Organization", r.target),
        "restriction": {"period": {"end": instant(r.submitted + timedelta(days=14))}},
    }
    return [{**r.resource, "status": "draft"}, task]


def resident_id(first17: str) -> str:
    """A demo 居民身份证号 whose check character is right, so `$match` uses it (GB 11643 §5.3)."""
    return first17 + check_character(first17)

