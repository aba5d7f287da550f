"""The consortium rule with real tokens (issue 10 "Access decisions", security.md §3.2): a
practitioner sees everything outside the Patient compartment, and the compartments of the
patients their organization manages or has a referral for (while it is under way, and for
`referral_access_days` after it ended). Hospitals A and B; pa is A's patient, pb B's."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import make_services, seed
from fastapi.testclient import TestClient
from smart import BASE, PASSWORD, REDIRECT, auth_code, auth_of, drive, pkce
from test_policy_enforce import ids

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

APP = "ward-app"
SCOPE = "openid fhirUser user/*.cruds"
BUSINESS = "https://yilian.health/fhir/CodeSystem/yl-referral-business-status"


def _created(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as a create sends it: without an id (FHIR JSON has no null)."""
    return {k: v for k, v in resource.items() if k != "id"}


def _patient(pid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid,
            "managingOrganization": {"reference": f"Organization/{org}"}}  # fmt: skip


def _org(oid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": oid, "name": f"Hospital {oid}"}


def _role(rid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "id": rid,
            "organization": {"reference": f"Organization/{org}"}}  # fmt: skip


def _obs(oid: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": "weight"}, "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip


DATA = [
    _org("ha"), _org("hb"), _role("dra", "ha"), _role("drb", "hb"),
    _patient("pa", "ha"), _patient("pb", "hb"),
    _obs("oa", "pa"), _obs("ob", "pb"),
]  # fmt: skip


def referral(tid: str, status: str, business: str, **more: Any) -> dict[str, Any]:
    """A referral Task from A (requester) to B (owner: B's PractitionerRole) for pa."""
    return {
        "resourceType": "Task", "id": tid, "status": status, "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "businessStatus": {"coding": [{"system": BUSINESS, "code": business}]},
        "for": {"reference": "Patient/pa"},
        "requester": {"reference": "PractitionerRole/dra"},
        "owner": {"reference": "PractitionerRole/drb"}, **more,
    }  # fmt: skip


def _serve(path: Any, parts: Parts, **settings: Any) -> Iterator[TestClient]:
    services = make_services(path, parts, **settings)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in DATA:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "dra", PASSWORD, "PractitionerRole/dra")
        admin.add_user(store, "drb", PASSWORD, "PractitionerRole/drb")
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    yield from _serve(tmp_path_factory.mktemp("consortium") / "fhir.db", parts)


def login(c: TestClient, user: str) -> TestClient:
    """A client carrying `user`'s token from the authorization-code flow (PKCE S256)."""
    browser = TestClient(c.app, raise_server_exceptions=False)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code", "client_id": APP, "redirect_uri": REDIRECT, "scope": SCOPE,
        "state": state, "aud": BASE, "code_challenge": challenge,
        "code_challenge_method": "S256",
    }  # fmt: skip
    form = {
        "grant_type": "authorization_code", "code": auth_code(drive(browser, params, user), state),
        "redirect_uri": REDIRECT, "code_verifier": verifier, "client_id": APP,
    }  # fmt: skip
    r = browser.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    browser.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return browser


def sees_pa(c: TestClient) -> bool:
    """Whether every way of reaching pa's record agrees on whether it is visible."""
    read = c.get("/fhir/Patient/pa").status_code
    obs = c.get("/fhir/Observation/oa").status_code
    found = ids(c.get("/fhir/Observation", params={"subject": "Patient/pa"}))
    assert (read, obs, found == {"Observation/oa"}) in [(200, 200, True), (404, 404, False)]
    return read == 200


# --- a user of A: A's patients and everything shared --------------------------------------------


def test_a_user_sees_their_hospitals_patient_and_the_shared_resources(server: TestClient) -> None:
    a = login(server, "dra")
    assert ids(a.get("/fhir/Patient")) == {"Patient/pa"}
    assert ids(a.get("/fhir/Observation")) == {"Observation/oa"}
    assert a.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 1
    assert ids(a.get("/fhir/Organization")) == {"Organization/ha", "Organization/hb"}
    assert ids(a.get("/fhir/PractitionerRole")) == {"PractitionerRole/dra", "PractitionerRole/drb"}
    assert a.get("/fhir/Organization/hb").status_code == 200
    assert sees_pa(a)


@pytest.mark.parametrize(
    "url", ["/fhir/Patient/pb", "/fhir/Observation/ob", "/fhir/Observation/ob/_history/1",
            "/fhir/Patient/pb/_history"],
)  # fmt: skip
def test_the_other_hospitals_patient_answers_404(server: TestClient, url: str) -> None:
    r = login(server, "dra").get(url)
    assert r.status_code == 404, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/fhir/Patient", {"_id": "pb"}),
        ("/fhir/Observation", {"subject": "Patient/pb"}),
        ("/fhir/Patient/pb/Observation", {}),
        ("/fhir", {"_type": "Patient,Observation", "_id": "pb,ob"}),
        ("/fhir/Organization", {"_id": "hb", "_revinclude": "Patient:organization"}),
        ("/fhir/Observation", {"_id": "oa", "_include": "Observation:subject"}),
    ],
)
def test_searches_show_nothing_of_the_other_hospital(
    server: TestClient, url: str, params: dict[str, str]
) -> None:
    r = login(server, "dra").get(url, params={**params, "_total": "accurate"})
    got = ids(r)
    assert not got & {"Patient/pb", "Observation/ob"}
    assert r.json()["total"] == len([e for e in r.json().get("entry", [])
                                     if e["search"]["mode"] == "match"])  # fmt: skip


def test_batch_entries_are_narrowed(server: TestClient) -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pb"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pb"}},
        {"request": {"method": "GET", "url": "Patient/pa"}},
    ]}  # fmt: skip
    r = login(server, "dra").post("/fhir", json=batch)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"].startswith("404")
    assert entries[1]["resource"].get("entry", []) == []
    assert entries[2]["response"]["status"].startswith("200")


def test_writes_only_for_patients_one_may_see(server: TestClient) -> None:
    a = login(server, "dra")
    r = a.post("/fhir/Observation", json={k: v for k, v in _obs("x", "pb").items() if k != "id"})
    assert r.status_code == 403, r.text
    assert a.put("/fhir/Observation/ob", json=_obs("ob", "pa")).status_code == 404
    moved = a.put("/fhir/Observation/oa", json=_obs("oa", "pb"))
    assert moved.status_code == 403, moved.text
    assert login(server, "drb").get("/fhir/Observation/oa").status_code == 404
    # nor may a user grant themselves access by writing a referral for a patient not theirs
    grab = referral("grab", "requested", "submitted", owner={"reference": "Organization/hb"})
    del grab["id"]  # a create (FHIR JSON has no null)
    r = login(server, "drb").post("/fhir/Task", json=grab)
    assert r.status_code == 403, r.text
    assert not sees_pa(login(server, "drb"))


# --- a referral from A to B: B sees pa while it lasts -------------------------------------------


def test_a_referral_lets_the_receiving_hospital_see_the_patient_until_access_ends(
    tmp_path: Any, parts: Parts
) -> None:
    for c in _serve(tmp_path / "fhir.db", parts, referral_access_days=0):
        b = login(c, "drb")
        assert not sees_pa(b)
        # A's practitioner submits the referral (created submitted, which the guard allows)
        task = referral("t", "requested", "submitted")
        del task["id"]  # a create (FHIR JSON has no null)
        r = login(c, "dra").post("/fhir/Task", json=task)
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        assert sees_pa(b)
        assert ids(b.get("/fhir/Patient")) == {"Patient/pa", "Patient/pb"}
        everything = {"_id": "pa", "_revinclude": "Observation:subject"}
        got = ids(b.get("/fhir/Patient", params=everything))
        assert got == {"Patient/pa", "Observation/oa"}
        assert c.get("/fhir/Task/" + tid).status_code == 200
        # the referral ends: with referral_access_days = 0 B's access ends with it
        done = referral(tid, "completed", "completed", lastModified=_ago(0))
        seed(c, [done])
        assert not sees_pa(b)
        assert b.get("/fhir/Task/" + tid).status_code == 404  # in pa's compartment too
        assert sees_pa(login(c, "dra"))


def test_an_ended_referral_counts_for_referral_access_days(server: TestClient) -> None:
    b = login(server, "drb")
    seed(server, [referral("recent", "completed", "completed", lastModified=_ago(29))])
    assert sees_pa(b)
    seed(server, [referral("recent", "completed", "completed", lastModified=_ago(31))])
    assert not sees_pa(b)
    seed(server, [referral("recent", "draft", "drafted")])  # not sent: grants nothing
    assert not sees_pa(b)


def _ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")


# --- plain writes of the referral Task: by its sides, transition by transition -----------------


@pytest.fixture
def fresh(tmp_path: Any, parts: Parts) -> Iterator[TestClient]:
    yield from _serve(tmp_path / "fhir.db", parts)


def _task(c: TestClient, tid: str, status: str, business: str, **more: Any) -> dict[str, Any]:
    """The referral Task as stored, moved to (status, business), with `more` changed."""
    current = c.get(f"/fhir/Task/{tid}").json()
    return {**current, **referral(tid, status, business),
            "extension": current.get("extension", []), **more}  # fmt: skip


def test_the_receiving_hospital_updates_the_referral_task_within_its_transitions(
    fresh: TestClient,
) -> None:
    """The receiving hospital sees pa only through the referral, yet updates the Task by PUT
    and PATCH: the transitions that are its own (referral-model.md §2.5: it claims and
    accepts), not the sender's (it does not cancel); and no plain write moves the referral to
    another patient or hospital, or stretches its access by backdating its end."""
    c = fresh
    a, b = login(c, "dra"), login(c, "drb")
    r = a.post("/fhir/Task", json=_created(referral("t", "requested", "submitted")))
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    url = f"/fhir/Task/{tid}"
    # T3 claim (receiver), then T7 accept (receiver): the receiving hospital's own moves
    assert b.put(url, json=_task(c, tid, "received", "received")).status_code == 200
    assert a.put(url, json=_task(c, tid, "accepted", "approved")).status_code == 403
    assert b.put(url, json=_task(c, tid, "accepted", "approved")).status_code == 200
    # T11 cancel is the sender's, T13 check-in the receiver's
    for who, body in ((b, _task(c, tid, "cancelled", "withdrawn")),
                      (a, _task(c, tid, "in-progress", "arrived"))):  # fmt: skip
        r = who.put(url, json=body)
        assert r.status_code == 403, r.text
        assert r.json()["issue"][0]["code"] == "forbidden"
    # either side adds a note; a PATCH does as a PUT
    note = [{"text": "bring the ECG"}]
    assert a.put(url, json=_task(c, tid, "accepted", "approved", note=note)).status_code == 200
    patch = [{"op": "add", "path": "/note/-", "value": {"text": "ECG received"}}]
    r = b.patch(url, json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    # the patient, the request and the sides stay; lastModified is the last transition's
    for field, value in (("for", {"reference": "Patient/pb"}),
                         ("owner", {"reference": "Organization/ha"}),
                         ("requester", {"reference": "PractitionerRole/drb"})):  # fmt: skip
        r = b.put(url, json=_task(c, tid, "accepted", "approved", **{field: value}))
        assert r.status_code == 409, r.text
        assert r.json()["issue"][0]["expression"] == [f"Task.{field}"]
    before = c.get(url).json()["lastModified"]
    later = _task(c, tid, "accepted", "approved", lastModified="2099-01-01T00:00:00Z",
                  note=[{"text": "later"}])  # fmt: skip
    r = b.put(url, json=later)
    assert r.status_code == 200, r.text
    assert r.json()["lastModified"] == before
    assert sees_pa(b)  # through the referral, under way
    assert c.get(url).json()["status"] == "accepted"


def test_a_patient_linking_to_a_patient_one_sees_stays_hidden(server: TestClient) -> None:
    """Patient.link puts a Patient in the linked patient's compartment (R4
    CompartmentDefinition), but links never widen access (security.md §3.2): B's record of
    the same person, linked to A's, is not A's to read."""
    linked = {**_patient("pb-link", "hb"),
              "link": [{"other": {"reference": "Patient/pa"}, "type": "seealso"}]}  # fmt: skip
    assert server.put("/fhir/Patient/pb-link", json=linked).status_code == 201
    a = login(server, "dra")
    assert a.get("/fhir/Patient/pb-link").status_code == 404
    assert "Patient/pb-link" not in ids(a.get("/fhir/Patient"))
    assert login(server, "drb").get("/fhir/Patient/pb-link").status_code == 200
