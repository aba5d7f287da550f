"""Remote consultation (issue 14) over real HTTP on a real SQLite file: every transition of
the table and its refusals, the Appointment with one AppointmentResponse per expert, double
booking, If-Match, plain PUT checked against the table, expiry, and the opinion document."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

Json = dict[str, Any]
C = "https://yilian.health/fhir"
CS = f"{C}/CodeSystem/"


def create(client: Any, resource: Json) -> Json:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return dict(r.json())


def get(client: Any, reference: str) -> Json:
    r = client.get(f"/fhir/{reference}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def op(client: Any, path: str, *params: Json, headers: dict[str, str] | None = None) -> Any:
    body = {"resourceType": "Parameters", "parameter": list(params)}
    return client.post(f"/fhir/{path}", json=body, headers=headers or {})


def ref(name: str, reference: str) -> Json:
    return {"name": name, "valueReference": {"reference": reference}}


def text(name: str, value: str) -> Json:
    return {"name": name, "valueString": value}


def ok(response: Any, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    bundle = dict(response.json())
    assert bundle["type"] == "collection"
    return bundle


def of(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def business(task: Json) -> tuple[str, str]:
    return task["status"], task["businessStatus"]["coding"][0]["code"]


def refused(response: Any, status: int = 409) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["issue"][0]["diagnostics"])


def role(client: Any, org: str, family: str, specialty: str = "cardiology") -> str:
    doctor = create(client, {"resourceType": "Practitioner", "name": [{"family": family}]})
    r = create(client, {
        "resourceType": "PractitionerRole", "active": True,
        "practitioner": {"reference": f"Practitioner/{doctor['id']}"},
        "organization": {"reference": org},
        "specialty": [{"coding": [{"system": "urn:test:specialty", "code": specialty}]}],
    })  # fmt: skip
    return f"PractitionerRole/{r['id']}"


def build(client: Any) -> Json:
    """An inviting community centre with its doctor and patient; a tertiary hospital with
    three experts, the first with a Schedule."""
    community = create(client, {"resourceType": "Organization", "name": "社区卫生服务中心"})
    hospital = create(client, {"resourceType": "Organization", "name": "市第一人民医院"})
    c_org, h_org = f"Organization/{community['id']}", f"Organization/{hospital['id']}"
    patient = create(client, {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}],
                              "gender": "male", "birthDate": "1960-05-01",
                              "managingOrganization": {"reference": c_org}})  # fmt: skip
    experts = [role(client, h_org, name) for name in ("李", "赵", "钱")]
    schedule = create(client, {"resourceType": "Schedule", "active": True,
                               "actor": [{"reference": experts[0]}]})  # fmt: skip
    return {
        "community": c_org, "hospital": h_org, "patient": f"Patient/{patient['id']}",
        "doctor": role(client, c_org, "王", "general-practice"), "experts": experts,
        "schedule": f"Schedule/{schedule['id']}",
    }  # fmt: skip


@pytest.fixture
def world(client: TestClient) -> Json:
    return build(client)


def new_slot(client: Any, world: Json, hours: int = 24, schedule: str | None = None) -> str:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    slot = create(client, {
        "resourceType": "Slot", "schedule": {"reference": schedule or world["schedule"]},
        "status": "free", "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
    })  # fmt: skip
    return f"Slot/{slot['id']}"


def request_body(world: Json, kind: str = "single-expert", priority: str = "routine") -> Json:
    return {
        "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
        "priority": priority,
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "11429006"}]},
                     {"coding": [{"system": f"{CS}yl-consultation-type", "code": kind}]}],
        "code": {"text": "胸痛待查，请心内科会诊"},
        "reasonCode": [{"text": "反复胸痛三月，心电图ST段改变"}],
        "subject": {"reference": world["patient"]},
        "requester": {"reference": world["doctor"]},
    }  # fmt: skip


def request(client: Any, world: Json, *params: Json, **kw: Any) -> tuple[str, Json]:
    """$request-consultation at type level; (Task id, the answer)."""
    answer = ok(op(client, "ServiceRequest/$request-consultation",
                   {"name": "request", "resource": request_body(world, **kw)}, *params), 201)
    task = answer["entry"][0]["resource"]
    assert task["resourceType"] == "Task"
    return task["id"], answer


def expert(world: Json, i: int = 0) -> Json:
    return ref("expert", world["experts"][i])


def appointment_of(client: Any, task: Json) -> Json:
    for out in task.get("output") or []:
        if out["type"]["coding"][0]["code"] == "appointment":
            return get(client, out["valueReference"]["reference"])
    raise AssertionError("no appointment")


def activities(client: Any, task: str) -> list[str]:
    bundle = client.get(f"/fhir/Provenance?target=Task/{task}&_sort=recorded&_count=100").json()
    return [e["resource"]["activity"]["coding"][0]["code"] for e in bundle.get("entry", [])]


def test_the_whole_way_from_request_to_signed_opinion(client: TestClient, world: Json) -> None:
    task_id, answer = request(client, world, expert(world, 0))
    task = answer["entry"][0]["resource"]
    assert business(task) == ("requested", "requested")
    sr = of(answer, "ServiceRequest")[0]
    assert sr["status"] == "active" and sr["performer"] == [{"reference": world["experts"][0]}]
    appointment = of(answer, "Appointment")[0]
    assert appointment["status"] == "proposed"
    assert [p["status"] for p in appointment["participant"]] == ["accepted", "needs-action"]
    # routine: 2880 minutes (settings.consultation_response_minutes) after authoredOn
    due = datetime.fromisoformat(task["restriction"]["period"]["end"].replace("Z", "+00:00"))
    authored = datetime.fromisoformat(task["authoredOn"].replace("Z", "+00:00"))
    assert due - authored == timedelta(minutes=2880)

    accepted = ok(op(client, f"Task/{task_id}/$accept", expert(world, 0)))
    assert business(accepted["entry"][0]["resource"]) == ("accepted", "accepted")
    (response,) = of(accepted, "AppointmentResponse")
    assert response["participantStatus"] == "accepted"
    assert response["actor"] == {"reference": world["experts"][0]}

    slot = new_slot(client, world)
    scheduled = ok(op(client, f"Task/{task_id}/$schedule", ref("slot", slot)))
    assert business(scheduled["entry"][0]["resource"]) == ("ready", "scheduled")
    assert get(client, slot)["status"] == "busy"
    assert of(scheduled, "Appointment")[0]["status"] == "booked"

    started = ok(op(client, f"Task/{task_id}/$start"))
    (encounter,) = of(started, "Encounter")
    assert encounter["class"]["code"] == "VR" and encounter["status"] == "in-progress"
    assert business(started["entry"][0]["resource"]) == ("in-progress", "in-progress")
    found = client.get(f"/fhir/Encounter?appointment={encounter['appointment'][0]['reference']}")
    assert found.json()["total"] == 1

    drafted = ok(op(client, f"Task/{task_id}/$submit-opinion",
                    text("historySummary", "反复胸痛三月"), text("findings", "心电图ST段压低"),
                    text("opinion", "考虑不稳定型心绞痛"),
                    text("recommendations", "建议冠脉造影，转上级医院")))  # fmt: skip
    (composition,) = of(drafted, "Composition")
    assert composition["status"] == "preliminary"
    assert composition["type"]["coding"][0]["code"] == "11488-4"
    assert [s["code"]["coding"][0]["code"] for s in composition["section"]] == [
        "history-summary", "findings", "opinion", "recommendations"]
    assert business(drafted["entry"][0]["resource"]) == ("in-progress", "opinion-drafted")
    # a revision keeps the same Composition
    again = ok(op(client, f"Task/{task_id}/$submit-opinion", text("opinion", "不稳定型心绞痛")))
    assert of(again, "Composition")[0]["id"] == composition["id"]

    signed = ok(op(client, f"Task/{task_id}/$sign"))
    assert business(signed["entry"][0]["resource"]) == ("completed", "completed")
    final = of(signed, "Composition")[0]
    assert final["status"] == "final" and final["attester"][0]["mode"] == "legal"
    assert get(client, f"ServiceRequest/{sr['id']}")["status"] == "completed"
    assert get(client, f"Appointment/{appointment['id']}")["status"] == "fulfilled"
    assert get(client, f"Encounter/{encounter['id']}")["status"] == "finished"
    assert activities(client, task_id) == [
        "request", "accept", "schedule", "start", "submit-opinion", "submit-opinion", "sign"]
