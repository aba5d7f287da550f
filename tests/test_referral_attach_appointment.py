"""Booking a referral with an `appointment` (an Appointment made beforehand, a hold:
referral-model.md T2 `$submit`, T7 `$accept`) books the Appointment's Slots exactly as booking
it with a `slot` books that Slot: each must be free (Slot.status free, R4 slot.html, and no
other booked Appointment in it), else 409 business-rule at the parameter, naming the Slot and
why, and nothing is written. The defect: the `appointment` path marked the Slots busy without
looking, so a second referral took a Slot another referral already held (double booking)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from test_consultation_guards import put
from test_referral_booking_guards import appointment_of, clinic
from test_workflow import (
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


def hold(client: TestClient, sites: Json, slot_ref: str) -> str:
    """An Appointment of the patient proposed in the Slot, made by hand to be attached."""
    proposed = {**clinic(sites, get(client, slot_ref)), "status": "proposed"}
    made = client.post("/fhir/Appointment", json=proposed)
    assert made.status_code == 201, made.text
    return f"Appointment/{made.json()['id']}"


def refused(r: Any, parameter: str, *words: str) -> None:
    """409 business-rule at `parameter`, its diagnostics naming each of `words`."""
    assert r.status_code == 409, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and issue["expression"] == [parameter], issue
    for word in words:
        assert word in issue["diagnostics"], issue["diagnostics"]


def versions(client: TestClient, *refs: str) -> dict[str, str]:
    return {r: get(client, r)["meta"]["versionId"] for r in refs}


def taken(client: TestClient, sites: Json) -> tuple[str, str, str, str]:
    """A hold on a Slot made while it was free, then referral A booking that Slot (T2 with
    `slot`): (the hold, the Slot, A's Task, A's Appointment)."""
    held = slot(client, sites)
    early = hold(client, sites, held)
    first, _ = submit(client, referral(client, sites), ref("slot", held))
    assert get(client, held)["status"] == "busy"
    return early, held, first, f"Appointment/{appointment_of(client, first)['id']}"


def test_accept_with_an_appointment_in_a_slot_another_referral_holds_is_refused(
    client: TestClient,
) -> None:
    sites = build_world(client)
    early, held, first, theirs = taken(client, sites)
    second, _ = submit(client, referral(client, sites))  # T1: waits for the receiver
    before = versions(client, early, held, first, theirs, second)
    r = op(client, f"{second}/$accept", ref("appointment", early))
    refused(r, "appointment", held, "busy")
    # the same answer as for the Slot given as `slot`
    refused(op(client, f"{second}/$accept", ref("slot", held)), "slot", held, "busy")
    assert versions(client, early, held, first, theirs, second) == before
    assert get(client, held)["status"] == "busy"
    assert get(client, early)["status"] == "proposed" and "basedOn" not in get(client, early)
    assert get(client, theirs)["status"] == "booked"
    assert pair(get(client, first)) == ("accepted", "booked")
    assert pair(get(client, second)) == ("requested", "submitted")
    assert "output" not in get(client, second)


def test_submit_with_an_appointment_in_a_slot_another_referral_holds_is_refused(
    client: TestClient,
) -> None:
    sites = build_world(client)
    early, held, first, theirs = taken(client, sites)
    sr = referral(client, sites)
    before = versions(client, early, held, first, theirs, sr)
    r = op(client, f"{sr}/$submit", ref("appointment", early))
    refused(r, "appointment", held, "busy")
    assert versions(client, early, held, first, theirs, sr) == before
    assert get(client, sr)["status"] == "draft"
    tasks = client.get(f"/fhir/Task?based-on={sr}").json()
    assert tasks.get("total", len(tasks.get("entry", []))) == 0 and not tasks.get("entry")


def test_an_appointment_in_a_slot_not_free_is_refused_whatever_holds_it(
    client: TestClient,
) -> None:
    """Every Slot.status but free (R4 slot-status: busy, busy-unavailable, busy-tentative,
    entered-in-error), and a free Slot another booked Appointment is in (made by hand, which
    left the Slot free)."""
    sites = build_world(client)
    second, _ = submit(client, referral(client, sites))
    for status in ("busy", "busy-unavailable", "busy-tentative", "entered-in-error"):
        closed = slot(client, sites)
        early = hold(client, sites, closed)
        assert put(client, {**get(client, closed), "status": status}).status_code == 200
        r = op(client, f"{second}/$accept", ref("appointment", early))
        refused(r, "appointment", closed, f"is {status},")
        assert get(client, closed)["status"] == status
    crowded = slot(client, sites)
    early = hold(client, sites, crowded)
    other = client.post("/fhir/Appointment", json=clinic(sites, get(client, crowded)))
    assert other.status_code == 201, other.text
    booked_by = f"Appointment/{other.json()['id']}"
    refused(op(client, f"{second}/$accept", ref("appointment", early)), "appointment",
            crowded, booked_by)  # fmt: skip
    refused(op(client, f"{second}/$accept", ref("slot", crowded)), "slot", crowded, booked_by)
    assert get(client, crowded)["status"] == "free"
    assert pair(get(client, second)) == ("requested", "submitted")


def test_an_appointment_in_a_free_slot_still_books(client: TestClient) -> None:
    sites = build_world(client)
    sr = referral(client, sites)
    task, _ = submit(client, sr)
    free = slot(client, sites)
    early = hold(client, sites, free)
    bundle = ok(op(client, f"{task}/$accept", ref("appointment", early)))
    assert pair(bundle["entry"][0]["resource"]) == ("accepted", "booked")
    attached = appointment_of(client, task)
    assert f"Appointment/{attached['id']}" == early
    assert attached["status"] == "booked" and attached["basedOn"] == [{"reference": sr}]
    assert get(client, free)["status"] == "busy"
    # it now holds the Slot: another referral's hold in it is refused
    later = referral(client, sites)
    refused(op(client, f"{later}/$submit", ref("slot", free)), "slot", free)


def test_a_booking_pending_review_is_confirmed_with_its_own_appointment(
    client: TestClient,
) -> None:
    """T2 with `appointment` and pendingReview, then T9 `$accept` naming the same Appointment:
    its Slot is busy by that very booking, which the review confirms (nothing booked again)."""
    sites = build_world(client)
    sr = referral(client, sites)
    free = slot(client, sites)
    early = hold(client, sites, free)
    task, _ = submit(client, sr, ref("appointment", early),
                     {"name": "pendingReview", "valueBoolean": True})  # fmt: skip
    assert pair(get(client, task)) == ("accepted", "booked-pending-review")
    assert get(client, free)["status"] == "busy"
    slot_version = get(client, free)["meta"]["versionId"]
    ok(op(client, f"{task}/$accept", ref("appointment", early)))
    assert pair(get(client, task)) == ("accepted", "booked")
    assert get(client, free)["meta"]["versionId"] == slot_version
    assert get(client, early)["status"] == "booked"


def test_an_appointment_booked_elsewhere_attaches_with_the_slot_it_made_busy(
    client: TestClient,
) -> None:
    """An Appointment already booked (by the hospital's own scheduling) holds its Slot busy
    itself (R4 appointment.html: a booked Appointment takes its Slots): attaching it is not a
    second booking, unless another booked Appointment is in that Slot too."""
    sites = build_world(client)
    task, _ = submit(client, referral(client, sites))
    taken_here = slot(client, sites)
    made = [client.post("/fhir/Appointment", json=clinic(sites, get(client, taken_here)))
            for _ in range(2)]  # fmt: skip
    assert [r.status_code for r in made] == [201, 201], made[1].text
    mine, other = (f"Appointment/{r.json()['id']}" for r in made)
    assert put(client, {**get(client, taken_here), "status": "busy"}).status_code == 200
    refused(op(client, f"{task}/$accept", ref("appointment", mine)), "appointment", taken_here,
            other)  # fmt: skip
    assert put(client, {**get(client, other), "status": "cancelled"}).status_code == 200
    ok(op(client, f"{task}/$accept", ref("appointment", mine)))
    assert pair(get(client, task)) == ("accepted", "booked")
    assert get(client, taken_here)["status"] == "busy"
    assert get(client, mine)["basedOn"] == [{"reference": get(client, task)["focus"]["reference"]}]


def test_confirming_a_booking_pending_review_with_another_time_is_refused(
    client: TestClient,
) -> None:
    """T9 confirms the booking made at submission; naming another Appointment or Slot there
    was silently ignored (the receiver believed the other time booked). Now 409 at that
    parameter, and nothing changes; the booking's own Slot or Appointment still confirms."""
    sites = build_world(client)
    free = slot(client, sites)
    early = hold(client, sites, free)
    task, _ = submit(client, referral(client, sites), ref("appointment", early),
                     {"name": "pendingReview", "valueBoolean": True})  # fmt: skip
    elsewhere = slot(client, sites)
    other = hold(client, sites, elsewhere)
    before = versions(client, task, early, free, elsewhere, other)
    refused(op(client, f"{task}/$accept", ref("slot", elsewhere)), "slot", early, elsewhere)
    refused(op(client, f"{task}/$accept", ref("appointment", other)), "appointment", early,
            other)  # fmt: skip
    assert versions(client, task, early, free, elsewhere, other) == before
    assert get(client, elsewhere)["status"] == "free"
    ok(op(client, f"{task}/$accept", ref("slot", free)))
    assert pair(get(client, task)) == ("accepted", "booked")
