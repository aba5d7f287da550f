"""The referral state machine over HTTP: transitions T1-T19, refusals, the consistency table,
Provenance, approval sub-tasks, follow-ups and the sweep (referral-model.md §2.5, §3.2)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from test_storage_contract import BACKENDS, open_backend

from fhir_server.referral.sweep import sweep
from fhir_server.referral.transitions import Table
from fhir_server.services import Parts
from fhir_server.terminology import Terminology

CANON = "https://yilian.health/fhir"
SD = f"{CANON}/StructureDefinition/"
CS = f"{CANON}/CodeSystem/"
BUSINESS = f"{CS}yl-referral-business-status"
Json = dict[str, Any]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """The workflow on every storage backend (test_storage_contract.py: SQLite, mongomock, a
    real MongoDB when FHIR_TEST_MONGODB_URL is set): its operations use only the contract."""
    c, close = open_backend(request.param, parts, tmp_path)
    c.backend = request.param  # type: ignore[attr-defined]
    yield c
    close()


# --- fixture data ---------------------------------------------------------------------------


def create(client: Any, resource: Json) -> Json:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def get(client: Any, reference: str) -> Json:
    r = client.get(f"/fhir/{reference}")
    assert r.status_code == 200, r.text
    return r.json()


def ref(name: str, reference: str) -> Json:
    return {"name": name, "valueReference": {"reference": reference}}


def coding_param(name: str, system: str, code: str) -> Json:
    return {"name": name, "valueCoding": {"system": system, "code": code}}


def op(client: Any, path: str, *params: Json, headers: dict[str, str] | None = None) -> Any:
    body = {"resourceType": "Parameters", "parameter": list(params)}
    return client.post(f"/fhir/{path}", json=body, headers=headers or {})


def ok(response: Any) -> Json:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    return bundle


def in_bundle(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def pair(task: Json) -> tuple[str, str]:
    return task["status"], task["businessStatus"]["coding"][0]["code"]


@pytest.fixture
def world(client: TestClient) -> Json:
    return build_world(client)


def build_world(client: Any) -> Json:
    """Sender and receiver organizations, doctors/coordinators/approvers, a patient, a
    schedule for booking and a bed."""
    sender = create(client, {"resourceType": "Organization", "name": "社区卫生服务中心"})
    receiver = create(client, {"resourceType": "Organization", "name": "市第一人民医院"})
    other = create(client, {"resourceType": "Organization", "name": "市第二人民医院"})
    doctor = create(client, {"resourceType": "Practitioner", "name": [{"family": "王"}]})
    sd = create(
        client,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": f"Practitioner/{doctor['id']}"},
            "organization": {"reference": f"Organization/{sender['id']}"},
        },
    )
    roles = [
        create(
            client,
            {
                "resourceType": "PractitionerRole",
                "organization": {"reference": f"Organization/{receiver['id']}"},
            },
        )
        for _ in range(3)
    ]
    patient = create(
        client, {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]}
    )
    schedule = create(
        client,
        {
            "resourceType": "Schedule",
            "actor": [{"reference": f"PractitionerRole/{roles[0]['id']}"}],
        },
    )
    bed = create(client, {"resourceType": "Location", "name": "心内科 12 床"})
    return {
        "sender": f"Organization/{sender['id']}",
        "receiver": f"Organization/{receiver['id']}",
        "other": f"Organization/{other['id']}",
        "sd": f"PractitionerRole/{sd['id']}",
        "rc": f"PractitionerRole/{roles[0]['id']}",
        "ra1": f"PractitionerRole/{roles[1]['id']}",
        "ra2": f"PractitionerRole/{roles[2]['id']}",
        "patient": f"Patient/{patient['id']}",
        "schedule": f"Schedule/{schedule['id']}",
        "bed": f"Location/{bed['id']}",
    }


def slot(client: TestClient, world: Json, start: datetime | None = None) -> str:
    start = start or datetime.now(UTC) + timedelta(days=2)
    created = create(
        client,
        {
            "resourceType": "Slot",
            "schedule": {"reference": world["schedule"]},
            "status": "free",
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return f"Slot/{created['id']}"


def referral(client: Any, world: Json, kind: str = "outpatient", way: str = "up") -> str:
    sr = create(client, service_request(world, kind, way))
    return f"ServiceRequest/{sr['id']}"


def service_request(world: Json, kind: str = "outpatient", way: str = "up") -> Json:
    return {
        "resourceType": "ServiceRequest",
        "meta": {"profile": [f"{SD}yl-referral-request"]},
        "extension": [
            {
                "url": f"{SD}yl-referral-direction",
                "valueCoding": {"system": f"{CS}yl-referral-direction", "code": way},
            }
        ],
        "status": "draft",
        "intent": "order",
        "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]},
            {"coding": [{"system": f"{CS}yl-referral-type", "code": kind}]},
        ],
        "priority": "routine",
        "code": {"text": "专科门诊" if kind == "outpatient" else "转诊"},
        "subject": {"reference": world["patient"]},
        "requester": {"reference": world["sd"]},
        "performer": [{"reference": world["receiver"] if way == "up" else world["sender"]}],
        "reasonCode": [{"text": "胸痛待查"}],
        "authoredOn": "2025-03-03T09:00:00+08:00",
    }


def submit(client: Any, sr: str, *params: Json) -> tuple[str, Json]:
    bundle = ok(op(client, f"{sr}/$submit", *params))
    task = bundle["entry"][0]["resource"]
    assert task["resourceType"] == "Task"
    return f"Task/{task['id']}", bundle


def output_ref(task: Json, name: str) -> str | None:
    for out in task.get("output") or []:
        if out["type"]["coding"][0]["code"] == name:
            return out["valueReference"]["reference"]
    return None


def activities(client: TestClient, task: str) -> list[str]:
    found = client.get(f"/fhir/Provenance?target={task}&_count=100").json()
    return sorted(e["resource"]["activity"]["coding"][0]["code"] for e in found.get("entry", []))


def milestones(task: Json) -> list[str]:
    out = []
    for ext in task.get("extension") or []:
        if ext["url"] == f"{SD}yl-milestones":
            out.append(ext["extension"][0]["valueCoding"]["code"])
    return out


REASON = coding_param("reason", f"{CS}yl-referral-rejection-reason", "no-capacity")
CANCEL = coding_param("reason", f"{CS}yl-referral-cancel-reason", "patient-request")


def booked(client: TestClient, world: Json) -> tuple[str, str, str]:
    """An outpatient referral booked at submission (T2): Task, SR, Slot."""
    sr = referral(client, world)
    free = slot(client, world)
    task, _ = submit(client, sr, ref("slot", free))
    return task, sr, free


def arrived(client: TestClient, world: Json) -> tuple[str, str, Json]:
    task, sr, _ = booked(client, world)
    bundle = ok(op(client, f"{task}/$check-in"))
    return task, sr, bundle


# --- the table as data ----------------------------------------------------------------------


def test_table_has_every_transition_and_pure_lookups() -> None:
    table = Table.load(Terminology.load([Path(__file__).resolve().parent.parent / "terminology"]))
    allowed, find_transition = table.allowed, table.find
    assert table.business_status["booked"] == "accepted"  # the CodeSystem's taskStatus
    TRANSITIONS = table.transitions
    assert {t.number for t in TRANSITIONS} == {f"T{n}" for n in range(1, 20)}
    assert allowed("accept", "received", "under-review").target == ("accepted", "approved")
    assert allowed("accept", "requested", "submitted", "booked").target == ("accepted", "booked")
    found = find_transition(("accepted", "booked"), ("in-progress", "arrived"))
    assert found is not None and found.number == "T13"
    assert find_transition(("requested", "submitted"), ("completed", "feedback-sent")) is None
    with pytest.raises(Exception) as exc:
        allowed("check-in", "requested", "submitted")
    assert getattr(exc.value, "status", None) == 409


# --- T1, T2, T3, T9: submission and booking -------------------------------------------------


def test_submit_creates_the_task_owned_by_the_target_and_activates_the_request(
    client: TestClient, world: Json
) -> None:
    sr = referral(client, world)
    task_ref, bundle = submit(client, sr)
    task = bundle["entry"][0]["resource"]
    assert pair(task) == ("requested", "submitted")
    assert task["owner"] == {"reference": world["receiver"]}
    assert task["focus"] == {"reference": sr} and task["requester"] == {"reference": world["sd"]}
    assert SD + "yl-referral-task" in task["meta"]["profile"]
    assert milestones(task) == ["submitted"]
    assert get(client, sr)["status"] == "active"
    assert {r["resourceType"] for r in (e["resource"] for e in bundle["entry"])} == {
        "Task",
        "ServiceRequest",
        "Provenance",
    }
    assert activities(client, task_ref) == ["submit"]
    # submitting again: the request is no longer a draft
    again = op(client, f"{sr}/$submit")
    assert again.status_code == 409
    assert again.json()["issue"][0]["code"] == "business-rule"


def test_referrals_submitted_together_get_numbers_of_their_own(
    client: TestClient, world: Json
) -> None:
    """The 转诊单号 (referral-number identifier) names one referral: the patient app and the
    check-in find a referral by it, so three submitted within a second differ."""
    numbers = set()
    for _ in range(3):
        sr = referral(client, world)
        submit(client, sr)
        [number] = [i["value"] for i in get(client, sr)["identifier"]
                    if i["system"].endswith("/sid/referral-number")]  # fmt: skip
        assert number.startswith("ZZ")
        numbers.add(number)
    assert len(numbers) == 3


def test_submit_with_slot_books_directly(client: TestClient, world: Json) -> None:
    task_ref, sr, free = booked(client, world)
    task = get(client, task_ref)
    assert pair(task) == ("accepted", "booked")
    appointment = get(client, output_ref(task, "appointment") or "")
    assert appointment["status"] == "booked"
    assert appointment["basedOn"] == [{"reference": sr}]
    assert appointment["slot"] == [{"reference": free}]
    assert get(client, free)["status"] == "busy"
    assert get(client, sr)["status"] == "active"
    assert activities(client, task_ref) == ["submit-booked"]
    assert milestones(task) == ["submitted", "booked"]


def test_busy_slot_and_inpatient_slot_are_refused(client: TestClient, world: Json) -> None:
    _, _, taken = booked(client, world)
    sr = referral(client, world)
    r = op(client, f"{sr}/$submit", ref("slot", taken))
    assert r.status_code == 409
    assert get(client, sr)["status"] == "draft"
    inpatient = referral(client, world, "inpatient")
    r = op(client, f"{inpatient}/$submit", ref("slot", slot(client, world)))
    assert r.status_code == 409


def test_booking_pending_review_is_confirmed_by_accept(client: TestClient, world: Json) -> None:
    sr = referral(client, world)
    task, _ = submit(
        client,
        sr,
        ref("slot", slot(client, world)),
        {"name": "pendingReview", "valueBoolean": True},
    )
    assert pair(get(client, task)) == ("accepted", "booked-pending-review")
    ok(op(client, f"{task}/$accept"))
    assert pair(get(client, task)) == ("accepted", "booked")
    assert activities(client, task) == ["confirm-booking", "submit-booked"]
    # booked once, at submission; the review is the receiving hospital's decision
    # (referral-model.md T9 by RD; yl-milestone decided: "accepted or rejected by the receiver")
    assert milestones(get(client, task)) == ["submitted", "booked", "decided"]
    # the statistics still date the decision at the booking (the earliest decided or booked,
    # ServiceRequest/$referral-stats): booked at submission, 0 hours
    found = client.get("/fhir/ServiceRequest/$referral-stats").json()
    up = next(p for p in found["parameter"] if p["name"] == "up")
    median = [p["valueDecimal"] for p in up["part"] if p["name"] == "medianHoursToDecision"]
    assert median == [0]


def test_claim_then_claim_again_is_refused_and_changes_nothing(
    client: TestClient, world: Json
) -> None:
    task, _ = submit(client, referral(client, world))
    bundle = ok(op(client, f"{task}/$claim", ref("owner", world["rc"])))
    claimed = bundle["entry"][0]["resource"]
    assert pair(claimed) == ("received", "received")
    assert claimed["owner"] == {"reference": world["rc"]}
    version = claimed["meta"]["versionId"]
    r = op(client, f"{task}/$claim")
    assert r.status_code == 409
    assert r.json()["issue"][0]["code"] == "business-rule"
    assert get(client, task)["meta"]["versionId"] == version


# --- T5, T6, T7, T10: deciding --------------------------------------------------------------


def test_request_and_provide_info(client: TestClient, world: Json) -> None:
    task, _ = submit(client, referral(client, world))
    ok(op(client, f"{task}/$claim"))
    bundle = ok(op(client, f"{task}/$request-info", {"name": "question", "valueString": "ECG?"}))
    assert pair(bundle["entry"][0]["resource"]) == ("received", "info-requested")
    assert in_bundle(bundle, "Communication")[0]["payload"][0]["contentString"] == "ECG?"
    doc = create(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "RUNH"}}],
        },
    )
    bundle = ok(
        op(
            client,
            f"{task}/$provide-info",
            {"name": "answer", "valueString": "attached"},
            ref("attachments", f"DocumentReference/{doc['id']}"),
        )
    )
    assert pair(bundle["entry"][0]["resource"]) == ("received", "received")
    sr = in_bundle(bundle, "ServiceRequest")[0]
    assert sr["supportingInfo"] == [{"reference": f"DocumentReference/{doc['id']}"}]
    assert activities(client, task) == ["claim", "provide-info", "request-info", "submit"]


def test_outpatient_accept_books_the_slot(client: TestClient, world: Json) -> None:
    sr = referral(client, world)
    task, _ = submit(client, sr)
    free = slot(client, world)
    r = op(client, f"{task}/$accept")
    assert r.status_code == 409  # an outpatient referral is accepted by booking it
    bundle = ok(op(client, f"{task}/$accept", ref("slot", free)))
    assert pair(bundle["entry"][0]["resource"]) == ("accepted", "booked")
    assert in_bundle(bundle, "Appointment")[0]["status"] == "booked"
    assert get(client, free)["status"] == "busy"


def test_reject_after_booking_cancels_the_appointment_and_frees_the_slot(
    client: TestClient, world: Json
) -> None:
    task, sr, free = booked(client, world)
    r = op(client, f"{task}/$reject")
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "required"
    bundle = ok(op(client, f"{task}/$reject", REASON))
    rejected = bundle["entry"][0]["resource"]
    assert pair(rejected) == ("rejected", "rejected")
    assert rejected["statusReason"]["coding"][0]["code"] == "no-capacity"
    appointment = in_bundle(bundle, "Appointment")[0]
    assert appointment["status"] == "cancelled" and appointment["cancelationReason"]
    assert get(client, free)["status"] == "free"
    assert get(client, sr)["status"] == "active"  # the sender may re-route
    assert "reject" in activities(client, task)


def test_reject_with_suggested_organization_redirects(client: TestClient, world: Json) -> None:
    task, _ = submit(client, referral(client, world))
    bundle = ok(op(client, f"{task}/$reject", REASON, ref("suggestedOrganization", world["other"])))
    task_json = bundle["entry"][0]["resource"]
    assert pair(task_json) == ("rejected", "redirected")
    assert output_ref(task_json, "suggestedOrganization") == world["other"]
    assert op(client, f"{task}/$accept", ref("slot", slot(client, world))).status_code == 409


# --- T4, T7, T8, T14 (admitted), T16: inpatient with approval ------------------------------


def test_inpatient_approval_flow(client: TestClient, world: Json) -> None:
    sr = referral(client, world, "inpatient")
    task, _ = submit(client, sr)
    bundle = ok(
        op(client, f"{task}/$claim", ref("approver", world["ra1"]), ref("approver", world["ra2"]))
    )
    assert pair(bundle["entry"][0]["resource"]) == ("received", "under-review")
    subs = in_bundle(bundle, "Task")[1:]
    assert len(subs) == 2
    assert all(s["code"]["coding"][0]["code"] == "approve" for s in subs)
    assert all(s["partOf"] == [{"reference": task}] for s in subs)
    # the parent cannot be accepted while approvals are open
    assert op(client, f"{task}/$accept").status_code == 409
    first = ok(op(client, f"Task/{subs[0]['id']}/$accept"))
    assert first["entry"][0]["resource"]["status"] == "accepted"
    assert pair(get(client, task)) == ("received", "under-review")
    second = ok(op(client, f"Task/{subs[1]['id']}/$accept"))
    assert second["entry"][0]["resource"]["id"] == subs[1]["id"]
    assert pair(get(client, task)) == ("accepted", "approved")
    # T8: bed and planned admission
    bundle = ok(
        op(
            client,
            f"{task}/$accept",
            ref("bed", world["bed"]),
            {"name": "plannedAdmission", "valueDateTime": "2025-03-10T08:00:00+08:00"},
        )
    )
    bedded = bundle["entry"][0]["resource"]
    assert pair(bedded) == ("accepted", "bed-assigned")
    assert output_ref(bedded, "bed") == world["bed"]
    # T13 on admission, T14 admitted, T16 discharge summary
    bundle = ok(op(client, f"{task}/$check-in"))
    encounter = in_bundle(bundle, "Encounter")[0]
    assert encounter["class"]["code"] == "IMP" and encounter["status"] == "arrived"
    bundle = ok(op(client, f"{task}/$start-treatment"))
    assert pair(bundle["entry"][0]["resource"]) == ("in-progress", "admitted")
    assert in_bundle(bundle, "Encounter")[0]["status"] == "in-progress"
    summary = create(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "RUNH"}}],
        },
    )
    bundle = ok(
        op(
            client,
            f"{task}/$complete",
            ref("feedbackDocument", f"DocumentReference/{summary['id']}"),
        )
    )
    assert pair(bundle["entry"][0]["resource"]) == ("completed", "feedback-sent")
    assert get(client, sr)["status"] == "completed"
    assert get(client, f"Encounter/{encounter['id']}")["status"] == "finished"
    assert activities(client, task) == [
        "accept",  # the last approval (targets the parent too)
        "accept",  # T7 by the system
        "assign-bed",
        "check-in",
        "complete",
        "review",
        "start-treatment",
        "submit",
    ]


def test_denied_approval_rejects_the_referral(client: TestClient, world: Json) -> None:
    task, _ = submit(client, referral(client, world, "inpatient"))
    bundle = ok(
        op(
            client,
            f"{task}/$claim",
            ref("owner", world["rc"]),
            ref("approver", world["ra1"]),
            ref("approver", world["ra2"]),
        )
    )
    subs = in_bundle(bundle, "Task")[1:]
    ok(op(client, f"Task/{subs[0]['id']}/$reject", REASON))
    parent = get(client, task)
    assert pair(parent) == ("rejected", "rejected")
    assert parent["statusReason"]["coding"][0]["code"] == "approval-denied"
    assert get(client, f"Task/{subs[1]['id']}")["status"] == "cancelled"


# --- T11, T12, T15, T19: ending without treatment -------------------------------------------


def test_cancel_needs_a_reason_and_revokes_everything(client: TestClient, world: Json) -> None:
    task, sr, free = booked(client, world)
    r = op(client, f"{task}/$cancel")
    assert r.status_code == 400
    assert get(client, task)["meta"]["versionId"] == "1"
    bundle = ok(op(client, f"{task}/$cancel", CANCEL))
    assert pair(bundle["entry"][0]["resource"]) == ("cancelled", "withdrawn")
    request = get(client, sr)
    assert request["status"] == "revoked"
    assert any(e["url"] == f"{SD}yl-status-reason" for e in request["extension"])
    appointment = in_bundle(bundle, "Appointment")[0]
    assert appointment["status"] == "cancelled"
    assert get(client, free)["status"] == "free"
    assert op(client, f"{task}/$check-in").status_code == 409


def test_sweep_expires_unhandled_referrals(client: TestClient, world: Json) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    task, _ = submit(client, referral(client, world))
    start = datetime.now(UTC)
    assert sweep(services, start + timedelta(hours=1)) == []
    changed = sweep(services, start + timedelta(hours=73))
    assert changed == [f"expire {task}"]
    expired = get(client, task)
    assert pair(expired) == ("cancelled", "expired")
    assert expired["statusReason"]["coding"][0]["code"] == "expired"
    sr = get(client, expired["focus"]["reference"])
    assert sr["status"] == "revoked"
    assert activities(client, task) == ["expire", "submit"]
    assert sweep(services, start + timedelta(hours=200)) == []  # done once


def test_sweep_expires_past_validity(client: TestClient, world: Json) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    end = datetime.now(UTC) + timedelta(hours=2)
    task, _ = submit(
        client,
        referral(client, world),
        {"name": "validUntil", "valueDateTime": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    ok(op(client, f"{task}/$claim"))
    assert sweep(services, end - timedelta(minutes=5)) == []
    assert sweep(services, end + timedelta(minutes=5)) == [f"expire {task}"]
    assert pair(get(client, task)) == ("cancelled", "expired")


def test_sweep_command_line(
    client: TestClient, world: Json, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_server.cli import main

    if client.backend != "sqlite":  # type: ignore[attr-defined]
        pytest.skip("reopens the SQLite file of the fixture by its name")
    task, _ = submit(client, referral(client, world))
    later = (datetime.now(UTC) + timedelta(hours=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    database = str(client.app.state.services.settings.database)  # type: ignore[attr-defined]
    assert main(["sweep", "--database", database, "--now", later]) == 0
    assert capsys.readouterr().out.split() == ["expire", task]
    assert pair(get(client, task)) == ("cancelled", "expired")


def test_no_show_operation(client: TestClient, world: Json) -> None:
    task, sr, free = booked(client, world)
    bundle = ok(op(client, f"{task}/$no-show"))
    assert pair(bundle["entry"][0]["resource"]) == ("failed", "no-show")
    assert in_bundle(bundle, "Appointment")[0]["status"] == "noshow"
    assert get(client, free)["status"] == "free"
    assert get(client, sr)["status"] == "active"


def test_sweep_marks_no_show_after_grace(client: TestClient, world: Json) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    sr = referral(client, world)
    task, _ = submit(client, sr, ref("slot", slot(client, world, start)))
    assert sweep(services, start + timedelta(hours=23)) == []
    assert sweep(services, start + timedelta(hours=25)) == [f"no-show {task}"]
    failed = get(client, task)
    assert pair(failed) == ("failed", "no-show")
    assert get(client, output_ref(failed, "appointment") or "")["status"] == "noshow"


def test_enter_in_error(client: TestClient, world: Json) -> None:
    task, sr, free = booked(client, world)
    bundle = ok(op(client, f"{task}/$enter-in-error"))
    assert pair(bundle["entry"][0]["resource"]) == ("entered-in-error", "entered-in-error")
    assert get(client, sr)["status"] == "entered-in-error"
    assert in_bundle(bundle, "Appointment")[0]["status"] == "entered-in-error"
    assert get(client, free)["status"] == "free"
    assert activities(client, task) == ["enter-in-error", "submit-booked"]


# --- T13, T14, T16, T17, T18: the visit ----------------------------------------------------


def test_check_in_is_idempotent_and_consistent(client: TestClient, world: Json) -> None:
    task, sr, first = arrived(client, world)
    assert pair(first["entry"][0]["resource"]) == ("in-progress", "arrived")
    encounter = in_bundle(first, "Encounter")[0]
    assert encounter["status"] == "arrived" and encounter["basedOn"] == [{"reference": sr}]
    assert encounter["class"]["code"] == "AMB"
    assert in_bundle(first, "Appointment")[0]["status"] == "arrived"
    again = ok(op(client, f"{task}/$check-in"))
    assert in_bundle(again, "Encounter")[0]["id"] == encounter["id"]
    assert (
        again["entry"][0]["resource"]["meta"]["versionId"]
        == (first["entry"][0]["resource"]["meta"]["versionId"])
    )
    found = client.get(f"/fhir/Encounter?based-on={sr}").json()
    assert len(found["entry"]) == 1
    assert activities(client, task) == ["check-in", "submit-booked"]


def test_complete_outpatient_closes_the_loop(client: TestClient, world: Json) -> None:
    task, sr, bundle = arrived(client, world)
    encounter = in_bundle(bundle, "Encounter")[0]
    ok(op(client, f"{task}/$start-treatment"))
    assert pair(get(client, task)) == ("in-progress", "in-treatment")
    assert op(client, f"{task}/$complete").status_code == 400
    doc = create(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "RUNH"}}],
        },
    )
    done = ok(
        op(client, f"{task}/$complete", ref("feedbackDocument", f"DocumentReference/{doc['id']}"))
    )
    task_json = done["entry"][0]["resource"]
    assert pair(task_json) == ("completed", "feedback-sent")
    assert get(client, sr)["status"] == "completed"
    assert get(client, f"Encounter/{encounter['id']}")["status"] == "finished"
    assert get(client, output_ref(task_json, "appointment") or "")["status"] == "fulfilled"


def test_fail_needs_a_reason(client: TestClient, world: Json) -> None:
    task, sr, bundle = arrived(client, world)
    assert op(client, f"{task}/$fail").status_code == 400
    done = ok(op(client, f"{task}/$fail", {"name": "reason", "valueString": "patient left"}))
    assert pair(done["entry"][0]["resource"]) == ("failed", "treatment-aborted")
    assert get(client, sr)["status"] == "revoked"
    encounter = in_bundle(bundle, "Encounter")[0]
    assert get(client, f"Encounter/{encounter['id']}")["status"] == "finished"


def test_downward_referral_and_follow_ups(client: TestClient, world: Json) -> None:
    task, sr, _ = arrived(client, world)
    down = create(client, service_request(world, "rehabilitation", "down"))
    bundle = ok(
        op(client, f"{task}/$complete", ref("downwardReferral", f"ServiceRequest/{down['id']}"))
    )
    assert pair(bundle["entry"][0]["resource"]) == ("completed", "down-referred")
    assert get(client, sr)["status"] == "completed"
    assert get(client, f"ServiceRequest/{down['id']}")["status"] == "active"
    down_task = next(
        t
        for t in in_bundle(bundle, "Task")
        if t["focus"]["reference"] == f"ServiceRequest/{down['id']}"
    )
    assert pair(down_task) == ("requested", "submitted")
    assert down_task["owner"] == {"reference": world["sender"]}
    down_ref = f"Task/{down_task['id']}"
    ok(op(client, f"{down_ref}/$claim"))
    ok(op(client, f"{down_ref}/$accept"))
    assert pair(get(client, down_ref)) == ("accepted", "approved")
    ok(op(client, f"{down_ref}/$check-in"))
    doc = create(
        client,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "RUNH"}}],
        },
    )
    done = ok(
        op(
            client,
            f"{down_ref}/$complete",
            ref("feedbackDocument", f"DocumentReference/{doc['id']}"),
        )
    )
    completed = done["entry"][0]["resource"]
    follow_ups = [
        t for t in in_bundle(done, "Task") if t["code"]["coding"][0]["code"] == "follow-up"
    ]
    assert len(follow_ups) == 3
    at = datetime.fromisoformat(completed["lastModified"].replace("Z", "+00:00"))
    days = sorted(
        (datetime.fromisoformat(t["restriction"]["period"]["start"].replace("Z", "+00:00")) - at)
        for t in follow_ups
    )
    assert days == [timedelta(days=7), timedelta(days=30), timedelta(days=90)]
    assert all(t["status"] == "requested" and t["for"] == completed["for"] for t in follow_ups)


# --- plain PUT/PATCH, If-Match, concurrency -------------------------------------------------


def test_put_is_checked_against_the_table(client: TestClient, world: Json) -> None:
    task, _ = submit(client, referral(client, world))
    current = get(client, task)
    jump = {
        **current,
        "status": "completed",
        "businessStatus": {"coding": [{"system": BUSINESS, "code": "feedback-sent"}]},
    }
    r = client.put(f"/fhir/{task}", json=jump)
    assert r.status_code == 409, r.text
    assert r.json()["issue"][0]["code"] == "business-rule"
    assert get(client, task)["meta"]["versionId"] == current["meta"]["versionId"]
    # an unchanged pair is fine
    r = client.put(f"/fhir/{task}", json={**current, "description": "edited"})
    assert r.status_code == 200
    # a legal move (T3) is allowed by PUT too
    legal = {
        **current,
        "status": "received",
        "businessStatus": {"coding": [{"system": BUSINESS, "code": "received"}]},
    }
    assert client.put(f"/fhir/{task}", json=legal).status_code == 200
    # ... and recorded like the operation: a milestone on the Task and a Provenance
    moved = get(client, task)
    stamped = [
        part["valueCoding"]["code"]
        for ext in moved.get("extension", [])
        if ext["url"].endswith("yl-milestones")
        for part in ext["extension"]
        if part["url"] == "code"
    ]
    assert stamped[-1] == "received"
    trail = client.get(f"/fhir/Provenance?target={task}").json()
    activities = [e["resource"]["activity"]["coding"][0]["code"] for e in trail["entry"]]
    assert "claim" in activities
    patch = [
        {"op": "replace", "path": "/status", "value": "in-progress"},
        {"op": "replace", "path": "/businessStatus/coding/0/code", "value": "arrived"},
    ]
    r = client.patch(
        f"/fhir/{task}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 409, r.text
    assert pair(get(client, task)) == ("received", "received")


def test_stale_if_match_is_412(client: TestClient, world: Json) -> None:
    task, _ = submit(client, referral(client, world))
    r = op(client, f"{task}/$claim", headers={"If-Match": 'W/"7"'})
    assert r.status_code == 412
    assert pair(get(client, task)) == ("requested", "submitted")
    ok(op(client, f"{task}/$claim", headers={"If-Match": 'W/"1"'}))


def test_concurrent_decisions_exactly_one_wins(live_server: str) -> None:
    with httpx.Client(base_url=live_server.removesuffix("/fhir"), timeout=30) as c:
        sr = referral(c, build_world(c), "emergency")
        task, _ = submit(c, sr)

    def decide(n: int) -> int:
        with httpx.Client(timeout=30) as c:
            name = "$accept" if n % 2 else "$reject"
            params = [] if n % 2 else [REASON]
            body = {"resourceType": "Parameters", "parameter": params}
            return c.post(f"{live_server}/{task}/{name}", json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(decide, range(8)))
    assert statuses.count(200) == 1, statuses
    assert all(s in (409, 412) for s in statuses if s != 200)
    final = httpx.get(f"{live_server}/{task}").json()
    assert final["meta"]["versionId"] == "2"
    assert pair(final) in (("accepted", "approved"), ("rejected", "rejected"))


# --- the consistency table ------------------------------------------------------------------


def statuses(
    client: TestClient, task_ref: str
) -> tuple[str, str, str | None, str | None, str | None]:
    task = get(client, task_ref)
    sr = get(client, task["focus"]["reference"])["status"]
    appointment = output_ref(task, "appointment")
    encounter = output_ref(task, "encounter")
    appt = get(client, appointment) if appointment else None
    slot_status = get(client, appt["slot"][0]["reference"])["status"] if appt else None
    return (
        f"{task['status']}/{task['businessStatus']['coding'][0]['code']}",
        sr,
        appt["status"] if appt else None,
        slot_status,
        get(client, encounter)["status"] if encounter else None,
    )


def test_consistency_table(client: TestClient, world: Json) -> None:
    draft = referral(client, world)
    assert get(client, draft)["status"] == "draft"
    task, _ = submit(client, referral(client, world))
    assert statuses(client, task) == ("requested/submitted", "active", None, None, None)
    task, _, _ = booked(client, world)
    assert statuses(client, task) == ("accepted/booked", "active", "booked", "busy", None)
    ok(op(client, f"{task}/$check-in"))
    assert statuses(client, task) == ("in-progress/arrived", "active", "arrived", "busy", "arrived")
    ok(op(client, f"{task}/$start-treatment"))
    assert statuses(client, task)[4] == "in-progress"
    ok(op(client, f"{task}/$complete", ref("feedbackDocument", "DocumentReference/any")))
    assert statuses(client, task) == (
        "completed/feedback-sent",
        "completed",
        "fulfilled",
        "busy",
        "finished",
    )
    task, _, _ = booked(client, world)
    ok(op(client, f"{task}/$reject", REASON))
    assert statuses(client, task) == ("rejected/rejected", "active", "cancelled", "free", None)
    task, _, _ = booked(client, world)
    ok(op(client, f"{task}/$cancel", CANCEL))
    assert statuses(client, task) == ("cancelled/withdrawn", "revoked", "cancelled", "free", None)
    task, _, _ = booked(client, world)
    ok(op(client, f"{task}/$no-show"))
    assert statuses(client, task) == ("failed/no-show", "active", "noshow", "free", None)
    task, _, _ = booked(client, world)
    ok(op(client, f"{task}/$enter-in-error"))
    assert statuses(client, task) == (
        "entered-in-error/entered-in-error",
        "entered-in-error",
        "entered-in-error",
        "free",
        None,
    )
