"""Invited experts read the patient's record only while the consultation is under way (issue
14 "Patient record for the consultation"; the consortium rule of policy/decide.py with the
consultation's care relationship): before the request, after it is completed or cancelled,
and for an expert who was not invited, every way to the record answers 404 or nothing.
Real tokens (authorization-code flow) against a real SQLite file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of
from test_policy_consortium import APP, login

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

CS = "https://yilian.health/fhir/CodeSystem/"


def _org(oid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": oid, "name": f"医院 {oid}"}


def _role(rid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "id": rid, "active": True,
            "organization": {"reference": f"Organization/{org}"}}  # fmt: skip


DATA = [
    _org("hc"), _org("hh"), _org("hx"), _role("drc", "hc"), _role("drh", "hh"),
    _role("drx", "hx"),
    {"resourceType": "Patient", "id": "pc",
     "managingOrganization": {"reference": "Organization/hc"}},
    {"resourceType": "Observation", "id": "oc", "status": "final", "code": {"text": "血压"},
     "subject": {"reference": "Patient/pc"}},
]  # fmt: skip
STUDY = {"resourceType": "ImagingStudy", "id": "ic", "status": "available",
         "subject": {"reference": "Patient/pc"}}  # fmt: skip


@pytest.fixture
def server(tmp_path: Any, parts: Parts) -> Iterator[TestClient]:
    services = make_services(tmp_path / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in DATA:  # seeded anonymously (auth off); the tests' clients carry tokens
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        for user in ("drc", "drh", "drx"):
            admin.add_user(store, user, PASSWORD, f"PractitionerRole/{user}")
        yield c


def sees_record(c: TestClient) -> bool:
    """Whether the patient's record is visible; every way to it must agree."""
    read = c.get("/fhir/Patient/pc").status_code
    obs = c.get("/fhir/Observation/oc").status_code
    study = c.get("/fhir/ImagingStudy/ic").status_code
    found = c.get("/fhir/Observation", params={"subject": "Patient/pc"}).json().get("total")
    everything = c.get("/fhir/Patient/pc/$everything").status_code
    seen = (read, obs, study, found, everything)
    assert seen in [(200, 200, 200, 1, 200), (404, 404, 404, 0, 404)], seen
    return read == 200


def p(name: str, value: Any) -> dict[str, Any]:
    key = "valueReference" if isinstance(value, dict) else "valueString"
    return {"name": name, key: value}


def post(c: TestClient, path: str, *params: dict[str, Any]) -> Any:
    return c.post(f"/fhir/{path}", json={"resourceType": "Parameters", "parameter": list(params)})


def consultation(drc: TestClient) -> str:
    request = {
        "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "11429006"}]},
                     {"coding": [{"system": f"{CS}yl-consultation-type", "code": "imaging"}]}],
        "subject": {"reference": "Patient/pc"}, "requester": {"reference": "PractitionerRole/drc"},
    }  # fmt: skip
    r = drc.post("/fhir/ServiceRequest/$request-consultation", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "request", "resource": request},
            p("expert", {"reference": "PractitionerRole/drh"})]})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["entry"][0]["resource"]["id"])


def test_the_invited_expert_reads_the_record_only_while_the_consultation_is_open(
    server: TestClient,
) -> None:
    drc, drh, drx = (login(server, u) for u in ("drc", "drh", "drx"))
    before = drc.get("/fhir/Observation/oc").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    assert drc.put("/fhir/ImagingStudy/ic", json=STUDY).status_code == 201
    assert not sees_record(drh) and not sees_record(drx)
    task = consultation(drc)
    # the inviting side cannot answer for the expert, the expert cannot withdraw it
    assert post(drc, f"Task/{task}/$accept").status_code == 403
    assert post(drh, f"Task/{task}/$cancel", p("reason", "x")).status_code == 403
    assert sees_record(drh) and not sees_record(drx)
    # $everything with _type and _since: only what changed after `before`, of those types
    everything = drh.get(
        "/fhir/Patient/pc/$everything",
        params={"_type": "ImagingStudy,Observation", "_since": before},
    ).json()
    got = {e["resource"]["resourceType"] + "/" + e["resource"]["id"]
           for e in everything.get("entry", [])}  # fmt: skip
    assert got == {"ImagingStudy/ic"}
    assert post(drh, f"Task/{task}/$accept").status_code == 200
    assert post(drh, f"Task/{task}/$start").status_code == 200
    assert sees_record(drh)
    assert (
        post(drh, f"Task/{task}/$submit-opinion", p("opinion", "未见明显异常")).status_code == 200
    )
    assert sees_record(drh)  # writing the opinion, still open
    assert post(drh, f"Task/{task}/$sign").status_code == 200
    assert not sees_record(drh) and not sees_record(drx)
    # the opinion stays the inviting hospital's record
    assert sees_record(drc)
    # a cancelled one ends the access too
    second = consultation(drc)
    assert sees_record(drh)
    assert post(drc, f"Task/{second}/$cancel", p("reason", "患者已出院")).status_code == 200
    assert not sees_record(drh)


def test_the_parties_read_the_consultations_appointment_and_nobody_else(
    server: TestClient,
) -> None:
    """The session's time is the parties' to read (the workbench shows and schedules it): the
    Appointment names the patient, so it follows the record like the Task does."""
    drc, drh, drx = (login(server, u) for u in ("drc", "drh", "drx"))
    task = drc.get(f"/fhir/Task/{consultation(drc)}").json()
    (appointment,) = [o["valueReference"]["reference"] for o in task["output"]
                      if o["type"]["coding"][0]["code"] == "appointment"]  # fmt: skip
    assert drc.get(f"/fhir/{appointment}").status_code == 200
    assert drh.get(f"/fhir/{appointment}").status_code == 200
    assert drx.get(f"/fhir/{appointment}").status_code == 404
    found = drh.get("/fhir/Appointment", params={"actor": "PractitionerRole/drh"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [appointment.split("/")[1]]
    assert drx.get("/fhir/Appointment", params={"actor": "PractitionerRole/drh"}).json()[
        "total"] == 0  # fmt: skip


def consultation_with(drc: TestClient, expert: str) -> str:
    request = {
        "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "11429006"}]},
                     {"coding": [{"system": f"{CS}yl-consultation-type", "code": "ecg"}]}],
        "subject": {"reference": "Patient/pc"}, "requester": {"reference": "PractitionerRole/drc"},
    }  # fmt: skip
    r = post(drc, "ServiceRequest/$request-consultation", {"name": "request", "resource": request},
             p("expert", {"reference": f"PractitionerRole/{expert}"}))  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["entry"][0]["resource"]["id"])


def message(c: TestClient, task: str | None, sender: str, words: str) -> str:
    body: dict[str, Any] = {
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": "Patient/pc"}, "sender": {"reference": sender},
        "payload": [{"contentString": words}],
    }  # fmt: skip
    if task:
        body["partOf"] = [{"reference": f"Task/{task}"}]
    r = c.post("/fhir/Communication", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_consultations_messages_are_its_parties_only(server: TestClient) -> None:
    """hh's expert is invited to one consultation of pc, hx's to another: both see pc's record,
    but each sees only the messages of its own consultation (and pc's messages of no
    consultation); hc, the inviting hospital, sees both threads."""
    drc, drh, drx = (login(server, u) for u in ("drc", "drh", "drx"))
    first, second = consultation_with(drc, "drh"), consultation_with(drc, "drx")
    m1 = message(drc, first, "PractitionerRole/drc", "请看心电图")
    r1 = message(drh, first, "PractitionerRole/drh", "已阅")
    m2 = message(drc, second, "PractitionerRole/drc", "第二个会诊")
    plain = message(drc, None, "PractitionerRole/drc", "随访提醒")
    assert drh.get("/fhir/Patient/pc").status_code == 200
    assert drx.get("/fhir/Observation/oc").status_code == 200

    def seen(c: TestClient) -> set[str]:
        bundle = c.get("/fhir/Communication", params={"subject": "Patient/pc"}).json()
        found = {e["resource"]["id"] for e in bundle.get("entry", [])}
        for mid in (m1, r1, m2, plain):  # reads agree with the search
            assert (c.get(f"/fhir/Communication/{mid}").status_code == 200) == (mid in found)
        return found

    assert seen(drc) == {m1, r1, m2, plain}
    assert seen(drh) == {m1, r1, plain}
    assert seen(drx) == {m2, plain}
    thread = drx.get("/fhir/Communication", params={"part-of": f"Task/{first}"}).json()
    assert thread.get("entry", []) == []
