"""CORS for browser apps on other origins (Fetch standard, CORS protocol; SMART App Launch 2.x:
discovery for any origin, the token endpoint and the FHIR API for registered origins only),
and the demo consortium's sample app and users, signed in through the real login form."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from smart import hidden, pkce

from fhir_server import cli
from fhir_server.app import load_demo
from fhir_server.auth import admin
from fhir_server.auth.demo import DEMO_PASSWORD, DEMO_REDIRECT

APP = "https://app.example:8443"
OTHER = "https://evil.example"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Wang"}]}


def _store(c: TestClient) -> Any:
    return c.app.state.services.features["auth"].store  # type: ignore[attr-defined]


def _database(c: TestClient) -> str:
    return str(c.app.state.services.settings.database)  # type: ignore[attr-defined]


def _acs(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def _preflight(c: TestClient, path: str, origin: str, method: str = "PUT") -> Any:
    return c.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )


@pytest.fixture
def app_client(client: TestClient) -> TestClient:
    """A public app on APP registered through the console script, as an operator does, on the
    running server's database file; and one stored Patient."""
    code = cli.main(
        [
            "client", "add", "--client-id", "spa", "--public",
            "--redirect-uri", f"{APP}/callback", "--origin", APP,
            "--database", _database(client),
        ]
    )  # fmt: skip
    assert code == 0
    assert client.put("/fhir/Patient/p1", json=PATIENT).status_code == 201
    return client


# --- registered origins ---------------------------------------------------------------------


def test_preflight_on_a_fhir_path_from_a_registered_origin_allows_it(app_client: TestClient):
    r = _preflight(app_client, "/fhir/Patient/p1", APP)
    # without CORS an OPTIONS here is a 405; a preflight needs a 2xx (Fetch §4.8)
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == APP  # never * where access is granted
    assert "Origin" in r.headers["vary"]
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    wanted = {"authorization", "content-type", "prefer", "if-match", "if-none-match"}
    assert wanted | {"if-none-exist"} <= allowed


def test_actual_requests_from_a_registered_origin_get_their_origin_and_exposed_headers(
    app_client: TestClient,
):
    r = app_client.get("/fhir/Patient/p1", headers={"Origin": APP})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP
    assert "Origin" in r.headers["vary"]
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    wanted = {"location", "etag", "last-modified", "content-location", "x-request-id"}
    assert wanted <= exposed
    created = app_client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers={"Origin": APP}
    )
    assert created.status_code == 201 and "location" in created.headers
    assert created.headers["access-control-allow-origin"] == APP


def test_the_token_endpoint_answers_a_registered_origin_also_with_an_oauth_error(
    app_client: TestClient,
):
    pre = _preflight(app_client, "/auth/token", APP, "POST")
    assert pre.status_code in (200, 204)
    assert pre.headers["access-control-allow-origin"] == APP
    assert "POST" in pre.headers["access-control-allow-methods"]
    form = {"grant_type": "authorization_code", "code": "nope", "client_id": "spa"}
    r = app_client.post("/auth/token", data=form, headers={"Origin": APP})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # the app can read it
    assert r.headers["access-control-allow-origin"] == APP
    for path in ("/auth/introspect", "/auth/revoke"):
        assert _preflight(app_client, path, APP, "POST").headers[
            "access-control-allow-origin"
        ] == APP


def test_the_origins_of_the_redirect_uris_are_registered_by_default(client: TestClient):
    admin.add_client(_store(client), "spa2", ["http://Localhost:80/cb", "https://x.example/a"],
                     public=True)  # fmt: skip
    # a browser sends the serialized origin: lower case, no default port (RFC 6454 §6.2)
    for origin in ("http://localhost", "https://x.example"):
        r = client.get("/fhir/Patient", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in client.get(
        "/fhir/Patient", headers={"Origin": "http://localhost:8080"}
    ).headers


def test_an_origin_with_a_path_is_refused_at_registration(client: TestClient, capsys: Any):
    code = cli.main(
        [
            "client", "add", "--client-id", "bad", "--public", "--redirect-uri", f"{APP}/cb",
            "--origin", f"{APP}/app", "--database", _database(client),
        ]
    )  # fmt: skip
    assert code == 2 and "origin" in capsys.readouterr().err
    assert _store(client).client("bad") is None


def test_a_removed_client_s_origin_is_no_longer_allowed(app_client: TestClient):
    assert cli.main(["client", "remove", "spa", "--database", _database(app_client)]) == 0
    r = app_client.get("/fhir/Patient/p1", headers={"Origin": APP})
    assert r.status_code == 200 and _acs(r.headers) == {}


def test_with_auth_on_a_preflight_needs_no_token_and_a_401_is_readable(client_with: Any):
    c = client_with(auth="on")
    admin.add_client(_store(c), "spa", [f"{APP}/cb"], public=True)
    pre = _preflight(c, "/fhir/Patient", APP, "GET")
    assert pre.status_code in (200, 204) and pre.headers["access-control-allow-origin"] == APP
    r = c.get("/fhir/Patient", headers={"Origin": APP})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert r.headers["access-control-allow-origin"] == APP
    # RFC 6750 puts the error code in WWW-Authenticate: the app must be able to read it
    assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()


# --- origins nobody registered ----------------------------------------------------------------


def test_an_unregistered_origin_gets_no_cors_headers_and_the_same_answers(app_client: TestClient):
    for path in ("/fhir/Patient/p1", "/fhir/Patient?family=Wang"):
        plain, other = app_client.get(path), app_client.get(path, headers={"Origin": OTHER})
        assert (other.status_code, other.content) == (plain.status_code, plain.content)
        assert _acs(other.headers) == {}
    # the preflight goes on to the routes as any OPTIONS request: 405, as without CORS
    plain = app_client.options("/fhir/Patient/p1")
    pre = _preflight(app_client, "/fhir/Patient/p1", OTHER)
    assert pre.status_code == plain.status_code == 405
    assert pre.headers["allow"] == plain.headers["allow"] and _acs(pre.headers) == {}
    form = {"grant_type": "authorization_code", "code": "nope", "client_id": "spa"}
    token = app_client.post("/auth/token", data=form, headers={"Origin": OTHER})
    assert token.status_code == 400 and _acs(token.headers) == {}
    assert _acs(_preflight(app_client, "/auth/token", OTHER, "POST").headers) == {}
    for origin in ("null", f"{APP}.evil.example", "http://app.example:8443"):
        assert _acs(app_client.get("/fhir/Patient/p1", headers={"Origin": origin}).headers) == {}


def test_discovery_and_metadata_are_open_to_any_origin(app_client: TestClient):
    for path in ("/fhir/.well-known/smart-configuration", "/fhir/metadata", "/auth/jwks"):
        r = app_client.get(path, headers={"Origin": OTHER})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        pre = _preflight(app_client, path, OTHER, "GET")
        assert pre.status_code in (200, 204)
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()


# --- the demo consortium's sign-ins ---------------------------------------------------------


def test_the_demo_s_doctor_gets_a_token_for_the_demo_app_that_reads_patients(
    client: TestClient,
):
    summary = load_demo(client.app.state.services)  # type: ignore[attr-defined]
    assert summary is not None and DEMO_PASSWORD in summary and "dr-hz-first" in summary
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": "demo-app",
        "redirect_uri": DEMO_REDIRECT,
        "scope": "openid fhirUser user/*.rs",
        "state": "s1",
        "aud": "http://testserver/fhir",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = client.get("/auth/authorize", params=params)
    assert 'name="password"' in page.text  # the login form, as a browser gets it
    form = {**hidden(page.text), "username": "dr-hz-first", "password": DEMO_PASSWORD}
    consent = client.post("/auth/authorize", data=form, follow_redirects=False)
    assert 'name="approve"' in consent.text, consent.text  # the demo app is not trusted
    r = client.post(
        "/auth/authorize", data={**hidden(consent.text), "approve": "yes"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 302 and r.headers["location"].startswith(DEMO_REDIRECT)
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    token = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code", "code": code, "client_id": "demo-app",
            "redirect_uri": DEMO_REDIRECT, "code_verifier": verifier,
        },
        headers={"Origin": "http://127.0.0.1:9000"},
    )  # fmt: skip
    assert token.status_code == 200, token.text
    assert token.headers["access-control-allow-origin"] == "http://127.0.0.1:9000"
    body = token.json()
    claims = body["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert claims["fhirUser"] == "http://testserver/fhir/PractitionerRole/role-hz-first-dr1"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    patients = client.get("/fhir/Patient?_count=5", headers=bearer)
    assert patients.status_code == 200
    assert patients.json()["total"] >= 1 and patients.json()["entry"]
    # and a wrong password is refused
    wrong = {**hidden(page.text), "username": "dr-hz-first", "password": "not-the-password"}
    client.cookies.clear()
    assert client.post("/auth/authorize", data=wrong).status_code == 401


def test_the_demo_registers_one_user_per_hospital_and_the_first_patient(client: TestClient):
    services = client.app.state.services  # type: ignore[attr-defined]
    load_demo(services)
    store = _store(client)
    for oid in ("hz-first", "xihu-people", "mishixiang-chc"):
        user = store.user(f"dr-{oid}")
        assert user["fhir_user"] == f"PractitionerRole/role-{oid}-dr1"
        assert client.get(f"/fhir/{user['fhir_user']}").status_code == 200  # it exists
    assert store.user("pat-001")["fhir_user"] == "Patient/pat-001"
    app = store.client("demo-app")
    assert app["token_endpoint_auth_method"] == "none"
    assert app["origins"] == ["http://127.0.0.1:9000"]
    assert load_demo(services, only_if_empty=True) is None  # not empty any more
