"""Plain REST writes of a consultation's ServiceRequest, Appointment and booked Slot
(fhir_server/consultation/guard.py, referral/booking_guard.py), with real tokens over HTTP in
the demo consortium: the operations keep them in step with the Task, so a PUT, PATCH or DELETE
that would move a status, re-time or re-book the session, change its parties or delete them is
409 with an OperationOutcome naming the operation to use; what the workflow does not decide (a
note, a comment) may still be written. As the referral guards do for referral Tasks
(tests/test_referral_guards.py) and a referral's Appointment and Slot
(tests/test_referral_booking_guards.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of
from test_policy_consortium import APP, login
from test_policy_owner import get, put

from fhir_server.app import build_app, load_demo
from fhir_server.auth import admin
from fhir_server.services import Parts

CS = "https://yilian.health/fhir/CodeSystem/"
SNOMED = "http://snomed.info/sct"
#: a free Slot of the demo's expert-1 (hz-first): the demo books only the 9 o'clock ones
SLOT = "slot-expert-1-6-14"
CATEGORY = [
    {"coding": [{"system": SNOMED, "code": "11429006"}]},
    {"coding": [{"system": f"{CS}yl-consultation-type", "code": "single-expert"}]},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[dict[str, Any]]:
    """The demo consortium; users inviting (the community doctor of pat-001, hubin-chc) and
    expert (expert-1 of hz-first, who owns SLOT)."""
    services = make_services(tmp_path_factory.mktemp("guards") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        load_demo(services)
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "inviting", PASSWORD, "PractitionerRole/role-hubin-chc-dr1")
        admin.add_user(store, "expert", PASSWORD, "PractitionerRole/role-expert-1")
        yield {"c": c, "inviting": login(c, "inviting"), "expert": login(c, "expert")}


def request(**more: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
            "category": CATEGORY, "code": {"text": "胸痛待查"},
            "subject": {"reference": "Patient/pat-001"},
            "requester": {"reference": "PractitionerRole/role-hubin-chc-dr1"}, **more}  # fmt: skip


def consult(inviting: TestClient, slot: str | None = SLOT) -> dict[str, Any]:
    """A consultation asked of expert-1, booked in `slot`: its Task, ServiceRequest,
    Appointment by resource type."""
    expert = {"reference": "PractitionerRole/role-expert-1"}
    params = [{"name": "request", "resource": request()},
              {"name": "expert", "valueReference": expert}]  # fmt: skip
    if slot:
        params.append({"name": "slot", "valueReference": {"reference": f"Slot/{slot}"}})
    r = inviting.post("/fhir/ServiceRequest/$request-consultation",
                      json={"resourceType": "Parameters", "parameter": params})  # fmt: skip
    assert r.status_code == 201, r.text
    return {e["resource"]["resourceType"]: e["resource"] for e in r.json()["entry"]}


@pytest.fixture(scope="module")
def booked(world: dict[str, Any]) -> dict[str, Any]:
    return consult(world["inviting"])


def conflict(r: Any, expression: str, operation: str) -> None:
    """409 business-rule naming the element and the operation to use instead."""
    assert r.status_code == 409, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and issue["expression"] == [expression], issue
    assert operation in issue["diagnostics"], issue["diagnostics"]


def appointment(slot: dict[str, Any]) -> dict[str, Any]:
    """An ordinary Appointment of pat-001 with expert-1 in `slot` (no consultation's)."""
    return {"resourceType": "Appointment", "status": "booked",
            "start": slot["start"], "end": slot["end"],
            "slot": [{"reference": f"Slot/{slot['id']}"}],
            "participant": [{"actor": {"reference": "PractitionerRole/role-expert-1"},
                             "status": "accepted"},
                            {"actor": {"reference": "Patient/pat-001"},
                             "status": "accepted"}]}  # fmt: skip


# --- the ServiceRequest --------------------------------------------------------------------------


def test_a_sent_consultations_request_keeps_its_status_and_parties(
    world: dict[str, Any], booked: dict[str, Any]
) -> None:
    inviting = world["inviting"]
    sr = get(inviting, f"ServiceRequest/{booked['ServiceRequest']['id']}")
    assert sr["status"] == "active"
    conflict(put(inviting, {**sr, "status": "revoked"}), "ServiceRequest.status", "Task/$cancel")
    conflict(put(inviting, {**sr, "status": "completed"}), "ServiceRequest.status", "Task/$sign")
    other = [{"reference": "PractitionerRole/role-expert-5"}]
    conflict(put(inviting, {**sr, "performer": other}), "ServiceRequest.performer",
             "Task/$decline")  # fmt: skip
    conflict(inviting.delete(f"/fhir/ServiceRequest/{sr['id']}"), "ServiceRequest",
             "Task/$cancel")  # fmt: skip
    r = inviting.patch(f"/fhir/ServiceRequest/{sr['id']}",
                       json=[{"op": "replace", "path": "/status", "value": "revoked"}],
                       headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    conflict(r, "ServiceRequest.status", "Task/$cancel")
    assert get(inviting, f"ServiceRequest/{sr['id']}")["status"] == "active"
    # what the workflow does not decide may change
    noted = put(inviting, {**sr, "note": [{"text": "患者已签署知情同意"}]})
    assert noted.status_code == 200, noted.text


def test_a_consultation_request_starts_as_a_draft_and_is_sent_by_its_operation(
    world: dict[str, Any],
) -> None:
    inviting = world["inviting"]
    conflict(inviting.post("/fhir/ServiceRequest", json=request(status="active")),
             "ServiceRequest.status", "$request-consultation")  # fmt: skip
    created = inviting.post("/fhir/ServiceRequest", json=request())
    assert created.status_code == 201, created.text
    draft = created.json()
    conflict(put(inviting, {**draft, "status": "active"}), "ServiceRequest.status",
             "$request-consultation")  # fmt: skip
    # a draft is the inviting doctor's to edit or withdraw
    assert put(inviting, {**draft, "priority": "urgent"}).status_code == 200
    assert inviting.delete(f"/fhir/ServiceRequest/{draft['id']}").status_code == 200


# --- the Appointment -----------------------------------------------------------------------------


def test_a_consultations_appointment_moves_only_by_the_operations(
    world: dict[str, Any], booked: dict[str, Any]
) -> None:
    inviting = world["inviting"]
    appointment = get(inviting, f"Appointment/{booked['Appointment']['id']}")
    assert appointment["status"] == "booked"
    conflict(put(inviting, {**appointment, "status": "cancelled"}), "Appointment.status",
             "$cancel")  # fmt: skip
    conflict(put(inviting, {**appointment, "start": "2031-05-01T01:00:00Z",
                            "end": "2031-05-01T01:30:00Z"}),
             "Appointment.start", "$schedule")  # fmt: skip
    conflict(put(inviting, {**appointment, "slot": [{"reference": "Slot/slot-expert-1-7-14"}]}),
             "Appointment.slot", "$schedule")  # fmt: skip
    answered = [dict(p, status="accepted") for p in appointment["participant"]]
    conflict(put(inviting, {**appointment, "participant": answered}), "Appointment.participant",
             "$accept")  # fmt: skip
    conflict(inviting.delete(f"/fhir/Appointment/{appointment['id']}"), "Appointment",
             "Task/$cancel")  # fmt: skip
    r = inviting.patch(f"/fhir/Appointment/{appointment['id']}",
                       json=[{"op": "replace", "path": "/status", "value": "noshow"}],
                       headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    conflict(r, "Appointment.status", "$cancel")
    assert get(inviting, f"Appointment/{appointment['id']}")["status"] == "booked"
    assert put(inviting, {**appointment, "comment": "请准备心电图"}).status_code == 200
    # a second Appointment for the same consultation is not made by hand
    second = {k: v for k, v in appointment.items() if k not in ("id", "meta", "slot")}
    conflict(inviting.post("/fhir/Appointment", json={**second, "status": "proposed"}),
             "Appointment.basedOn", "$request-consultation")  # fmt: skip


# --- the booked Slot -----------------------------------------------------------------------------


def test_the_booked_slot_is_freed_or_rebooked_only_by_the_operations(
    world: dict[str, Any], booked: dict[str, Any]
) -> None:
    expert = world["expert"]  # the Slot's owner (hz-first)
    slot = get(expert, f"Slot/{SLOT}")
    assert slot["status"] == "busy"
    conflict(put(expert, {**slot, "status": "free"}), "Slot.status", "$cancel")
    conflict(put(expert, {**slot, "start": "2031-05-01T01:00:00Z"}), "Slot.start", "$cancel")
    conflict(expert.delete(f"/fhir/Slot/{SLOT}"), "Slot", "$cancel")
    assert get(expert, f"Slot/{SLOT}")["status"] == "busy"
    assert put(expert, {**slot, "comment": "远程会诊"}).status_code == 200
    # another Appointment may not book the consultation's Slot
    clinic = appointment(slot)
    conflict(world["inviting"].post("/fhir/Appointment", json=clinic), "Appointment.slot[0]",
             "$cancel")  # fmt: skip


def test_once_cancelled_the_slot_is_free_to_write_again(world: dict[str, Any]) -> None:
    inviting, expert = world["inviting"], world["expert"]
    made = consult(inviting, "slot-expert-1-7-14")
    task = made["Task"]["id"]
    slot = get(expert, "Slot/slot-expert-1-7-14")
    conflict(put(expert, {**slot, "status": "free"}), "Slot.status", "$cancel")
    r = inviting.post(f"/fhir/Task/{task}/$cancel", json={"resourceType": "Parameters",
                      "parameter": [{"name": "reason", "valueString": "患者已出院"}]})  # fmt: skip
    assert r.status_code == 200, r.text
    slot = get(expert, "Slot/slot-expert-1-7-14")
    assert slot["status"] == "free"  # the operation freed it
    # no consultation holds it now: its owner may mark it busy (e.g. taken by a clinic)
    assert put(expert, {**slot, "status": "busy"}).status_code == 200
    appointment = get(inviting, f"Appointment/{made['Appointment']['id']}")
    assert appointment["status"] == "cancelled"
    conflict(put(inviting, {**appointment, "status": "noshow"}), "Appointment.status", "$cancel")


def test_a_plain_slot_and_a_plain_appointment_are_not_the_consultations_business(
    world: dict[str, Any],
) -> None:
    """An Appointment booking an ordinary busy Slot, and that Slot freed again, are left to
    the owner (referral and clinic bookings are written by plain REST too)."""
    expert = world["expert"]
    slot = get(expert, "Slot/slot-expert-1-5-14")
    assert put(expert, {**slot, "status": "busy"}).status_code == 200
    inviting = world["inviting"]
    made = inviting.post("/fhir/Appointment", json=appointment(slot))
    assert made.status_code == 201, made.text
    assert put(inviting, {**made.json(), "status": "cancelled"}).status_code == 200
    slot = get(expert, "Slot/slot-expert-1-5-14")
    assert put(expert, {**slot, "status": "free"}).status_code == 200
