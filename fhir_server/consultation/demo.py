"""The demo's remote consultation part (`fhir-server demo`, after the referral consortium):
experts of the tertiary hospital with a 远程会诊中心 HealthcareService, their Schedules with free
Slots for the next 7 days, a collaboration team (协作医生关系), and consultations driven through
the operations, in-process as a client would, into every business state."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ..context import RequestContext
from ..interactions import bundle
from ..operations.registry import Call
from ..services import Services
from .codes import CS, SNOMED
from .sweep import sweep

Json = dict[str, Any]
CST_OFFSET = timedelta(hours=8)

#: (id, name, hospital, SNOMED CT specialty, Chinese department)
EXPERTS = (
    ("expert-1", "陈立", "hz-first", "394579002", "心血管内科"),
    ("expert-2", "林芳", "hz-first", "394579002", "心血管内科"),
    ("expert-3", "黄涛", "hz-first", "394591006", "神经内科"),
    ("expert-4", "吴敏", "hz-first", "394914008", "医学影像科"),
    ("expert-5", "周强", "xihu-people", "394579002", "心血管内科"),
)
#: every business state the demo reaches, with the operations (after the request) leading there
STATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("requested", ()),
    ("redirected", ("redirect",)),
    ("accepted", ("accept",)),
    ("declined", ("decline",)),
    ("scheduled", ("accept", "schedule")),
    ("in-progress", ("accept", "schedule", "start")),
    ("opinion-drafted", ("accept", "start", "opinion")),
    ("completed", ("accept", "schedule", "start", "opinion", "sign")),
    ("cancelled", ("accept", "cancel")),
    ("expired", ()),
)
#: the inviting community doctors and their patients (the referral demo's: pat-00N is managed
#: by the (N-1) % 4-th community centre)
INVITING = (
    ("role-hubin-chc-dr1", "pat-001"),
    ("role-xiaoying-chc-dr1", "pat-002"),
    ("role-cuiyuan-chc-dr1", "pat-003"),
    ("role-mishixiang-chc-dr1", "pat-004"),
)
CASES = (
    ("single-expert", "胸痛待查，请心内科会诊", "反复胸痛三月，活动后加重"),
    ("mdt", "多学科会诊：糖尿病合并冠心病", "血糖控制差，近期胸闷"),
    ("imaging", "头颅CT阅片", "头痛伴呕吐两天"),
    ("ecg", "动态心电图判读", "心悸一周"),
)


def _ref(kind: str, rid: str) -> Json:
    return {"reference": f"{kind}/{rid}"}


def resources(today: date) -> list[Json]:
    """Practitioners, PractitionerRoles, the HealthcareService, Schedules, Slots, the team."""
    out: list[Json] = [{
        "resourceType": "HealthcareService", "id": "hs-teleconsult", "active": True,
        "providedBy": _ref("Organization", "hz-first"), "name": "远程会诊中心",
        "category": [{"coding": [{"system": SNOMED, "code": "11429006"}]}],
        "type": [{"text": "远程会诊"}],
        "specialty": [{"coding": [{"system": SNOMED, "code": e[3]}], "text": e[4]}
                      for e in EXPERTS[:4]],
    }]  # fmt: skip
    for eid, name, org, code, dept in EXPERTS:
        out.append(
            {
                "resourceType": "Practitioner",
                "id": eid,
                "active": True,
                "name": [{"family": name[0], "given": [name[1:]], "text": name}],
            }
        )
        role: Json = {
            "resourceType": "PractitionerRole", "id": f"role-{eid}", "active": True,
            "practitioner": _ref("Practitioner", eid), "organization": _ref("Organization", org),
            "specialty": [{"coding": [{"system": SNOMED, "code": code}], "text": dept}],
        }  # fmt: skip
        if org == "hz-first":
            role["healthcareService"] = [_ref("HealthcareService", "hs-teleconsult")]
        out.append(role)
        out.append({"resourceType": "Schedule", "id": f"sched-{eid}", "active": True,
                    "serviceCategory": [{"text": "远程会诊"}],
                    "actor": [_ref("PractitionerRole", f"role-{eid}")]})  # fmt: skip
        for day in range(1, 8):
            for hour in (9, 14):
                start = datetime.combine(today + timedelta(days=day), time(hour)) - CST_OFFSET
                out.append({
                    "resourceType": "Slot", "id": f"slot-{eid}-{day}-{hour}",
                    "schedule": _ref("Schedule", f"sched-{eid}"), "status": "free",
                    "start": start.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
                    "end": (start + timedelta(minutes=30)).replace(tzinfo=UTC).isoformat()
                    .replace("+00:00", "Z"),
                })  # fmt: skip
    upper = {"coding": [{"system": f"{CS}yl-collaboration-role", "code": "upper-specialist"}]}
    primary = {"coding": [{"system": f"{CS}yl-collaboration-role", "code": "primary-doctor"}]}
    out.append({
        "resourceType": "CareTeam", "id": "team-chest-pain", "status": "active",
        "name": "胸痛中心协作团队",
        "category": [{"coding": [{"system": f"{CS}yl-careteam-type", "code": "collaboration"}]}],
        "participant": [{"role": [upper], "member": _ref("PractitionerRole", f"role-{e}")}
                        for e in ("expert-1", "expert-3", "expert-4")]
        + [{"role": [primary], "member": _ref("PractitionerRole", "role-hubin-chc-dr1")}],
        "managingOrganization": [_ref("Organization", "hz-first")],
    })  # fmt: skip
    return out


def _invoke(services: Services, ctx: RequestContext, level: str, rtype: str, rid: str | None,
            name: str, *params: Json) -> Json:  # fmt: skip
    op = services.operations.find(name, level, rtype, "POST")
    body = {"resourceType": "Parameters", "parameter": list(params)}
    answer = op.handler(Call(services, ctx, rtype, rid, "POST", body, body)).resource
    assert isinstance(answer, dict)
    return answer


def load(services: Services, ctx: RequestContext, today: date | None = None) -> dict[str, str]:
    """Write the experts and drive one consultation into each state; Task id -> state."""
    today = today or (datetime.now(UTC) + CST_OFFSET).date()
    entries = [{"resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
               for r in resources(today)]  # fmt: skip
    bundle.process(services, ctx, {"resourceType": "Bundle", "type": "transaction",
                                   "entry": entries}, "minimal")  # fmt: skip
    states: dict[str, str] = {}
    for n, (state, steps) in enumerate(STATES):
        doctor, patient = INVITING[n % len(INVITING)]
        kind, question, reason = CASES[n % len(CASES)]
        expert = f"PractitionerRole/role-expert-{1 + n % 2}"
        request = {
            "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
            "priority": "stat" if state == "expired" else "routine",
            "category": [{"coding": [{"system": SNOMED, "code": "11429006"}]},
                         {"coding": [{"system": f"{CS}yl-consultation-type", "code": kind}]}],
            "code": {"text": question}, "reasonCode": [{"text": reason}],
            "subject": _ref("Patient", patient), "requester": _ref("PractitionerRole", doctor),
        }  # fmt: skip
        invite = (
            {"name": "team", "valueReference": _ref("CareTeam", "team-chest-pain")}
            if kind == "mdt"
            else {"name": "expert", "valueReference": {"reference": expert}}
        )
        answer = _invoke(services, ctx, "type", "ServiceRequest", None, "$request-consultation",
                         {"name": "request", "resource": request}, invite)  # fmt: skip
        task = answer["entry"][0]["resource"]
        lead = task["owner"]
        slot = f"Slot/slot-{lead['reference'].split('/role-')[1]}-{1 + n % 7}-9"
        for step in steps:
            who = {"name": "expert", "valueReference": lead}
            params: tuple[Any, ...] = {
                "redirect": ("$decline", who, {"name": "reason", "valueString": "出差"},
                             {"name": "redirectTo",
                              "valueReference": _ref("PractitionerRole", "role-expert-5")}),
                "accept": ("$accept", who),
                "decline": ("$decline", who, {"name": "reason", "valueCoding": {
                    "system": f"{CS}yl-consultation-decline-reason", "code": "out-of-scope"}}),
                "schedule": ("$schedule", {"name": "slot", "valueReference": {"reference": slot}}),
                "start": ("$start",),
                "opinion": ("$submit-opinion",
                            {"name": "historySummary", "valueString": reason},
                            {"name": "findings", "valueString": "心电图示ST段压低0.1mV"},
                            {"name": "opinion", "valueString": "考虑不稳定型心绞痛"},
                            {"name": "recommendations", "valueString": "建议冠脉造影，必要时上转"}),
                "sign": ("$sign",),
                "cancel": ("$cancel", {"name": "reason", "valueString": "患者已转院"}),
            }[step]  # fmt: skip
            _invoke(services, ctx, "instance", "Task", task["id"], params[0], *params[1:])
        states[task["id"]] = state
    expired = sweep(services, datetime.now(UTC) + timedelta(hours=1))
    assert len(expired) == 1, expired
    return states


def sign_ins() -> list[tuple[str, str]]:
    """(username, fhirUser) of the demo experts who sign in."""
    return [(f"dr-{eid}", f"PractitionerRole/role-{eid}") for eid, *_ in EXPERTS[:2]]


def describe(states: dict[str, str]) -> str:
    return (
        f"remote consultation: {len(EXPERTS)} experts with 7 days of slots, a collaboration "
        f"team, {len(states)} consultations in {len(set(states.values()))} states"
    )
