"""Plain REST writes of a referral's Appointment and the Slot it holds
(fhir_server/referral/booking_guard.py, as for a consultation's: test_consultation_guards.py):
the operations book, check in, end and free them in step with the Task (referral-model.md §2.5
consistency table), so a PUT, PATCH or DELETE that would move the Appointment's status, re-time
it, re-book or free its Slot, delete them, or book that Slot into another Appointment is 409
with an OperationOutcome naming the element and the operation to use; a comment may still be
written. Each case was a defect: the write went through and left the Task and Slot
inconsistent (a hospital user cancelled the booking by PUT, or double-booked the Slot)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from test_consultation_guards import (
    conflict,
    put,
    world,  # noqa: F401  (the demo consortium, real tokens)
)
from test_workflow import (
    CANCEL,
    CS,
    booked,
    build_world,
    get,
    in_bundle,
    ok,
    op,
    output_ref,
    pair,
    ref,
    referral,
    service_request,
    slot,
    submit,
)

Json = dict[str, Any]
PATCH = {"Content-Type": "application/json-patch+json"}


def appointment_of(client: TestClient, task: str) -> Json:
    return get(client, output_ref(get(client, task), "appointment") or "")


def clinic(sites: Json, free: Json) -> Json:
    """An ordinary Appointment of the patient in `free` (no referral's)."""
    return {"resourceType": "Appointment", "status": "booked",
            "start": free["start"], "end": free["end"],
            "slot": [{"reference": f"Slot/{free['id']}"}],
            "participant": [{"actor": {"reference": sites["patient"]},
                             "status": "accepted"}]}  # fmt: skip


def test_a_referrals_appointment_moves_only_by_the_operations(client: TestClient) -> None:
    sites = build_world(client)
    task, _, _ = booked(client, sites)
    appointment = appointment_of(client, task)
    assert appointment["status"] == "booked"
    conflict(put(client, {**appointment, "start": "2031-05-01T01:00:00Z",
                          "end": "2031-05-01T01:30:00Z"}),
             "Appointment.start", "$cancel")  # fmt: skip
    why = {"cancelationReason": {"text": "患者改期"}}  # the profile asks why (yl-appt-2)
    conflict(put(client, {**appointment, "status": "cancelled", **why}), "Appointment.status",
             "Task/$accept")  # fmt: skip
    conflict(put(client, {**appointment, "status": "arrived"}), "Appointment.status",
             "$check-in")  # fmt: skip
    r = client.patch(f"/fhir/Appointment/{appointment['id']}", headers=PATCH,
                     json=[{"op": "replace", "path": "/status", "value": "noshow"},
                           {"op": "add", "path": "/cancelationReason",
                            "value": {"text": "未到诊"}}])  # fmt: skip
    conflict(r, "Appointment.status", "$no-show")
    conflict(put(client, {**appointment, "slot": [{"reference": slot(client, sites)}]}),
             "Appointment.slot", "$reject")  # fmt: skip
    more = [*appointment["participant"], {"actor": {"reference": sites["ra1"]},
                                          "status": "accepted"}]  # fmt: skip
    conflict(put(client, {**appointment, "participant": more}), "Appointment.participant",
             "$accept")  # fmt: skip
    conflict(client.delete(f"/fhir/Appointment/{appointment['id']}"), "Appointment",
             "Task/$cancel")  # fmt: skip
    # nothing moved: the Task and its Appointment still agree (consistency table: booked/booked)
    assert get(client, f"Appointment/{appointment['id']}")["status"] == "booked"
    assert pair(get(client, task)) == ("accepted", "booked")
    # what the workflow does not decide may be written
    noted = put(client, {**appointment, "comment": "请携带既往检查资料",
                         "patientInstruction": "空腹"})  # fmt: skip
    assert noted.status_code == 200, noted.text
    assert get(client, f"Appointment/{appointment['id']}")["comment"] == "请携带既往检查资料"


def test_the_slot_a_referral_holds_is_not_freed_or_double_booked(client: TestClient) -> None:
    sites = build_world(client)
    task, _, held = booked(client, sites)
    free = get(client, held)
    assert free["status"] == "busy"
    conflict(put(client, {**free, "status": "free"}), "Slot.status", "$cancel")
    conflict(put(client, {**free, "end": "2031-05-01T01:30:00Z"}), "Slot.end", "$reject")
    conflict(client.delete(f"/fhir/{held}"), "Slot", "$cancel")
    assert get(client, held)["status"] == "busy"
    assert put(client, {**free, "comment": "转诊预留"}).status_code == 200
    # another Appointment may not book it, whether created or changed to it
    conflict(client.post("/fhir/Appointment", json=clinic(sites, free)), "Appointment.slot[0]",
             "$cancel")  # fmt: skip
    other = get(client, slot(client, sites))
    made = client.post("/fhir/Appointment", json=clinic(sites, other))
    assert made.status_code == 201, made.text
    moved = {**made.json(), "slot": [*made.json()["slot"], {"reference": held}]}
    conflict(put(client, moved), "Appointment.slot[1]", "$cancel")
    found = client.get(f"/fhir/Appointment?slot={held}").json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [
        appointment_of(client, task)["id"]
    ]


def test_once_the_referral_is_withdrawn_its_slot_may_be_booked_again(client: TestClient) -> None:
    sites = build_world(client)
    task, _, held = booked(client, sites)
    appointment = appointment_of(client, task)
    bundle = ok(op(client, f"{task}/$cancel", CANCEL))  # T11: the operation frees the Slot
    assert in_bundle(bundle, "Appointment")[0]["status"] == "cancelled"
    free = get(client, held)
    assert free["status"] == "free"
    # the ended Appointment keeps its status
    ended = get(client, f"Appointment/{appointment['id']}")
    reopened = {k: v for k, v in ended.items() if k != "cancelationReason"}  # app-4
    conflict(put(client, {**reopened, "status": "booked"}), "Appointment.status", "$accept")
    # a new referral books the Slot through its operation, and holds it in turn
    again, _ = submit(client, referral(client, sites), ref("slot", held))
    assert appointment_of(client, again)["slot"] == [{"reference": held}]
    conflict(client.post("/fhir/Appointment", json=clinic(sites, get(client, held))),
             "Appointment.slot[0]", "$cancel")  # fmt: skip
    ok(op(client, f"{again}/$cancel", CANCEL))
    # freed again, it is nobody's: a clinic may book it
    made = client.post("/fhir/Appointment", json=clinic(sites, get(client, held)))
    assert made.status_code == 201, made.text
    assert put(client, {**get(client, held), "status": "busy"}).status_code == 200


def test_the_operations_still_move_the_appointment_and_slot(client: TestClient) -> None:
    sites = build_world(client)
    task, _, held = booked(client, sites)
    bundle = ok(op(client, f"{task}/$check-in"))  # T13: Appointment arrived
    assert in_bundle(bundle, "Appointment")[0]["status"] == "arrived"
    assert pair(get(client, task)) == ("in-progress", "arrived")
    other, _, second = booked(client, sites)
    bundle = ok(op(client, f"{other}/$no-show"))  # T15: Appointment noshow, Slot freed
    assert in_bundle(bundle, "Appointment")[0]["status"] == "noshow"
    assert get(client, second)["status"] == "free"
    third, _, last = booked(client, sites)
    reason = {"name": "reason", "valueCoding": {"code": "no-capacity", "system":
              "https://yilian.health/fhir/CodeSystem/yl-referral-rejection-reason"}}  # fmt: skip
    ok(op(client, f"{third}/$reject", reason))  # T10: Appointment cancelled, Slot freed
    assert appointment_of(client, third)["status"] == "cancelled"
    assert get(client, last)["status"] == "free"
    assert get(client, held)["status"] == "busy"  # the arrived visit still holds its Slot


def test_an_appointment_made_to_be_attached_is_the_writers_until_the_referral_takes_it(
    client: TestClient,
) -> None:
    """Direct booking with an Appointment booked elsewhere (referral-model.md T2: `appointment`
    from a hold): made and changed by plain REST until $submit attaches it."""
    sites = build_world(client)
    sr = referral(client, sites)
    free = get(client, slot(client, sites))
    hold = {**clinic(sites, free), "status": "proposed", "basedOn": [{"reference": sr}]}
    made = client.post("/fhir/Appointment", json=hold)
    assert made.status_code == 201, made.text
    later = get(client, slot(client, sites))
    moved = {**made.json(), "start": later["start"], "end": later["end"],
             "slot": [{"reference": f"Slot/{later['id']}"}]}  # fmt: skip
    assert put(client, moved).status_code == 200
    task, _ = submit(client, sr, ref("appointment", f"Appointment/{moved['id']}"))
    attached = appointment_of(client, task)
    assert attached["id"] == moved["id"] and attached["status"] == "booked"
    why = {"cancelationReason": {"text": "患者改期"}}
    conflict(put(client, {**attached, "status": "cancelled", **why}), "Appointment.status",
             "$cancel")  # fmt: skip
    conflict(put(client, {**get(client, f"Slot/{later['id']}"), "status": "free"}),
             "Slot.status", "$cancel")  # fmt: skip


def test_hospital_users_cannot_cancel_or_double_book_a_referral_by_rest(
    world: Json,  # noqa: F811  (the fixture imported above)
) -> None:
    """With real tokens in the demo consortium: the community doctor refers pat-001 to hz-first
    and books a Slot of its expert-1; neither hospital's user moves the booking by hand."""
    inviting, receiving = world["inviting"], world["expert"]  # hubin-chc, hz-first
    parties = {"patient": "Patient/pat-001", "sd": "PractitionerRole/role-hubin-chc-dr1",
               "receiver": "Organization/hz-first"}  # fmt: skip
    made = inviting.post("/fhir/ServiceRequest", json=service_request(parties))
    assert made.status_code == 201, made.text
    held = "Slot/slot-expert-1-3-14"  # free: the demo books the 9 o'clock ones
    task, _ = submit(inviting, f"ServiceRequest/{made.json()['id']}", ref("slot", held))
    appointment = appointment_of(receiving, task)
    why = {"cancelationReason": {"text": "医生停诊"}}
    conflict(put(receiving, {**appointment, "status": "cancelled", **why}),
             "Appointment.status", "$cancel")  # fmt: skip
    conflict(receiving.delete(f"/fhir/Appointment/{appointment['id']}"), "Appointment",
             "Task/$cancel")  # fmt: skip
    busy = get(receiving, held)  # the Slot's owner
    conflict(put(receiving, {**busy, "status": "free"}), "Slot.status", "$cancel")
    conflict(inviting.post("/fhir/Appointment", json=clinic(parties, busy)),
             "Appointment.slot[0]", "$cancel")  # fmt: skip
    # the receiving hospital's own operation still ends it, and frees the Slot
    ok(op(receiving, f"{task}/$no-show"))
    assert appointment_of(receiving, task)["status"] == "noshow"
    assert get(receiving, held)["status"] == "free"


def test_after_a_plain_task_transition_the_appointment_may_follow_the_task(
    client: TestClient,
) -> None:
    """A referral cancelled by a plain PUT of its Task (T11, allowed like the operation) leaves
    its Appointment alone; the Appointment may then be set by hand to what the consistency
    table pairs with the Task (cancelled/withdrawn: cancelled, referral-model.md §2.5), which
    frees its Slot for a plain write, but to nothing else."""
    sites = build_world(client)
    task, _, held = booked(client, sites)
    withdrawn = {**get(client, task), "status": "cancelled",
                 "businessStatus": {"coding": [{"system": f"{CS}yl-referral-business-status",
                                                "code": "withdrawn"}]},
                 "statusReason": {"text": "患者要求"}}  # fmt: skip
    r = put(client, withdrawn)
    assert r.status_code == 200, r.text
    assert pair(r.json()) == ("cancelled", "withdrawn")
    appointment = appointment_of(client, task)
    assert appointment["status"] == "booked"  # a plain Task write touches nothing else
    conflict(put(client, {**get(client, held), "status": "free"}), "Slot.status", "$cancel")
    missed = {**appointment, "status": "noshow", "cancelationReason": {"text": "患者要求"}}
    conflict(put(client, missed), "Appointment.status", "$no-show")
    followed = put(client, {**missed, "status": "cancelled"})
    assert followed.status_code == 200, followed.text
    assert put(client, {**get(client, held), "status": "free"}).status_code == 200
    made = client.post("/fhir/Appointment", json=clinic(sites, get(client, held)))
    assert made.status_code == 201, made.text
