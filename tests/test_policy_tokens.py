"""The patient-compartment rules with real tokens, end to end: a SMART app gets a token by the
authorization-code flow (login, consent, PKCE S256) or Backend Services (private_key_jwt), and
with it nothing of another patient leaks through any read, search form, bundle or write
(SMART App Launch 2.x scopes; security.md §3.2; FHIR security.html "Access Denied").

tests/test_policy_enforce.py drives the same rules with the principal set directly; this file
checks that a token-borne principal gets them too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from smart import (
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    assertion,
    auth_of,
    code_flow,
)
from test_policy_enforce import CATEGORY, DATA, forbidden, ids, observation

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

APP = "patient-app"  # a public client (PKCE only) that is not trusted: the consent page shows
EMR = "emr"
READ = "launch/patient patient/Patient.rs patient/Observation.rs"
P1_OBSERVATIONS = {"Observation/o1-lab", "Observation/o1-vital"}


def _serve(path: Any, parts: Parts) -> Iterator[TestClient]:
    """The real app on its own database, holding DATA, a public app, a patient user of p1, a
    practitioner (for the EHR launch) and a Backend Services client."""
    services = make_services(path, parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        # the practitioner works at h1, which manages p1 (the consortium rule lets h1 see it)
        h1 = {"reference": "Organization/h1"}
        managed = [{**r, "managingOrganization": h1} if r["id"] == "p1" else r for r in DATA]
        role = {"resourceType": "PractitionerRole", "id": "dr1", "organization": h1}
        for r in [{"resourceType": "Organization", "id": "h1", "name": "H1"}, *managed, role]:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True)
        admin.add_user(store, "pat1", PASSWORD, "Patient/p1")
        admin.add_user(store, "drwang", PASSWORD, "PractitionerRole/dr1")
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    """Shared by the tests that only read (nothing they do may change the data)."""
    yield from _serve(tmp_path_factory.mktemp("tokens") / "fhir.db", parts)


@pytest.fixture
def fresh(tmp_path: Any, parts: Parts) -> Iterator[TestClient]:
    """A server of its own, for tests whose writes could succeed."""
    yield from _serve(tmp_path / "fhir.db", parts)


def app_token(c: TestClient, scope: str, user: str = "pat1", launch: str = "") -> dict[str, Any]:
    """The token response of the authorization-code flow (tests/smart.py code_flow)."""
    r = code_flow(c, APP, scope, user, launch)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["patient"] == "p1" and set(body["scope"].split()) == set(scope.split())
    return body


def ehr_token(c: TestClient, scope: str) -> dict[str, Any]:
    """A practitioner's token from an EHR launch whose launch value names p1."""
    launch = admin.create_launch(auth_of(c).store, APP, "drwang", "Patient/p1")
    return app_token(c, scope.replace("launch/patient", "launch"), "drwang", launch)


def as_bearer(c: TestClient, token: dict[str, Any]) -> Any:
    """A client whose every request carries the token (RFC 6750 §2.1)."""
    c2 = TestClient(c.app, raise_server_exceptions=False)
    c2.headers["Authorization"] = f"Bearer {token['access_token']}"
    return c2


@pytest.fixture(scope="module", params=["standalone patient", "EHR launch"])
def reader(request: pytest.FixtureRequest, server: TestClient) -> Any:
    """A client carrying a READ token for p1: a patient's own, or a practitioner's launched
    with p1 (a `user` principal with patient context)."""
    get = app_token if request.param == "standalone patient" else ehr_token
    return as_bearer(server, get(server, READ))


def total(c: Any, url: str, **params: str) -> int:
    r = c.get(url, params={**params, "_total": "accurate"})
    assert r.status_code == 200, r.text
    count: int = r.json()["total"]
    assert count == len(ids(r))
    return count


# --- (1) nothing of p2 leaks --------------------------------------------------------------------


def test_the_token_sees_its_own_patients_data(reader: Any) -> None:
    assert ids(reader.get("/fhir/Observation")) == P1_OBSERVATIONS
    assert ids(reader.get("/fhir/Patient")) == {"Patient/p1"}
    assert total(reader, "/fhir/Observation") == 2
    assert reader.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 2
    assert reader.get("/fhir/Patient/p1").json()["name"] == [{"family": "One"}]
    assert reader.get("/fhir/Observation/o1-lab/_history/1").status_code == 200
    assert ids(reader.get("/fhir/Patient/p1/Observation")) == P1_OBSERVATIONS


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient/p2",
        "/fhir/Patient/p2/_history/1",
        "/fhir/Patient/p2/_history",
        "/fhir/Observation/o2-lab",
        "/fhir/Observation/o2-lab/_history/1",
        "/fhir/Observation/o2-lab/_history",
        "/fhir/Observation/o2-focus",
    ],
)
def test_reading_p2s_resources_answers_404(reader: Any, url: str) -> None:
    r = reader.get(url)
    assert r.status_code == 404, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Two" not in r.text and "subject" not in r.text


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/fhir/Observation", {"patient": "p2"}),
        ("/fhir/Observation", {"subject": "Patient/p2"}),
        ("/fhir/Observation", {"identifier": "urn:test|o2-lab"}),
        ("/fhir/Observation", {"_id": "o2-lab,o2-focus"}),
        ("/fhir/Patient", {"_id": "p2"}),
        ("/fhir/Patient", {"name": "Two"}),
        ("/fhir/Patient/p2/Observation", {}),
        ("/fhir/Patient/p2/Observation", {"_include": "Observation:subject"}),
        ("/fhir", {"_type": "Patient,Observation", "_id": "p2,o2-lab,o2-focus"}),
    ],
)
def test_searches_aimed_at_p2_are_empty_total_included(
    reader: Any, url: str, params: dict[str, str]
) -> None:
    assert total(reader, url, **params) == 0
    counted = reader.get(url, params={**params, "_summary": "count"})
    assert counted.status_code == 200 and counted.json()["total"] == 0


def test_include_and_revinclude_do_not_reach_p2(reader: Any) -> None:
    got = ids(reader.get("/fhir/Observation", params={"_include": "Observation:focus"}))
    assert got == P1_OBSERVATIONS  # o1-lab's focus is p2: not included
    got = ids(reader.get("/fhir/Observation", params={"_include": "Observation:subject"}))
    assert got == {*P1_OBSERVATIONS, "Patient/p1"}
    got = ids(reader.get("/fhir/Patient", params={"_revinclude": "Observation:focus"}))
    assert got == {"Patient/p1"}  # o2-focus points at p1 but is p2's
    got = ids(reader.get("/fhir/Patient", params={"_revinclude": "Observation:subject"}))
    assert got == {"Patient/p1", *P1_OBSERVATIONS}
    iterate = {"_include": "Observation:focus", "_include:iterate": "Patient:link"}
    assert ids(reader.get("/fhir/Observation", params=iterate)) == P1_OBSERVATIONS


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/fhir/Observation", {"subject:Patient.name": "Two"}),
        ("/fhir/Observation", {"patient.family": "Two"}),
        ("/fhir/Patient", {"_has:Observation:subject:identifier": "urn:test|o2-lab"}),
        ("/fhir", {"_type": "Observation", "subject:Patient.name": "Two"}),
    ],
)
def test_chains_and_has_are_refused(reader: Any, url: str, params: dict[str, str]) -> None:
    forbidden(reader.get(url, params=params))


def test_system_search_is_narrowed_and_needs_type(reader: Any) -> None:
    got = ids(reader.get("/fhir", params={"_type": "Observation,Patient"}))
    assert got == {"Patient/p1", *P1_OBSERVATIONS}
    assert total(reader, "/fhir", _type="Observation,Patient") == 3
    forbidden(reader.get("/fhir"))
    forbidden(reader.get("/fhir/_history"))
    forbidden(reader.get("/fhir/Observation/_history"))


def test_batch_get_entries_for_p2_find_nothing(reader: Any) -> None:
    urls = [
        "Observation/o2-lab",
        "Patient/p2",
        "Observation/o2-lab/_history/1",
        "Observation?patient=p2&_total=accurate",
        "Patient/p2/Observation",
        "Patient?_revinclude=Observation:focus",
        "Observation/o1-vital",
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": u}} for u in urls],
    }
    r = reader.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["404"] * 3 + ["200"] * 4
    assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in entries[:3])
    assert all("resource" not in e for e in entries[:3])
    found = entries[3]["resource"]
    assert found["total"] == 0 and not found.get("entry")
    assert not entries[4]["resource"].get("entry")
    assert [e["resource"]["id"] for e in entries[5]["resource"]["entry"]] == ["p1"]
    assert entries[6]["resource"]["id"] == "o1-vital"


def test_writes_are_refused_to_a_read_token(server: TestClient, reader: Any) -> None:
    """rs grants neither create, update nor delete: 403 for each, conditional ones aimed at
    p2 included, and nothing changes."""
    mine = observation("o2-lab", "p2", "laboratory", status="amended")
    new = {k: v for k, v in mine.items() if k != "id"}
    by_identifier = {"identifier": "urn:test|o2-lab"}
    forbidden(reader.post("/fhir/Observation", json=new))
    forbidden(reader.put("/fhir/Observation/o2-lab", json=mine))
    forbidden(reader.put("/fhir/Observation", params=by_identifier, json=new))
    forbidden(reader.delete("/fhir/Observation", params=by_identifier))
    forbidden(reader.delete("/fhir/Observation/o2-lab"))
    stored = server.get("/fhir/Observation/o2-lab").json()  # no token: auth off in tests
    assert stored["status"] == "final" and stored["meta"]["versionId"] == "1"
    assert len(ids(server.get("/fhir/Observation"))) == 4


def test_a_write_token_cannot_reach_or_write_p2(fresh: TestClient) -> None:
    """patient/Observation.cruds: conditional update/delete whose criteria match only p2's
    resource see no match (so nothing of p2 changes); writing an Observation of p2 is 403."""
    writer = as_bearer(fresh, app_token(fresh, "launch/patient patient/Observation.cruds"))
    by_identifier = {"identifier": "urn:test|o2-lab"}
    gone = writer.delete("/fhir/Observation", params=by_identifier)
    assert gone.status_code in (200, 204), gone.text
    assert writer.delete("/fhir/Observation", params={"patient": "p2"}).status_code in (200, 204)
    theirs = {k: v for k, v in observation("x", "p2", "laboratory").items() if k != "id"}
    forbidden(writer.put("/fhir/Observation", params=by_identifier, json=theirs))
    forbidden(writer.post("/fhir/Observation", json=theirs))
    moved_away = observation("o1-lab", "p2", "laboratory")
    forbidden(writer.put("/fhir/Observation/o1-lab", json=moved_away))
    moved_here = observation("o2-lab", "p1", "laboratory")
    assert writer.put("/fhir/Observation/o2-lab", json=moved_here).status_code == 404
    assert writer.delete("/fhir/Observation/o2-focus").status_code == 404
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": theirs, "request": {"method": "POST", "url": "Observation"}}],
    }
    forbidden(writer.post("/fhir", json=transaction))
    # as stored, read without a token
    for oid in ("o2-lab", "o2-focus"):
        stored = fresh.get(f"/fhir/Observation/{oid}").json()
        assert stored["subject"]["reference"] == "Patient/p2", oid
        assert stored["meta"]["versionId"] == "1", oid
    assert fresh.get("/fhir/Observation/o1-lab").json()["subject"]["reference"] == "Patient/p1"
    assert len(ids(fresh.get("/fhir/Observation"))) == 4
    mine = {k: v for k, v in observation("o2-lab", "p1", "laboratory").items() if k != "id"}
    exists = {"If-None-Exist": "identifier=urn:test|o2-lab"}
    created = writer.post("/fhir/Observation", json=mine, headers=exists)
    assert created.status_code == 201  # a new one of p1's, not p2's answered as existing
    assert created.json()["subject"]["reference"] == "Patient/p1"


def test_only_the_access_token_is_a_bearer_token(fresh: TestClient) -> None:
    """The refresh token and the id_token of the same grant are not access tokens (RFC 6750,
    SMART: the access token is what the resource server takes)."""
    token = app_token(fresh, f"openid fhirUser online_access {READ}")
    for other in (token["refresh_token"], token["id_token"]):
        r = fresh.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    assert as_bearer(fresh, token).get("/fhir/Patient/p1").status_code == 200


@pytest.mark.parametrize("scope", ["user/Patient.rs user/Observation.rs", "user/*.rs"])
def test_a_patient_users_user_scopes_reach_only_their_own_record(
    server: TestClient, scope: str
) -> None:
    """`user/` grants what the user may see (SMART App Launch 2.x); a patient who signs in
    may see their own record only (issue 10), whatever scopes the app asked for."""
    c = as_bearer(server, app_token(server, scope))
    assert ids(c.get("/fhir/Observation")) == P1_OBSERVATIONS
    assert total(c, "/fhir/Patient") == 1
    assert c.get("/fhir/Observation/o2-lab").status_code == 404
    assert c.get("/fhir/Patient/p2").status_code == 404
    got = ids(c.get("/fhir/Patient", params={"_revinclude": "Observation:focus"}))
    assert got == {"Patient/p1"}
    forbidden(c.get("/fhir/Observation", params={"subject:Patient.name": "Two"}))
    forbidden(c.get("/fhir"))
    forbidden(c.get("/fhir/Observation/_history"))


# --- (2) granular scopes ------------------------------------------------------------------------


def test_a_granular_category_scope_returns_only_vital_signs(server: TestClient) -> None:
    scope = f"launch/patient patient/Observation.rs?category={CATEGORY}|vital-signs"
    c = as_bearer(server, app_token(server, scope))
    assert ids(c.get("/fhir/Observation")) == {"Observation/o1-vital"}
    assert total(c, "/fhir/Observation", category="laboratory") == 0
    assert c.get("/fhir/Observation/o1-vital").status_code == 200
    assert c.get("/fhir/Observation/o1-lab").status_code == 404
    forbidden(c.get("/fhir/Patient"))  # no Patient scope was asked for


# --- (3) v1 and v2 scopes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1_and_v2(server: TestClient) -> tuple[Any, Any]:
    v1 = app_token(server, "launch/patient patient/Patient.read patient/Observation.read")
    return as_bearer(server, v1), as_bearer(server, app_token(server, READ))


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Observation",
        "/fhir/Observation?category=laboratory",
        "/fhir/Observation?_include=Observation:subject&_include=Observation:focus",
        "/fhir/Patient?_revinclude=Observation:focus",
        "/fhir/Patient/p2/Observation",
        "/fhir?_type=Patient,Observation",
    ],
)
def test_v1_read_and_v2_rs_give_the_same_results(v1_and_v2: tuple[Any, Any], url: str) -> None:
    v1, v2 = v1_and_v2
    assert ids(v1.get(url)) == ids(v2.get(url))
    if "p2" not in url:
        assert ids(v1.get(url))  # not two empty results compared


def test_v1_read_and_v2_rs_give_the_same_answers_to_reads(v1_and_v2: tuple[Any, Any]) -> None:
    v1, v2 = v1_and_v2
    for url in ("/fhir/Observation/o1-lab", "/fhir/Observation/o2-lab", "/fhir/Patient/p2"):
        assert v1.get(url).status_code == v2.get(url).status_code, url
    forbidden(v1.post("/fhir/Observation", json=observation("v", "p1", "laboratory")))


# --- (4) Backend Services -----------------------------------------------------------------------


def test_a_backend_services_token_searches_patients_only(server: TestClient) -> None:
    key = RSAKey.generate_key(2048, {"kid": "emr1"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}
    admin.add_client(auth_of(server).store, EMR, [], jwks=jwks, scope="system/*.rs")
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion(key, "RS384", EMR),
    }
    r = server.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Patient.rs" and "patient" not in r.json()
    c = as_bearer(server, r.json())
    assert ids(c.get("/fhir/Patient")) == {"Patient/p1", "Patient/p2"}
    assert c.get("/fhir/Patient/p2").status_code == 200
    forbidden(c.get("/fhir/Observation"))
    forbidden(c.get("/fhir/Observation/o1-lab"))
    forbidden(c.get("/fhir/Patient/p1/Observation"))
    got = ids(c.get("/fhir/Patient", params={"_revinclude": "Observation:subject"}))
    assert got == {"Patient/p1", "Patient/p2"}  # Observations are not readable: left out


# --- (5) revocation -----------------------------------------------------------------------------


def test_a_revoked_token_gets_401(server: TestClient) -> None:
    token = app_token(server, READ)
    c = as_bearer(server, token)
    assert c.get("/fhir/Patient/p1").status_code == 200
    r = server.post("/auth/revoke", data={"token": token["access_token"], "client_id": APP})
    assert r.status_code == 200, r.text
    for url in ("/fhir/Patient/p1", "/fhir/Observation", "/fhir/Patient/p2"):
        refused = c.get(url)
        assert refused.status_code == 401, url
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert refused.json()["resourceType"] == "OperationOutcome"
