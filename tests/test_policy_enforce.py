"""Scopes enforced over HTTP on the real app: a patient-scoped principal sees, through every
search form, read, history, write and bundle, only its own patient's compartment; what is
hidden answers 404 or an empty Bundle, what no scope permits 403 (security.md §3.2,
SMART App Launch 2.x scopes, FHIR security.html "Access Denied").

The principal is put into `request.state` by a small ASGI wrapper, where the bearer middleware
(auth/bearer.py) puts the one a token carries; tests/test_policy_tokens.py drives the same
rules with real tokens from the authorization server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.context import Principal
from fhir_server.services import Parts

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{CATEGORY}|laboratory"
FHIR_JSON = "application/fhir+json"


class AsPrincipal:
    """ASGI wrapper: every request runs as `self.principal` (None: anonymous, no principal)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.principal: Principal | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.principal is not None:
            scope = {**scope, "state": {**scope.get("state", {}), "principal": self.principal}}
        await self.app(scope, receive, send)


def observation(oid: str, patient: str, category: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "identifier": [{"system": "urn:test", "value": oid}],
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


DATA = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]},
    # p1's lab result whose focus is p2 (focus does not put it in p2's compartment)
    observation("o1-lab", "p1", "laboratory", focus=[{"reference": "Patient/p2"}]),
    observation("o1-vital", "p1", "vital-signs"),
    observation("o2-lab", "p2", "laboratory"),
    # p2's result whose focus is p1: a _revinclude from p1 would reach it
    observation("o2-focus", "p2", "laboratory", focus=[{"reference": "Patient/p1"}]),
]


@pytest.fixture
def api(tmp_path: Path, parts: Parts) -> Iterator[tuple[TestClient, AsPrincipal]]:
    services = make_services(tmp_path / "fhir.db", parts)
    app = build_app(services.settings, services)
    wrapper = AsPrincipal(app)
    with TestClient(wrapper, raise_server_exceptions=False) as client:
        for r in DATA:
            put = client.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r)
            assert put.status_code == 201, put.text
        yield client, wrapper


def patient(*scopes: str, pid: str = "p1") -> Principal:
    return Principal(kind="patient", client_id="app", patient=pid, scopes=scopes)


READER = patient("patient/Patient.rs", "patient/Observation.rs")
WRITER = patient("patient/Patient.rs", "patient/Observation.cruds")


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in response.json().get("entry", [])
        if e.get("search", {}).get("mode") != "outcome"
    }


def forbidden(response: Any) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_anonymous_requests_are_not_restricted(api: tuple[TestClient, AsPrincipal]) -> None:
    client, _ = api
    assert len(ids(client.get("/fhir/Observation"))) == 4
    assert client.get("/fhir/Observation/o2-lab").status_code == 200


def test_type_search_is_narrowed_to_the_patient_compartment(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    assert ids(client.get("/fhir/Observation")) == {"Observation/o1-lab", "Observation/o1-vital"}
    found = client.get("/fhir/Observation", params={"_total": "accurate"}).json()
    assert found["total"] == 2  # the count does not tell of the hidden ones
    assert ids(client.get("/fhir/Patient")) == {"Patient/p1"}
    assert ids(client.get("/fhir/Observation", params={"identifier": "urn:test|o2-lab"})) == set()
    for order in ("code", "-_lastUpdated", "_id"):  # the sorted paths (index walk) as well
        got = ids(client.get("/fhir/Observation", params={"_sort": order}))
        assert got == {"Observation/o1-lab", "Observation/o1-vital"}, order


def test_a_patient_linking_to_the_context_patient_stays_hidden(api: Any) -> None:
    """The R4 Patient compartment lists Patients whose `link` points at it; links never
    widen access (security.md §3.2)."""
    client, as_ = api
    linked = {
        "resourceType": "Patient",
        "id": "p3",
        "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}],
    }
    assert client.put("/fhir/Patient/p3", json=linked).status_code == 201
    as_.principal = READER
    assert ids(client.get("/fhir/Patient")) == {"Patient/p1"}
    assert client.get("/fhir/Patient/p3").status_code == 404


def test_every_page_is_narrowed(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    first = client.get("/fhir/Observation", params={"_count": "1", "_sort": "_id"}).json()
    seen = {e["resource"]["id"] for e in first["entry"]}
    link = next(x["url"] for x in first["link"] if x["relation"] == "next")
    second = client.get(link.replace("http://testserver", "")).json()
    seen |= {e["resource"]["id"] for e in second["entry"]}
    assert seen == {"o1-lab", "o1-vital"}
    assert not any(x["relation"] == "next" for x in second["link"])


def test_a_wildcard_patient_scope_covers_compartment_types(api: Any) -> None:
    client, as_ = api
    as_.principal = patient("patient/*.rs")
    got = ids(client.get("/fhir", params={"_type": "Observation,Patient"}))
    assert got == {"Patient/p1", "Observation/o1-lab", "Observation/o1-vital"}
    forbidden(client.get("/fhir/ValueSet"))  # not in the Patient compartment: fail closed


def test_includes_outside_the_compartment_are_dropped(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    got = ids(client.get("/fhir/Observation", params={"_include": "Observation:focus"}))
    assert got == {"Observation/o1-lab", "Observation/o1-vital"}  # not Patient/p2
    got = ids(client.get("/fhir/Observation", params={"_include": "Observation:subject"}))
    assert "Patient/p1" in got and "Patient/p2" not in got
    got = ids(client.get("/fhir/Patient", params={"_revinclude": "Observation:focus"}))
    assert got == {"Patient/p1"}  # o2-focus points at p1 but is p2's


def test_chains_and_has_are_refused_for_patient_scopes(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    forbidden(client.get("/fhir/Observation", params={"subject:Patient.name": "Two"}))
    forbidden(client.get("/fhir/Patient", params={"_has:Observation:subject:code": "2345-7"}))


def test_system_search_is_narrowed_per_type_and_needs_type(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    got = ids(client.get("/fhir", params={"_type": "Observation,Patient"}))
    assert got == {"Patient/p1", "Observation/o1-lab", "Observation/o1-vital"}
    forbidden(client.get("/fhir"))
    forbidden(client.get("/fhir", params={"_type": "Observation,Condition"}))


def test_compartment_search_of_another_patient_is_empty(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    assert ids(client.get("/fhir/Patient/p2/Observation")) == set()
    assert ids(client.get("/fhir/Patient/p1/Observation")) == {
        "Observation/o1-lab",
        "Observation/o1-vital",
    }


def test_read_vread_and_instance_history_of_hidden_resources_answer_404(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    for url in (
        "/fhir/Observation/o2-lab",
        "/fhir/Observation/o2-lab/_history/1",
        "/fhir/Observation/o2-lab/_history",
        "/fhir/Patient/p2",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "o1" not in response.text
    assert client.get("/fhir/Observation/o1-lab").status_code == 200
    assert client.get("/fhir/Observation/o1-lab/_history/1").status_code == 200
    assert client.get("/fhir/Observation/o1-lab/_history").status_code == 200


def test_type_and_system_history_are_refused_under_patient_scopes(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    forbidden(client.get("/fhir/Observation/_history"))
    forbidden(client.get("/fhir/_history"))


def test_an_interaction_no_scope_covers_is_403(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    forbidden(client.get("/fhir/Condition"))
    forbidden(client.get("/fhir/Condition/c1"))
    body = observation("new", "p1", "laboratory")
    forbidden(client.put("/fhir/Observation/new", json=body))  # rs: no update
    forbidden(client.post("/fhir/Observation", json={k: v for k, v in body.items() if k != "id"}))
    as_.principal = None
    assert client.get("/fhir/Observation/new").status_code == 404  # nothing was written


def test_a_patient_grant_without_patient_context_permits_nothing(api: Any) -> None:
    client, as_ = api
    as_.principal = Principal(kind="user", scopes=("patient/Observation.rs",))
    forbidden(client.get("/fhir/Observation"))


def test_writes_may_not_reach_or_move_into_another_patient(api: Any) -> None:
    client, as_ = api
    as_.principal = WRITER
    moved = observation("o1-lab", "p2", "laboratory")
    forbidden(client.put("/fhir/Observation/o1-lab", json=moved))
    created = observation("x", "p2", "laboratory")
    del created["id"]
    forbidden(client.post("/fhir/Observation", json=created))
    patch = [{"op": "replace", "path": "/subject/reference", "value": "Patient/p2"}]
    headers = {"Content-Type": "application/json-patch+json"}
    forbidden(client.patch("/fhir/Observation/o1-lab", json=patch, headers=headers))
    other = observation("o2-lab", "p1", "laboratory")
    assert client.put("/fhir/Observation/o2-lab", json=other).status_code == 404
    assert client.patch("/fhir/Observation/o2-lab", json=patch, headers=headers).status_code == 404
    assert client.delete("/fhir/Observation/o2-lab").status_code == 404
    as_.principal = None
    assert client.get("/fhir/Observation/o1-lab").json()["subject"]["reference"] == "Patient/p1"
    assert client.get("/fhir/Observation/o2-lab").json()["meta"]["versionId"] == "1"
    assert ids(client.get("/fhir/Observation", params={"subject": "p2"})) == {
        "Observation/o2-lab",
        "Observation/o2-focus",
    }


def test_writes_inside_the_compartment_succeed(api: Any) -> None:
    client, as_ = api
    as_.principal = WRITER
    body = observation("o1-lab", "p1", "laboratory", status="amended")
    assert client.put("/fhir/Observation/o1-lab", json=body).status_code == 200
    new = observation("n", "p1", "laboratory")
    del new["id"]
    assert client.post("/fhir/Observation", json=new).status_code == 201
    assert client.delete("/fhir/Observation/o1-vital").status_code == 200


def test_conditional_update_and_delete_see_only_the_compartment(api: Any) -> None:
    client, as_ = api
    as_.principal = WRITER
    body = observation("ignored", "p1", "laboratory")
    del body["id"]
    # o2-lab matches the criteria but is hidden: no match, so this creates
    put = client.put("/fhir/Observation", params={"identifier": "urn:test|o2-lab"}, json=body)
    assert put.status_code == 201, put.text
    gone = client.delete("/fhir/Observation", params={"identifier": "urn:test|o2-lab"})
    assert gone.status_code == 204
    created = {**body, "identifier": [{"system": "urn:test", "value": "o2-lab"}]}
    post = client.post(
        "/fhir/Observation", json=created, headers={"If-None-Exist": "identifier=urn:test|o2-lab"}
    )
    assert post.status_code == 201  # a new one, not p2's answered back as "exists"
    assert post.json()["subject"]["reference"] == "Patient/p1"
    as_.principal = None
    stored = client.get("/fhir/Observation/o2-lab").json()
    assert stored["subject"]["reference"] == "Patient/p2"
    assert stored["meta"]["versionId"] == "1"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_batch_entries_are_each_authorized(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    bundle = _bundle(
        "batch",
        {"request": {"method": "GET", "url": "Observation/o2-lab"}},
        {"request": {"method": "GET", "url": "Observation/o1-lab"}},
        {"request": {"method": "GET", "url": "Observation?_include=Observation:focus"}},
        {"request": {"method": "GET", "url": "Patient/p2/Observation"}},
        {"request": {"method": "GET", "url": "Observation/_history"}},
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["404", "200", "200", "200", "403"]
    searched = {e["resource"]["id"] for e in entries[2]["resource"]["entry"]}
    assert searched == {"o1-lab", "o1-vital"}
    assert entries[3]["resource"].get("entry", []) == []


def test_transaction_writing_into_another_patient_is_refused_whole(api: Any) -> None:
    client, as_ = api
    as_.principal = WRITER
    mine = observation("t1", "p1", "laboratory")
    theirs = observation("t2", "p2", "laboratory")
    for o in (mine, theirs):
        del o["id"]
    post = {"method": "POST", "url": "Observation"}
    bundle = _bundle(
        "transaction",
        {"fullUrl": "urn:uuid:1", "resource": mine, "request": post},
        {"fullUrl": "urn:uuid:2", "resource": theirs, "request": post},
    )
    forbidden(client.post("/fhir", json=bundle))
    as_.principal = None
    assert len(ids(client.get("/fhir/Observation"))) == 4  # nothing written


def test_granular_category_scope_returns_only_that_category(api: Any) -> None:
    client, as_ = api
    as_.principal = patient(f"patient/Observation.rs?category={LAB}")
    assert ids(client.get("/fhir/Observation")) == {"Observation/o1-lab"}
    assert client.get("/fhir/Observation/o1-vital").status_code == 404
    assert client.get("/fhir/Observation/o1-lab").status_code == 200


def test_different_granular_scopes_together_are_refused_not_widened(api: Any) -> None:
    client, as_ = api
    as_.principal = patient(
        f"patient/Observation.rs?category={LAB}",
        f"patient/Observation.rs?category={CATEGORY}|vital-signs",
    )
    forbidden(client.get("/fhir/Observation"))


@pytest.mark.parametrize("search", ["", "?category=laboratory", "?_include=Observation:subject"])
def test_v1_and_v2_scopes_are_equivalent(api: Any, search: str) -> None:
    client, as_ = api
    as_.principal = patient("patient/Patient.read", "patient/Observation.read")
    v1 = ids(client.get(f"/fhir/Observation{search}"))
    as_.principal = patient("patient/Patient.rs", "patient/Observation.rs")
    assert ids(client.get(f"/fhir/Observation{search}")) == v1
    assert v1  # the comparison is not between two empty results


def test_user_scopes_follow_the_consortium_rule(api: Any) -> None:
    """A practitioner without an organization sees no patient's data (the consortium rule,
    tests/test_policy_consortium.py); a system client registered without one is not narrowed."""
    client, as_ = api
    as_.principal = Principal(kind="user", user="dr", scopes=("user/Observation.rs",))
    assert ids(client.get("/fhir/Observation")) == set()
    forbidden(client.get("/fhir/Patient"))
    as_.principal = Principal(kind="system", client_id="b", scopes=("system/Observation.rs",))
    assert len(ids(client.get("/fhir/Observation"))) == 4


def test_operations_follow_the_table(api: Any) -> None:
    client, as_ = api
    as_.principal = READER
    validate = client.post("/fhir/Observation/$validate", json=observation("v", "p1", "laboratory"))
    assert validate.status_code == 200, validate.text
    forbidden(client.post("/fhir/Task/t1/$claim", json={"resourceType": "Parameters"}))
    forbidden(client.get("/fhir/ServiceRequest/sr2/$referral-slip"))  # no ServiceRequest scope
    as_.principal = patient("patient/ServiceRequest.rs")
    assert client.get("/fhir/ServiceRequest/sr2/$referral-slip").status_code == 404
