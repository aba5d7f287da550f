"""Remote consultation (issue 14) over real HTTP on a real SQLite file: every transition of
the table and its refusals, the Appointment with one AppointmentResponse per expert, double
booking, If-Match, plain PUT checked against the table, expiry, and the opinion document."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_storage_contract import BACKENDS, open_backend

from fhir_server.services import Parts

Json = dict[str, Any]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """The consultation on every storage backend (test_storage_contract.py: SQLite, mongomock,
    a real MongoDB when FHIR_TEST_MONGODB_URL is set): its operations use only the contract."""
    c, close = open_backend(request.param, parts, tmp_path)
    yield c
    close()
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
    patient = create(client, {"resourceType": "Patient",
                              "name": [{"family": "张", "given": ["三"]}],
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
    answer = ok(
        op(
            client,
            "ServiceRequest/$request-consultation",
            {"name": "request", "resource": request_body(world, **kw)},
            *params,
        ),
        201,
    )
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
    # the inviting doctor, the expert, and the patient (who takes part; not asked to answer)
    assert [p["status"] for p in appointment["participant"]] == [
        "accepted", "needs-action", "accepted"]  # fmt: skip
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
        "history-summary",
        "findings",
        "opinion",
        "recommendations",
    ]
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
        "request",
        "accept",
        "schedule",
        "start",
        "submit-opinion",
        "submit-opinion",
        "sign",
    ]


def test_refusals_follow_the_table(client: TestClient, world: Json) -> None:
    task, _ = request(client, world, expert(world))
    # nothing but an answer is possible while requested
    for name in ("$start", "$sign", "$submit-opinion"):
        params = [text("opinion", "x")] if name == "$submit-opinion" else []
        assert "not allowed" in refused(op(client, f"Task/{task}/{name}", *params))
    assert "not allowed" in refused(op(client, f"Task/{task}/$schedule",
                                       text("start", "2030-01-01T09:00:00Z"),
                                       text("end", "2030-01-01T09:30:00Z")))  # fmt: skip
    # an expert who was not invited cannot answer
    stranger = role(client, world["hospital"], "孙")
    refused(op(client, f"Task/{task}/$accept", ref("expert", stranger)), 422)
    # decline needs a reason
    refused(op(client, f"Task/{task}/$decline", expert(world)), 400)
    ok(op(client, f"Task/{task}/$accept", expert(world)))
    # the same expert cannot answer twice
    assert "already accepted" in refused(op(client, f"Task/{task}/$accept", expert(world)))
    ok(op(client, f"Task/{task}/$cancel", text("reason", "患者已转院")))
    for name in ("$accept", "$schedule", "$start", "$cancel"):
        params = [text("reason", "x")] if name == "$cancel" else []
        refused(op(client, f"Task/{task}/{name}", *params))
    assert activities(client, task) == ["request", "accept", "cancel"]
    # a consultation needs its category and an expert
    body = request_body(world)
    body["category"] = body["category"][:1]
    refused(op(client, "ServiceRequest/$request-consultation",
               {"name": "request", "resource": body}, expert(world)), 422)  # fmt: skip
    refused(op(client, "ServiceRequest/$request-consultation",
               {"name": "request", "resource": request_body(world)}), 422)  # fmt: skip


def test_decline_of_the_only_expert_declines_and_frees_the_slot(
    client: TestClient, world: Json
) -> None:
    slot = new_slot(client, world)
    task, answer = request(client, world, expert(world), ref("slot", slot))
    assert of(answer, "Appointment")[0]["status"] == "booked"
    assert get(client, slot)["status"] == "busy"
    declined = ok(
        op(
            client,
            f"Task/{task}/$decline",
            expert(world),
            {
                "name": "reason",
                "valueCoding": {
                    "system": f"{CS}yl-consultation-decline-reason",
                    "code": "unavailable",
                },
            },
        )
    )
    t = declined["entry"][0]["resource"]
    assert business(t) == ("rejected", "declined")
    assert t["statusReason"]["coding"][0]["code"] == "unavailable"
    assert get(client, slot)["status"] == "free"
    sr = get(client, t["focus"]["reference"])
    assert sr["status"] == "revoked"
    assert of(declined, "AppointmentResponse")[0]["participantStatus"] == "declined"


def test_direct_booking_is_scheduled_on_acceptance(client: TestClient, world: Json) -> None:
    slot = new_slot(client, world)
    task, _ = request(client, world, expert(world), ref("slot", slot))
    accepted = ok(op(client, f"Task/{task}/$accept", expert(world)))
    assert business(accepted["entry"][0]["resource"]) == ("ready", "scheduled")
    assert activities(client, task) == ["request", "accept", "schedule"]


def test_team_invitation_redirect_and_partial_decline(client: TestClient, world: Json) -> None:
    """An MDT: the team's three experts are invited; one declines (the consultation stays
    requested), one redirects to a fourth expert, the fourth accepts: accepted, and every
    answer is an AppointmentResponse."""
    e = world["experts"]
    team = create(client, {
        "resourceType": "CareTeam", "status": "active", "name": "胸痛中心 MDT",
        "category": [{"coding": [{"system": f"{CS}yl-careteam-type", "code": "collaboration"}]}],
        "participant": [{"role": [{"coding": [{"system": f"{CS}yl-collaboration-role",
                                               "code": "upper-specialist"}]}],
                         "member": {"reference": r}} for r in e],
        "managingOrganization": [{"reference": world["hospital"]}],
    })  # fmt: skip
    task, answer = request(client, world, ref("team", f"CareTeam/{team['id']}"), kind="mdt")
    appointment = of(answer, "Appointment")[0]
    assert [p["actor"]["reference"] for p in appointment["participant"]] == [
        world["doctor"], *e, world["patient"]]  # fmt: skip
    assert of(answer, "ServiceRequest")[0]["performer"][-1] == {
        "reference": f"CareTeam/{team['id']}"
    }
    one = ok(op(client, f"Task/{task}/$decline", expert(world, 1), text("reason", "出差")))
    # no transition: the answer holds what changed, the Appointment and the response
    assert [e["resource"]["resourceType"] for e in one["entry"]] == [
        "Appointment",
        "AppointmentResponse",
    ]
    assert business(get(client, f"Task/{task}")) == ("requested", "requested")
    fourth = role(client, world["hospital"], "周")
    two = ok(op(client, f"Task/{task}/$decline", expert(world, 0), text("reason", "非本专业"),
                ref("redirectTo", fourth)))  # fmt: skip
    t = two["entry"][0]["resource"]
    assert business(t) == ("requested", "redirected")
    assert t["owner"] == {"reference": fourth}
    refused(op(client, f"Task/{task}/$decline", expert(world, 2), text("reason", "x"),
               ref("redirectTo", fourth)))  # already invited  # fmt: skip
    three = ok(op(client, f"Task/{task}/$accept", ref("expert", fourth)))
    assert business(three["entry"][0]["resource"]) == ("accepted", "accepted")
    # the third expert of the team joins the accepted consultation without a transition
    ok(op(client, f"Task/{task}/$accept", expert(world, 2)))
    statuses = {p["actor"]["reference"]: p["status"]
                for p in appointment_of(client, t)["participant"]}  # fmt: skip
    assert statuses == {world["doctor"]: "accepted", e[0]: "declined", e[1]: "declined",
                        e[2]: "accepted", fourth: "accepted",
                        world["patient"]: "accepted"}  # fmt: skip
    responses = client.get(f"/fhir/AppointmentResponse?appointment=Appointment/"
                           f"{appointment['id']}").json()  # fmt: skip
    assert responses["total"] == 4
    assert activities(client, task) == ["request", "redirect", "accept"]


def test_propose_time_moves_a_scheduled_session_back(client: TestClient, world: Json) -> None:
    slot = new_slot(client, world)
    task, _ = request(client, world, expert(world), ref("slot", slot))
    # before answering: a proposal only (no transition, the Task keeps its version)
    version = get(client, f"Task/{task}")["meta"]["versionId"]
    early = ok(op(client, f"Task/{task}/$propose-time", expert(world),
                  text("start", "2030-02-01T01:00:00Z"), text("end", "2030-02-01T01:30:00Z")))
    assert [e["resource"]["resourceType"] for e in early["entry"]] == [
        "Appointment", "AppointmentResponse"]
    assert get(client, f"Task/{task}")["meta"]["versionId"] == version
    ok(op(client, f"Task/{task}/$accept", expert(world)))
    proposed = ok(op(client, f"Task/{task}/$propose-time", expert(world),
                     text("start", "2030-03-01T01:00:00Z"), text("end", "2030-03-01T01:30:00Z"),
                     text("comment", "周五上午更方便")))  # fmt: skip
    assert business(proposed["entry"][0]["resource"]) == ("accepted", "accepted")
    (response,) = of(proposed, "AppointmentResponse")
    assert response["participantStatus"] == "tentative"
    assert response["start"] == "2030-03-01T01:00:00Z"
    assert get(client, slot)["status"] == "free"
    scheduled = ok(op(client, f"Task/{task}/$schedule", text("start", "2030-03-01T01:00:00Z"),
                      text("end", "2030-03-01T01:30:00Z")))  # fmt: skip
    assert business(scheduled["entry"][0]["resource"]) == ("ready", "scheduled")
    refused(op(client, f"Task/{task}/$propose-time", expert(world), text("start", "x"),
               text("end", "y")), 400)  # fmt: skip


def test_double_booking_of_an_expert_is_refused(client: TestClient, world: Json) -> None:
    slot = new_slot(client, world)
    first, _ = request(client, world, expert(world), ref("slot", slot))
    # the same Slot again
    assert "not free" in refused(op(client, "ServiceRequest/$request-consultation",
                                    {"name": "request", "resource": request_body(world)},
                                    expert(world), ref("slot", slot)))  # fmt: skip
    # the same time by start/end: the expert holds a booked Appointment then
    second, _ = request(client, world, expert(world))
    ok(op(client, f"Task/{second}/$accept", expert(world)))
    booked = get(client, slot)
    clash = refused(op(client, f"Task/{second}/$schedule", text("start", booked["start"]),
                       text("end", booked["end"])))  # fmt: skip
    assert "already booked" in clash
    # a Slot of someone not invited
    other = create(
        client, {"resourceType": "Schedule", "actor": [{"reference": world["experts"][1]}]}
    )
    foreign = new_slot(client, world, schedule=f"Schedule/{other['id']}")
    refused(op(client, f"Task/{second}/$schedule", ref("slot", foreign)), 422)
    assert business(get(client, f"Task/{second}")) == ("accepted", "accepted")


def test_if_match_and_plain_writes_are_checked(client: TestClient, world: Json) -> None:
    task_id, _ = request(client, world, expert(world))
    task = get(client, f"Task/{task_id}")
    stale = f'W/"{int(task["meta"]["versionId"]) + 1}"'
    refused(op(client, f"Task/{task_id}/$accept", expert(world), headers={"If-Match": stale}), 412)
    current = f'W/"{task["meta"]["versionId"]}"'
    ok(op(client, f"Task/{task_id}/$accept", expert(world), headers={"If-Match": current}))
    task = get(client, f"Task/{task_id}")
    # a jump the table does not have: accepted -> completed
    jump = {**task, "status": "completed",
            "businessStatus": {"coding": [{"system": f"{CS}yl-consultation-business-status",
                                           "code": "completed"}]}}  # fmt: skip
    assert "may not move" in refused(client.put(f"/fhir/Task/{task_id}", json=jump))
    # a row of the table (C10 cancel) by PUT: allowed, with its Provenance
    cancel = {**task, "status": "cancelled",
              "businessStatus": {"coding": [{"system": f"{CS}yl-consultation-business-status",
                                             "code": "cancelled"}]}}  # fmt: skip
    assert client.put(f"/fhir/Task/{task_id}", json=cancel).status_code == 200
    assert activities(client, task_id)[-1] == "cancel"
    # PATCH back to accepted: no row
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    r = client.patch(
        f"/fhir/Task/{task_id}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    refused(r)
    assert refused(client.delete(f"/fhir/Task/{task_id}")).startswith("A consultation Task")
    # created by POST only as requested
    created = {k: v for k, v in task.items() if k not in ("id", "meta")}
    refused(client.post("/fhir/Task", json=created))


def test_unanswered_requests_expire_by_their_urgency(client: TestClient, world: Json) -> None:
    """stat (急会诊) is due after 30 minutes, urgent after 240, routine after 2880
    (consultation_response_minutes): at +31 minutes only the stat one expires; at +241 the
    urgent one too; the routine one is still open; an accepted one never expires."""
    from fhir_server.consultation.sweep import sweep

    stat, _ = request(client, world, expert(world), priority="stat")
    urgent, _ = request(client, world, expert(world), priority="urgent")
    routine, _ = request(client, world, expert(world))
    answered, _ = request(client, world, expert(world), priority="stat")
    ok(op(client, f"Task/{answered}/$accept", expert(world)))
    services = client.app.state.services  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    assert sweep(services, now + timedelta(minutes=31)) == [f"expire Task/{stat}"]
    assert sweep(services, now + timedelta(minutes=241)) == [f"expire Task/{urgent}"]
    assert business(get(client, f"Task/{stat}")) == ("cancelled", "expired")
    assert business(get(client, f"Task/{routine}")) == ("requested", "requested")
    sr = get(client, get(client, f"Task/{stat}")["focus"]["reference"])
    assert sr["status"] == "revoked"
    assert activities(client, stat) == ["request", "expire"]


def test_a_malformed_deadline_setting_fails_at_start_up() -> None:
    from fhir_server.consultation.operations import deadline_minutes, deadlines

    with pytest.raises(ValueError, match="priority=minutes"):
        deadlines("routine=2880,soon=5")
    with pytest.raises(ValueError, match="routine"):
        deadlines("urgent=5")
    assert deadline_minutes("routine=100,urgent=10", "asap") == 10
    assert deadline_minutes("routine=100,urgent=10", "stat") == 100
