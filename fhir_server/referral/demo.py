"""A deterministic demo 医联体 (hospital consortium) with referrals in every business state.

`load_demo(services)` writes one transaction Bundle through the server's own write path: the
consortium Organization, one 三级甲等 hospital, two secondary hospitals, four 社区卫生服务中心,
OrganizationAffiliations, coordinators and doctors (Practitioner + PractitionerRole), 50
patients, Schedules with reserved referral Slots for the next 14 days, and referral
ServiceRequests. It then moves each referral's Task to its business state by calling the
workflow operations in-process ($submit, $claim, $accept, ...), as a client would.
Everything random comes from one seeded generator, so two loads produce the same content.
"""

from __future__ import annotations

import base64
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from ..context import RequestContext
from ..interactions import bundle
from ..interactions.hooks import transaction
from ..model.resource import now
from ..operations.registry import Call
from ..services import Services
from ..terminology import Terminology
from . import codes
from .operations import expire
from .transitions import table_of
from .work import Work

SID = codes.SID.rstrip("/")
CS = codes.CS.rstrip("/")
SD = codes.SD.rstrip("/")
CST = timezone(timedelta(hours=8), "CST")
TASK_PROFILE = codes.TASK_PROFILE
SR_PROFILE = codes.REQUEST_PROFILE

#: every business state the demo reaches (referral-model.md §2.5)
STATES = (
    "drafted",
    "submitted",
    "received",
    "under-review",
    "info-requested",
    "booked",
    "approved",
    "bed-assigned",
    "arrived",
    "in-treatment",
    "admitted",
    "feedback-sent",
    "down-referred",
    "rejected",
    "redirected",
    "withdrawn",
    "expired",
    "no-show",
)



#: (id, name, level, district, departments)
HOSPITALS = (
    (
        "hz-first",
        "杭州市第一人民医院",
        "3A",
        "上城区",
        ("心血管内科", "内分泌科", "呼吸与危重症医学科", "神经内科"),
    ),
    ("xihu-people", "杭州市西湖区人民医院", "2A", "西湖区", ("心血管内科", "骨科")),
    ("gongshu-people", "杭州市拱墅区人民医院", "2B", "拱墅区", ("普通内科", "康复医学科")),
    ("hubin-chc", "湖滨街道社区卫生服务中心", "chc", "上城区", ("全科",)),
    ("xiaoying-chc", "小营街道社区卫生服务中心", "chc", "上城区", ("全科",)),
    ("cuiyuan-chc", "翠苑街道社区卫生服务中心", "chc", "西湖区", ("全科",)),
    ("mishixiang-chc", "米市巷街道社区卫生服务中心", "chc", "拱墅区", ("全科",)),
)
CONSORTIUM = ("consortium", "杭州市第一人民医院医疗集团（城市医联体）")

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩"
    "冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
)
GIVEN = (
    "伟芳娜秀敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
    "华建国志红玉梅海燕晓东春生文斌宇浩然欣怡子涵雨桐梓萱思远嘉豪"
)
STREETS = (
    "解放路",
    "庆春路",
    "延安路",
    "文三路",
    "莫干山路",
    "湖墅南路",
    "体育场路",
    "凤起路",
    "教工路",
    "古翠路",
)

#: clinical scenarios: (diagnosis, ICD-10, present illness, past history, treatment, results, plan)
UP_CASES = (
    (
        "高血压3级（极高危）",
        "I10",
        "反复头晕2月，近1周血压波动于180/110mmHg左右，联合三种降压药控制不佳。",
        "高血压病史10年，2型糖尿病5年。",
        "氨氯地平5mg qd、缬沙坦80mg qd、氢氯噻嗪12.5mg qd。",
        "心电图：左室高电压；血肌酐98μmol/L。",
        "建议上级医院心内科评估继发性高血压并调整方案。",
    ),
    (
        "2型糖尿病伴血糖控制不佳",
        "E11.9",
        "多饮多尿加重1月，空腹血糖12-15mmol/L，糖化血红蛋白9.8%。",
        "2型糖尿病8年，高脂血症。",
        "二甲双胍0.5g tid，格列美脲2mg qd。",
        "HbA1c 9.8%；尿微量白蛋白升高。",
        "建议内分泌科调整降糖方案，评估胰岛素治疗。",
    ),
    (
        "不稳定型心绞痛",
        "I20.0",
        "活动后胸闷胸痛3天，每次持续5-10分钟，含服硝酸甘油可缓解。",
        "冠心病史3年，吸烟30年。",
        "阿司匹林100mg qd，阿托伐他汀20mg qn。",
        "心电图：V1-V4 ST段压低0.1mV。",
        "建议行冠脉造影评估，必要时介入治疗。",
    ),
    (
        "慢性阻塞性肺疾病急性加重",
        "J44.1",
        "咳嗽咳痰气促加重5天，活动耐量明显下降。",
        "慢阻肺病史6年。",
        "布地奈德福莫特罗吸入，头孢呋辛口服3天效果欠佳。",
        "指脉氧89%；胸片：双肺纹理增粗。",
        "建议住院抗感染、平喘治疗。",
    ),
    (
        "短暂性脑缺血发作",
        "G45.9",
        "突发右侧肢体无力20分钟后自行缓解，共发作2次。",
        "高血压、高脂血症。",
        "阿司匹林100mg qd。",
        "头颅CT未见出血。",
        "建议神经内科进一步评估颈动脉及头颅MRI。",
    ),
    (
        "腰椎间盘突出症",
        "M51.2",
        "腰痛伴左下肢放射痛1月，保守治疗无明显好转。",
        "无特殊。",
        "塞来昔布、理疗2周。",
        "腰椎MRI：L4/5椎间盘突出。",
        "建议骨科评估手术指征。",
    ),
)
DOWN_CASES = (
    (
        "脑梗死恢复期",
        "I69.3",
        "脑梗死住院治疗14天，病情稳定，遗留左侧肢体轻度乏力。",
        "高血压病史。",
        "阿替普酶静脉溶栓后抗血小板、他汀治疗及早期康复。",
        "头颅MRI：右侧基底节区梗死灶。",
        "继续阿司匹林100mg qd、阿托伐他汀20mg qn；社区康复训练，7天内首次随访，监测血压。",
    ),
    (
        "冠心病PCI术后",
        "Z95.5",
        "冠脉支架植入术后7天，无胸痛，病情稳定出院。",
        "不稳定型心绞痛。",
        "前降支植入支架1枚，双联抗血小板。",
        "术后心电图正常，肌钙蛋白正常。",
        "双抗12个月，控制危险因素，1、3、6个月社区随访。",
    ),
    (
        "2型糖尿病（血糖已控制）",
        "E11.9",
        "胰岛素治疗方案调整后血糖平稳。",
        "2型糖尿病8年。",
        "门冬胰岛素30 早晚餐前皮下注射。",
        "空腹血糖6.8mmol/L。",
        "社区慢病管理，每月随访血糖，3个月复查HbA1c。",
    ),
)


@dataclass
class Demo:
    """What load_demo wrote, for tests and the CLI's report."""

    organizations: int = 0
    patients: int = 0
    slots: int = 0
    referrals: int = 0
    states: dict[str, str] = field(default_factory=dict)  # ServiceRequest id -> business state
    resources: int = 0


def _ref(kind: str, rid: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": f"{kind}/{rid}"}
    if display:
        out["display"] = display
    return out


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _instant(moment: datetime) -> str:
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
        return _coding(system, code, self.terminology.display(system, code, "zh-CN") or code)

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
                            _coding(
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
                                _coding(
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
                    "partOf": _ref("Organization", cid),
                }
            )
            role = "consortium-lead" if level == "3A" else "consortium-member"
            self.add(
                {
                    "resourceType": "OrganizationAffiliation",
                    "id": f"aff-{oid}",
                    "active": True,
                    "organization": _ref("Organization", cid),
                    "participatingOrganization": _ref("Organization", oid, name),
                    "code": [{"coding": [_coding(f"{CS}/yl-affiliation-role", role)]}],
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
                                    _coding(
                                        "http://terminology.hl7.org/CodeSystem/location-physical-type",
                                        "bd",
                                        "Bed",
                                    )
                                ]
                            },
                            "managingOrganization": _ref("Organization", oid),
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
                "practitioner": _ref("Practitioner", pid, family + given),
                "organization": _ref("Organization", oid),
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
                _coding(
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
                            "value": f"3301{n % 4 + 2:02d}{birth:%Y%m%d}"
                            f"{self.rng.randrange(1000):03d}"
                            f"{self.rng.choice('0123456789X')}",
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
                    "managingOrganization": _ref("Organization", chc[0], chc[1]),
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
                        "actor": [_ref("PractitionerRole", role)],
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
                                "schedule": _ref("Schedule", sid),
                                "status": "free",
                                "specialty": [{"text": dept}],
                                "start": _instant(start),
                                "end": _instant(start + timedelta(minutes=30)),
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
            {"coding": [_coding("http://snomed.info/sct", "3457005", "Patient referral")]},
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
        "subject": _ref("Patient", r.patient),
        "authoredOn": _instant(r.submitted),
        "requester": _ref("PractitionerRole", r.requester),
        "performer": [_ref("Organization", r.target)],
        "performerType": {"text": dept},
        "reasonCode": [
            {"coding": [_coding("http://hl7.org/fhir/sid/icd-10", icd, dx)], "text": dx}
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
            "coding": [_coding("http://loinc.org", "57133-1", "Referral note")],
            "text": "转诊回执",
        },
        "subject": _ref("Patient", r.patient),
        "date": _instant(r.submitted + timedelta(days=3)),
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


def load_demo(services: Services, today: date | None = None, seed: int = 20250301) -> Demo:
    """Write the demo consortium into the database and drive its referrals to their states."""
    today = today or datetime.now(CST).date()
    b = Builder(today, seed, services.terminology)
    b.build()
    referrals = plan_referrals(b)
    for r in referrals:
        r.resource = service_request(b, r)
        b.add(r.resource)
        if r.state == "feedback-sent":
            b.add(feedback_document(r))
    ctx = RequestContext(
        base_url=services.settings.public_base_url
        or f"http://{services.settings.host}:{services.settings.port}/fhir"
    )
    _transaction(services, ctx, b.resources)
    demo = Demo(
        organizations=1 + len(HOSPITALS),
        patients=len(b.patients),
        slots=sum(len(s) for s in b.slots.values()),
        referrals=len(referrals),
        resources=len(b.resources),
    )
    for r in referrals:
        _drive(services, ctx, b, r)
    demo.states = {r.sr_id: r.state for r in referrals}
    return demo


def _transaction(services: Services, ctx: RequestContext, resources: list[dict[str, Any]]) -> None:
    entries = [
        {
            "fullUrl": f"{ctx.base_url}/{x['resourceType']}/{x['id']}",
            "resource": x,
            "request": {"method": "PUT", "url": f"{x['resourceType']}/{x['id']}"},
        }
        for x in resources
    ]
    bundle.process(
        services,
        ctx,
        {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        "minimal",
    )


# --- referrals through the workflow operations -----------------------------------------


def draft_task(b: Builder, r: Referral, status: str) -> list[dict[str, Any]]:
    """A referral still being composed: its draft ServiceRequest and draft Task (no operation
    leads there; $submit starts from it)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": f"task-{r.sr_id}",
        "meta": {"profile": [TASK_PROFILE]},
        "extension": [r.resource["extension"][0]],
        "identifier": r.resource["identifier"],
        "basedOn": [_ref("ServiceRequest", r.sr_id)],
        "status": status,
        "businessStatus": {"coding": [b.ours("yl-referral-business-status", "drafted")]},
        "intent": "order",
        "priority": r.resource["priority"],
        "code": {"coding": [_coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]},
        "focus": _ref("ServiceRequest", r.sr_id),
        "for": _ref("Patient", r.patient),
        "authoredOn": _instant(r.submitted),
        "lastModified": _instant(r.submitted),
        "requester": _ref("PractitionerRole", r.requester),
        "owner": _ref("Organization", r.target),
        "restriction": {"period": {"end": _instant(r.submitted + timedelta(days=14))}},
    }
    return [{**r.resource, "status": "draft"}, task]


def _invoke(
    services: Services,
    ctx: RequestContext,
    rtype: str,
    rid: str,
    name: str,
    parameters: list[dict[str, Any]] | None = None,
) -> Any:
    op = services.operations.find(name, "instance", rtype, "POST")
    body = {"resourceType": "Parameters", "parameter": parameters or []}
    return op.handler(Call(services, ctx, rtype, rid, "POST", body, body)).resource


def _first(answer: Any, rtype: str, where: Callable[[dict[str, Any]], bool]) -> str:
    """The id of the first resource of a type in an operation's answer Bundle that matches."""
    for entry in (answer or {}).get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == rtype and where(resource):
            return str(resource["id"])
    raise LookupError(f"no {rtype} in the operation's answer")


#: the operations that lead to each state, after $submit (`slot`: submit with a booking)
PATHS: dict[str, tuple[str, ...]] = {
    "submitted": (),
    "received": ("$claim",),
    "under-review": ("$claim",),
    "info-requested": ("$claim", "$request-info"),
    "booked": ("slot",),
    "approved": ("$claim", "approve"),
    "bed-assigned": ("$claim", "approve", "bed"),
    "arrived": ("slot", "$check-in"),
    "in-treatment": ("slot", "$check-in", "$start-treatment"),
    "admitted": ("$claim", "approve", "bed", "$check-in", "$start-treatment"),
    "feedback-sent": ("slot", "$check-in", "$start-treatment", "feedback"),
    "down-referred": ("$claim", "approve", "bed", "$check-in", "$start-treatment", "down"),
    "rejected": ("$claim", "$reject"),
    "redirected": ("redirect",),
    "withdrawn": ("$cancel",),
    "expired": ("expire",),
    "no-show": ("slot", "$no-show"),
}


def _drive(services: Services, ctx: RequestContext, b: Builder, r: Referral) -> None:
    """Reach the referral's state through the workflow operations, as a client would."""
    if r.state == "drafted":  # a Task being composed: nothing to call yet
        drafted = table_of(services).business_status["drafted"]
        _transaction(services, ctx, draft_task(b, r, drafted))
        return
    steps = PATHS[r.state]
    if r.rtype != "outpatient":  # only outpatient referrals are booked into a Slot
        steps = tuple(("approve" if s == "slot" else s) for s in steps)
        if "approve" in steps and "$claim" not in steps:
            steps = ("$claim", *steps)
    valid = datetime.combine(b.today + timedelta(days=14), time(23, 59, 59), CST)
    params: list[dict[str, Any]] = [{"name": "validUntil", "valueDateTime": _instant(valid)}]
    if steps and steps[0] == "slot":
        params.append({"name": "slot", "valueReference": _ref("Slot", b.slots[r.target].pop(0))})
        steps = steps[1:]
    answer = _invoke(services, ctx, "ServiceRequest", r.sr_id, "$submit", params)
    task = _first(answer, "Task", lambda t: not t.get("partOf"))
    claimed: Any = None
    for step in steps:
        claimed = _step(services, ctx, b, r, task, step, claimed)


def _coded(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(f"{CS}/{system}", code, display)], "text": display}


def _step(
    services: Services,
    ctx: RequestContext,
    b: Builder,
    r: Referral,
    task: str,
    step: str,
    previous: Any,
) -> Any:
    """One operation call of a referral's path; answers the operation's Bundle."""
    call = functools.partial(_invoke, services, ctx, "Task", task)
    coordinator = _ref("PractitionerRole", b.coordinators[r.target])
    if step == "$claim":
        return call("$claim", [{"name": "owner", "valueReference": coordinator}])
    if step == "approve":  # approve each approval sub-task ($claim of an inpatient referral)
        subs = [
            e["resource"]["id"]
            for e in (previous or {}).get("entry") or []
            if e.get("resource", {}).get("resourceType") == "Task" and e["resource"].get("partOf")
        ]
        if not subs:
            return call("$accept", [])
        for sub in subs:
            answer = _invoke(services, ctx, "Task", sub, "$accept", [])
        return answer
    if step == "bed":
        planned = datetime.combine(b.today + timedelta(days=2), time(10), CST)
        return call(
            "$accept",
            [
                {"name": "bed", "valueReference": _ref("Location", b.beds[r.target][0])},
                {"name": "plannedAdmission", "valueDateTime": _instant(planned)},
            ],
        )
    if step == "$request-info":
        return call(
            step, [{"name": "question", "valueString": "请补充近3个月的血压监测记录及用药清单。"}]
        )
    if step == "$start-treatment":
        return call(step, [])
    if step == "$check-in":
        return call(step, [])
    if step == "feedback":
        return call(
            "$complete",
            [
                {
                    "name": "feedbackDocument",
                    "valueReference": _ref("DocumentReference", f"fb-{r.sr_id}"),
                }
            ],
        )
    if step == "down":
        down = {
            **service_request(
                b,
                Referral(
                    f"{r.sr_id}-down",
                    "submitted",
                    "down",
                    "rehabilitation",
                    r.target,
                    r.source,
                    b.doctors[r.target][0][0],
                    r.patient,
                    f"{r.number}-D",
                    r.submitted,
                ),
            ),
            "status": "draft",
        }
        down.pop("id")
        return call("$complete", [{"name": "downwardReferral", "resource": down}])
    if step == "$reject":
        return call(
            step,
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-rejection-reason", "no-capacity"),
                },
                {"name": "note", "valueString": "本周专家号源已满，建议下周重新申请。"},
            ],
        )
    if step == "redirect":
        other = next(h[0] for h in HOSPITALS if h[2] != "chc" and h[0] != r.target)
        return call(
            "$reject",
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-rejection-reason", "beyond-capability"),
                },
                {"name": "suggestedOrganization", "valueReference": _ref("Organization", other)},
            ],
        )
    if step == "$cancel":
        return call(
            step,
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-cancel-reason", "patient-request"),
                }
            ],
        )
    if step == "$no-show":
        return call(step, [{"name": "reason", "valueString": "患者未按预约时间报到"}])
    if step == "expire":
        with transaction(services) as session:
            work = Work(session, services, ctx, now())
            expire(work, work.get("Task", task), "转诊申请超过72小时未处理，自动失效")
            work.commit()
        return None
    raise ValueError(f"unknown demo step {step!r}")


def load_if_empty(services: Services) -> Demo | None:
    """Load the demo unless the database already holds a Patient."""
    if services.store.reader().any_current("Patient"):
        return None
    return load_demo(services)


def describe(demo: Demo) -> str:
    return (
        f"demo consortium loaded: {demo.organizations} organizations, {demo.patients} patients, "
        f"{demo.slots} reserved slots, {demo.referrals} referrals in "
        f"{len(set(demo.states.values()))} business states"
    )
