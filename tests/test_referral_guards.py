"""Plain REST writes of referral resources keep to the referral rules (referral-model.md §2.5):
creating, deleting and re-creating referral Tasks, changing a referral ServiceRequest's status,
one open Task per referral; and the printed slip stays fast on hostile content. Each case was
a defect: the write went through and left the referral inconsistent."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from test_workflow import (
    CANCEL,
    CS,
    SD,
    booked,
    build_world,
    get,
    ok,
    op,
    pair,
    ref,
    referral,
    slot,
    submit,
)

Json = dict[str, Any]


def task_in(world: Json, sr: str, status: str, business: str) -> Json:
    return {
        "resourceType": "Task",
        "status": status,
        "businessStatus": {"coding": [{"system": f"{CS}yl-referral-business-status",
                                       "code": business}]},
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": sr},
        "basedOn": [{"reference": sr}],
        "for": {"reference": world["patient"]},
        "owner": {"reference": world["receiver"]},
    }  # fmt: skip


def revoked(sr: Json) -> Json:
    """The ServiceRequest revoked with the reason and number its profile asks for (yl-sr-2,
    yl-sr-6)."""
    reason = {"url": f"{SD}yl-status-reason", "valueCodeableConcept": {"text": "患者要求"}}
    number = {"system": "https://yilian.health/fhir/sid/referral-number", "value": "ZZ-2"}
    return {**sr, "status": "revoked", "extension": [*sr.get("extension", []), reason],
            "identifier": sr.get("identifier") or [number]}  # fmt: skip


def business_rule(response: Any) -> str:
    assert response.status_code == 409, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule"
    return str(issue["diagnostics"])


def test_a_task_cannot_be_created_straight_into_completed(client: TestClient) -> None:
    world = build_world(client)
    sr = referral(client, world)
    done = task_in(world, sr, "completed", "feedback-sent")
    business_rule(client.post("/fhir/Task", json=done))
    business_rule(client.put("/fhir/Task/made-up", json={**done, "id": "made-up"}))
    entry = {"resource": done, "request": {"method": "POST", "url": "Task"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert client.post("/fhir", json=bundle).status_code == 409
    assert client.get(f"/fhir/Task?focus={sr}").json().get("total", 0) == 0


def test_a_task_created_submitted_is_recorded_like_the_transition(client: TestClient) -> None:
    world = build_world(client)
    sr = referral(client, world)
    created = client.post("/fhir/Task", json=task_in(world, sr, "requested", "submitted"))
    assert created.status_code == 201, created.text
    task = f"Task/{created.json()['id']}"
    found = client.get(f"/fhir/Provenance?target={task}").json()
    assert [e["resource"]["activity"]["coding"][0]["code"] for e in found["entry"]] == ["submit"]


def test_a_booked_task_cannot_be_deleted_and_its_links_stay(client: TestClient) -> None:
    world = build_world(client)
    task, sr, free = booked(client, world)
    business_rule(client.delete(f"/fhir/{task}"))
    assert pair(get(client, task)) == ("accepted", "booked")
    assert get(client, free)["status"] == "busy" and get(client, sr)["status"] == "active"


def test_a_draft_task_may_be_deleted_but_not_recreated_completed(client: TestClient) -> None:
    world = build_world(client)
    sr = referral(client, world)
    draft = client.put("/fhir/Task/d1", json=task_in(world, sr, "draft", "drafted") | {"id": "d1"})
    assert draft.status_code == 201, draft.text
    assert client.delete("/fhir/Task/d1").status_code == 200
    again = {**task_in(world, sr, "completed", "feedback-sent"), "id": "d1"}
    business_rule(client.put("/fhir/Task/d1", json=again))
    assert client.get("/fhir/Task/d1").status_code == 410


def test_a_referral_has_at_most_one_open_task(client: TestClient) -> None:
    world = build_world(client)
    task, sr, _ = booked(client, world)
    second = task_in(world, sr, "draft", "drafted")
    assert "one referral, one Task" in business_rule(client.post("/fhir/Task", json=second))


def test_rerunning_the_readme_walk_cannot_reopen_a_finished_referral(client: TestClient) -> None:
    """The README's walk PUTs a draft copy over ServiceRequest/my-ref and submits it: run again
    after the referral finished, this turned it back into a draft and booked a second Slot."""
    world = build_world(client)
    task, sr, _ = booked(client, world)
    ok(op(client, f"{task}/$cancel", CANCEL))  # the referral ends (SR revoked)
    finished = get(client, sr)
    assert finished["status"] == "revoked"
    draft = {**finished, "status": "draft"}
    business_rule(client.put(f"/fhir/{sr}", json=draft))
    patch = [{"op": "replace", "path": "/status", "value": "draft"}]
    json_patch = {"Content-Type": "application/json-patch+json"}
    business_rule(client.patch(f"/fhir/{sr}", json=patch, headers=json_patch))
    second = slot(client, world)
    business_rule(op(client, f"{sr}/$submit", ref("slot", second)))
    assert get(client, second)["status"] == "free"
    tasks = client.get(f"/fhir/Task?focus={sr}").json()
    assert tasks["total"] == 1


def test_a_referral_request_moves_only_as_the_operations_move_it(client: TestClient) -> None:
    world = build_world(client)
    sr = referral(client, world)
    active = client.get(f"/fhir/{sr}").json()
    number = {"system": "https://yilian.health/fhir/sid/referral-number", "value": "ZZ-1"}
    completed = {**active, "status": "completed", "identifier": [number]}
    business_rule(client.put(f"/fhir/{sr}", json=completed))  # draft -> completed
    created = {**completed, "id": "sr-done"}
    business_rule(client.put("/fhir/ServiceRequest/sr-done", json=created))
    # what a client may do by itself: edit a draft, withdraw a draft, delete a draft
    assert client.put(f"/fhir/{sr}", json={**active, "priority": "urgent"}).status_code == 200
    task, submitted = submit(client, sr)
    live = get(client, sr)
    business_rule(client.delete(f"/fhir/{sr}"))
    business_rule(client.put(f"/fhir/{sr}", json=revoked(live)))
    assert get(client, task)["status"] == "requested"
    other = referral(client, world)
    assert client.put(f"/fhir/{other}", json=revoked(get(client, other))).status_code == 200


def test_plain_service_requests_and_tasks_are_not_referral_business(client: TestClient) -> None:
    plain = {"resourceType": "ServiceRequest", "status": "completed", "intent": "order",
             "subject": {"reference": "Patient/x"}}  # fmt: skip
    made = client.post("/fhir/ServiceRequest", json=plain)
    assert made.status_code == 201
    rid = made.json()["id"]
    assert client.put(f"/fhir/ServiceRequest/{rid}",
                      json={**plain, "id": rid, "status": "draft"}).status_code == 200  # fmt: skip
    task = {"resourceType": "Task", "status": "completed", "intent": "order"}
    assert client.post("/fhir/Task", json=task).status_code == 201


def test_the_slip_prints_a_huge_name_and_thousands_of_lines_quickly(client: TestClient) -> None:
    world = build_world(client)
    patient = get(client, world["patient"])
    patient["name"] = [{"text": "张" * 5000, "family": "张", "given": ["三" * 4999]}]
    assert client.put(f"/fhir/{world['patient']}", json=patient).status_code == 200
    sr = get(client, referral(client, world))
    sr["note"] = [{"text": "胸痛\n" * 20000}]
    assert client.put(f"/fhir/ServiceRequest/{sr['id']}", json=sr).status_code == 200
    started = time.perf_counter()
    pdf = client.get(f"/fhir/ServiceRequest/{sr['id']}/$referral-slip?format=pdf")
    html = client.get(f"/fhir/ServiceRequest/{sr['id']}/$referral-slip")
    elapsed = time.perf_counter() - started
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert html.status_code == 200 and "未打印" in html.text  # the cut is said, not silent
    assert elapsed < 20  # was minutes (quadratic) or a 500 (LayoutError)
