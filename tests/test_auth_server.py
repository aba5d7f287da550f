"""The SMART authorization server over HTTP (RFC 6749, 7636, 7662, 7009, 7523; SMART App
Launch 2.x): login and consent forms driven like a browser, every refusal tested."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import copy_database, make_services
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from smart import (
    BASE,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    TOKEN_URL,
    assertion,
    auth_code,
    auth_of,
    drive,
    hidden,
    pkce,
)

from fhir_server import cli
from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts


def _put(c: TestClient, resource: dict[str, Any]) -> None:
    r = c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def hospital_database(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Path:
    """The hospital's database, built once for the module (conftest.copy_database)."""
    path = tmp_path_factory.mktemp("hospital") / "fhir.db"
    services = make_services(path, parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        _hospital(c)
    return path


@pytest.fixture
def hospital(hospital_database: Path, tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """A server over a copy of the hospital's database."""
    services = make_services(copy_database(hospital_database, tmp_path / "fhir.db"), parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c


def _hospital(client: TestClient) -> None:
    """Two organizations, a practitioner of the first, two of its patients and one of the
    other's; a confidential app, a public app, and users."""
    _put(client, {"resourceType": "Organization", "id": "h1", "name": "Hospital One"})
    _put(client, {"resourceType": "Organization", "id": "h2", "name": "Hospital Two"})
    _put(
        client,
        {
            "resourceType": "PractitionerRole",
            "id": "dr1",
            "organization": {"reference": "Organization/h1"},
        },
    )
    for pid, org, family in (("p1", "h1", "Wang"), ("p2", "h1", "Li"), ("p3", "h2", "Zhao")):
        _put(
            client,
            {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"family": family}],
                "managingOrganization": {"reference": f"Organization/{org}"},
            },
        )
    store = auth_of(client).store
    admin.add_client(store, "conf", [REDIRECT], secret="app-secret")
    admin.add_client(store, "pub", [REDIRECT], public=True, trusted=True)
    admin.add_user(store, "drwang", PASSWORD, "PractitionerRole/dr1")
    admin.add_user(store, "pat1", PASSWORD, "Patient/p1")


def _request(client_id: str = "conf", **extra: str) -> tuple[dict[str, str], str]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient patient/*.rs offline_access",
        "state": secrets.token_urlsafe(16),
        "aud": BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": "n-0S6",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v != ""}, verifier


def _drive(
    c: TestClient, params: dict[str, str], user: str = "drwang", patient: str = "Patient/p1"
) -> Any:
    return drive(c, params, user, patient)


def _exchange(
    c: TestClient,
    code: str,
    verifier: str | None,
    client: tuple[str, str] = ("conf", "app-secret"),
    **extra: str,
) -> Any:
    """The code exchanged at the token endpoint by `client` (HTTP Basic)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return c.post("/auth/token", data=form, auth=client)


def _token(c: TestClient, **extra: str) -> dict[str, Any]:
    params, verifier = _request(**extra)
    r = _exchange(c, auth_code(_drive(c, params), params["state"]), verifier)
    assert r.status_code == 200, r.text
    return r.json()


# --- authorization code flow ---------------------------------------------------------------


def test_code_flow_with_login_picker_and_consent_gives_token_with_patient(
    hospital: TestClient,
) -> None:
    params, verifier = _request()
    r = hospital.get("/auth/authorize", params=params, follow_redirects=False)
    assert 'name="username"' in r.text and 'name="password"' in r.text
    form = {**hidden(r.text), "username": "drwang", "password": PASSWORD}
    picker = hospital.post("/auth/authorize", data=form, follow_redirects=False)
    # the picker lists the patients of the user's organization only, with both languages
    assert "Patient/p1" in picker.text and "Patient/p2" in picker.text
    assert "Patient/p3" not in picker.text and "选择患者" in picker.text
    consent = hospital.post(
        "/auth/authorize",
        data={**hidden(picker.text), "patient": "Patient/p2"},
        follow_redirects=False,
    )
    assert 'name="approve" value="yes"' in consent.text
    done = hospital.post(
        "/auth/authorize", data={**hidden(consent.text), "approve": "yes"}, follow_redirects=False
    )
    r = _exchange(hospital, auth_code(done, params["state"]), verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["patient"] == "p2" and body["need_patient_banner"] is True
    assert body["refresh_token"] and body["id_token"]
    assert set(body["scope"].split()) == set(params["scope"].split())


def test_picker_refuses_a_patient_of_another_organization(hospital: TestClient) -> None:
    params, _ = _request()
    r = _drive(hospital, params, patient="Patient/p3")
    assert r.status_code == 200 and 'type="radio" name="patient"' in r.text  # asked again


def test_consent_denied_redirects_with_access_denied(hospital: TestClient) -> None:
    params, _ = _request(scope="openid fhirUser user/*.rs")
    r = hospital.get("/auth/authorize", params=params)
    r = hospital.post(
        "/auth/authorize", data={**hidden(r.text), "username": "drwang", "password": PASSWORD}
    )
    r = hospital.post(
        "/auth/authorize", data={**hidden(r.text), "approve": "no"}, follow_redirects=False
    )
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["error"] == ["access_denied"] and "code" not in query


def test_consent_without_our_csrf_value_is_not_taken(hospital: TestClient) -> None:
    params, _ = _request(scope="user/*.rs")
    r = hospital.get("/auth/authorize", params=params)
    r = hospital.post(
        "/auth/authorize", data={**hidden(r.text), "username": "drwang", "password": PASSWORD}
    )
    forged = {k: v for k, v in hidden(r.text).items() if k != "csrf"}
    r = hospital.post("/auth/authorize", data={**forged, "approve": "yes"}, follow_redirects=False)
    assert r.status_code == 200 and 'name="approve"' in r.text


def test_authorize_by_post_and_scope_narrowed_to_the_clients(hospital: TestClient) -> None:
    admin.add_client(
        auth_of(hospital).store,
        "narrow",
        [REDIRECT],
        secret="s",
        trusted=True,
        scope="openid fhirUser user/Observation.rs",
    )
    params, verifier = _request("narrow", scope="openid fhirUser user/*.rs user/Observation.r")
    r = hospital.post("/auth/authorize", data=params)
    r = hospital.post(
        "/auth/authorize",
        data={**hidden(r.text), "username": "drwang", "password": PASSWORD},
        follow_redirects=False,
    )
    form = {
        "grant_type": "authorization_code",
        "code": auth_code(r),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    body = hospital.post("/auth/token", data=form, auth=("narrow", "s")).json()
    assert body["scope"] == "openid fhirUser user/Observation.r"
    assert "refresh_token" not in body  # no offline_access/online_access asked


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"code_challenge": "", "code_challenge_method": ""}, "no PKCE"),
        ({"code_challenge_method": "plain"}, "plain"),
        ({"code_challenge_method": ""}, "no method (stock default: plain)"),
        ({"aud": "http://other.example/fhir"}, "wrong aud"),
        ({"aud": ""}, "no aud"),
        ({"response_type": "token"}, "implicit"),
    ],
)
def test_bad_authorization_requests_redirect_with_error_and_no_code(
    hospital: TestClient, change: dict[str, str], why: str
) -> None:
    params, _ = _request(**change)
    params = {k: v for k, v in params.items() if v != ""}
    r = _drive(hospital, params)
    assert r.status_code == 302, why
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert "code" not in query, why
    assert query["state"] == [params["state"]]
    expected = "unsupported_response_type" if "response_type" in change else "invalid_request"
    assert query["error"] == [expected], why


@pytest.mark.parametrize("redirect", ["http://evil.example/cb", REDIRECT + "/x", ""])
def test_unregistered_redirect_uri_is_never_redirected_to(
    hospital: TestClient, redirect: str
) -> None:
    admin.add_client(auth_of(hospital).store, "two", [REDIRECT, REDIRECT + "2"], secret="s")
    params, _ = _request("two", redirect_uri=redirect)
    r = hospital.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 400 and "location" not in r.headers


def test_unknown_client_is_a_page_not_a_redirect(hospital: TestClient) -> None:
    params, _ = _request("nobody")
    r = hospital.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 400 and "location" not in r.headers


@pytest.mark.parametrize("verifier", [None, "", "wrong" * 10])
def test_missing_or_wrong_code_verifier_gets_no_token(hospital: TestClient, verifier: Any) -> None:
    params, _ = _request()
    r = _exchange(hospital, auth_code(_drive(hospital, params)), verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "access_token" not in r.json()


def test_code_is_single_use(hospital: TestClient) -> None:
    params, verifier = _request()
    code = auth_code(_drive(hospital, params))
    assert _exchange(hospital, code, verifier).status_code == 200
    again = _exchange(hospital, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_code_of_one_client_is_refused_to_another(hospital: TestClient) -> None:
    admin.add_client(auth_of(hospital).store, "other", [REDIRECT], secret="other-secret")
    params, verifier = _request()
    code = auth_code(_drive(hospital, params))
    r = _exchange(hospital, code, verifier, client=("other", "other-secret"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_401_invalid_client(hospital: TestClient) -> None:
    params, verifier = _request()
    r = _exchange(hospital, auth_code(_drive(hospital, params)), verifier, client=("conf", "nope"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")


# --- refresh ---------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_is_used_up(hospital: TestClient) -> None:
    first = _token(hospital)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    r = hospital.post("/auth/token", data=form, auth=("conf", "app-secret"))
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == "p1"
    again = hospital.post("/auth/token", data=form, auth=("conf", "app-secret"))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_public_client_refreshes_without_client_id(hospital: TestClient) -> None:
    """RFC 6749 §6: client-js sends only grant_type and refresh_token for a public client."""
    params, verifier = _request("pub", scope="openid fhirUser patient/*.rs online_access")
    r = _drive(hospital, params, user="pat1")
    form = {
        "grant_type": "authorization_code",
        "code": auth_code(r),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": "pub",
    }
    body = hospital.post("/auth/token", data=form).json()
    assert body["patient"] == "p1"  # a patient user is their own context
    r = hospital.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == body["scope"]


def test_refresh_may_not_widen_scope(hospital: TestClient) -> None:
    first = _token(hospital, scope="patient/Patient.rs offline_access launch/patient")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "scope": "patient/*.rs offline_access",
    }
    r = hospital.post("/auth/token", data=form, auth=("conf", "app-secret"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


# --- rate limit --------------------------------------------------------------------------------


def test_failed_logins_are_rate_limited_per_user(hospital: TestClient) -> None:
    params, _ = _request()
    page = hospital.get("/auth/authorize", params=params).text
    for _ in range(5):
        r = hospital.post(
            "/auth/authorize",
            data={**hidden(page), "username": "drwang", "password": "wrong password"},
        )
        assert r.status_code == 401
    r = hospital.post(
        "/auth/authorize", data={**hidden(page), "username": "drwang", "password": PASSWORD}
    )
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert "code=" not in r.headers.get("location", "")


# --- id_token, discovery ------------------------------------------------------------------------


def test_id_token_verifies_against_the_published_jwks(hospital: TestClient) -> None:
    body = _token(hospital)
    keys = KeySet.import_key_set(hospital.get("/auth/jwks").json())
    token = jwt.decode(body["id_token"], keys, algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    claims = token.claims
    config = hospital.get("/fhir/.well-known/smart-configuration").json()
    assert claims["iss"] == config["issuer"] and claims["aud"] == "conf"
    assert claims["fhirUser"] == f"{BASE}/PractitionerRole/dr1"
    assert claims["nonce"] == "n-0S6" and claims["sub"] == "drwang"
    assert claims["exp"] > time.time()


def test_smart_configuration_is_json_whatever_accept(hospital: TestClient) -> None:
    r = hospital.get("/fhir/.well-known/smart-configuration", headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["access-control-allow-origin"] == "*"
    config = r.json()
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["authorization_endpoint"] == "http://testserver/auth/authorize"
    assert config["token_endpoint"] == TOKEN_URL
    assert {"launch-ehr", "launch-standalone", "sso-openid-connect"} <= set(config["capabilities"])
    assert config["jwks_uri"] == "http://testserver/auth/jwks"
    assert "grant_types_supported" in config


def test_capability_statement_carries_oauth_uris(hospital: TestClient) -> None:
    security = hospital.get("/fhir/metadata").json()["rest"][0]["security"]
    ext = security["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["authorize"] == "http://testserver/auth/authorize"
    assert uris["token"] == TOKEN_URL


# --- resource server, introspection, revocation ------------------------------------------------


def test_bearer_token_becomes_the_principal_and_bad_ones_are_401(hospital: TestClient) -> None:
    body = _token(hospital)
    ok = hospital.get(
        "/fhir/Patient/p1", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert ok.status_code == 200
    for header in ("Bearer nonsense", "Bearer ", "Basic Zm9vOmJhcg=="):
        r = hospital.get("/fhir/Patient/p1", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json()["resourceType"] == "OperationOutcome"
    assert hospital.get("/fhir/Patient/p1").status_code == 200  # auth off: anonymous allowed


def test_token_for_another_fhir_base_is_refused(hospital: TestClient) -> None:
    body = _token(hospital)
    r = hospital.get(
        "http://localhost/fhir/Patient/p1",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]


def test_expired_token_is_refused(hospital: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    body = _token(hospital)
    later = time.time() + 3601
    monkeypatch.setattr(time, "time", lambda: later)
    r = hospital.get(
        "/fhir/Patient/p1", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]


def test_revoked_token_is_inactive_and_refused(hospital: TestClient) -> None:
    body = _token(hospital)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    # introspection with a bearer token (SMART), then with client authentication
    r = hospital.post("/auth/introspect", data={"token": body["access_token"]}, headers=bearer)
    info = r.json()
    assert info["active"] is True and info["client_id"] == "conf" and info["patient"] == "p1"
    assert info["scope"] == body["scope"] and info["exp"] > time.time() and info["sub"] == "drwang"
    r = hospital.post(
        "/auth/revoke", data={"token": body["refresh_token"]}, auth=("conf", "app-secret")
    )
    assert r.status_code == 200
    # revoking the refresh token ends the grant's access tokens too (RFC 7009 §2.1)
    r = hospital.post(
        "/auth/introspect", data={"token": body["access_token"]}, auth=("conf", "app-secret")
    )
    assert r.json() == {"active": False}
    assert hospital.get("/fhir/Patient/p1", headers=bearer).status_code == 401


def test_introspection_needs_a_caller(hospital: TestClient) -> None:
    body = _token(hospital)
    r = hospital.post("/auth/introspect", data={"token": body["access_token"]})
    assert r.status_code == 401


def test_auth_on_requires_a_token_except_for_discovery(client_with: Any) -> None:
    c = client_with(auth="on")
    assert c.get("/fhir/Patient").status_code == 401
    assert c.get("/fhir/metadata").status_code == 200
    assert c.get("/fhir/.well-known/smart-configuration").status_code == 200


# --- backend services ------------------------------------------------------------------------


def _backend(c: TestClient, key: Any, client_id: str = "emr") -> None:
    admin.add_client(
        auth_of(c).store,
        client_id,
        [],
        jwks={"keys": [key.as_dict(private=False)]},
        scope="system/*.rs",
    )


def _assertion(key: Any, alg: str, client_id: str = "emr", **claims: Any) -> str:
    return assertion(key, alg, client_id, **claims)


def _client_credentials(c: TestClient, assertion: str, **extra: str) -> Any:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **extra,
    }
    return c.post("/auth/token", data=form)


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return RSAKey.generate_key(2048, {"kid": "rsa1"}, private=True)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return ECKey.generate_key("P-384", {"kid": "ec1"}, private=True)


@pytest.mark.parametrize(("key_name", "alg"), [("rsa_key", "RS384"), ("ec_key", "ES384")])
def test_backend_services_accept_rs384_and_es384(
    hospital: TestClient, request: pytest.FixtureRequest, key_name: str, alg: str
) -> None:
    key = request.getfixturevalue(key_name)
    _backend(hospital, key)
    r = _client_credentials(hospital, _assertion(key, alg))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] <= 300 and "refresh_token" not in body
    assert body["scope"] == "system/Patient.rs"
    assert (
        hospital.get(
            "/fhir/Patient/p1", headers={"Authorization": f"Bearer {body['access_token']}"}
        ).status_code
        == 200
    )


def test_backend_assertion_refusals(hospital: TestClient, rsa_key: Any) -> None:
    _backend(hospital, rsa_key)
    other = RSAKey.generate_key(2048, {"kid": "rsa1"}, private=True)  # same kid, wrong key
    hmac_key = OctKey.generate_key(256, {"kid": "rsa1"})
    replayed = _assertion(rsa_key, "RS384")
    assert _client_credentials(hospital, replayed).status_code == 200
    cases = {
        "jti replay": replayed,
        "exp an hour ahead": _assertion(rsa_key, "RS384", exp=int(time.time()) + 3600),
        "expired": _assertion(rsa_key, "RS384", exp=int(time.time()) - 120),
        "wrong key": _assertion(other, "RS384"),
        "wrong aud": _assertion(rsa_key, "RS384", aud="http://elsewhere/token"),
        "sub differs": _assertion(rsa_key, "RS384", sub="someone"),
        "no jti": _assertion(rsa_key, "RS384", jti=""),
        "RS256 not allowed": _assertion(rsa_key, "RS256"),
        "HS256": jwt.encode(
            {"alg": "HS256", "kid": "rsa1"},
            {
                "iss": "emr",
                "sub": "emr",
                "aud": TOKEN_URL,
                "exp": int(time.time()) + 60,
                "jti": "h",
            },
            hmac_key,
        ),
        "alg none": _unsigned(
            {"iss": "emr", "sub": "emr", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "n"}
        ),
        "unknown client": _assertion(rsa_key, "RS384", client_id="ghost"),
        "jku": _with_jku(rsa_key),
    }
    for why, value in cases.items():
        r = _client_credentials(hospital, value)
        assert r.status_code == 401, why
        assert r.json()["error"] == "invalid_client", why
    wrong_type = _client_credentials(
        hospital, _assertion(rsa_key, "RS384"), client_assertion_type="urn:other"
    )
    assert wrong_type.status_code == 401
    not_allowed = _client_credentials(
        hospital, _assertion(rsa_key, "RS384"), scope="system/Patient.cruds"
    )
    assert not_allowed.status_code == 400 and not_allowed.json()["error"] == "invalid_scope"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'rsa1'})}.{part(claims)}."


def _with_jku(key: Any) -> str:
    now = int(time.time())
    body = {"iss": "emr", "sub": "emr", "aud": TOKEN_URL, "exp": now + 60, "jti": "j"}
    header = {"alg": "RS384", "kid": key.kid, "jku": "http://evil.example/jwks"}
    return jwt.encode(header, body, key, algorithms=["RS384"])


# --- EHR launch ---------------------------------------------------------------------------------


def test_ehr_launch_from_the_cli_carries_patient_and_encounter(
    hospital: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(hospital.app.state.services.settings.database)  # type: ignore[attr-defined]
    assert (
        cli.main(
            [
                "launch",
                "--client-id",
                "conf",
                "--user",
                "drwang",
                "--patient",
                "Patient/p2",
                "--encounter",
                "Encounter/e1",
                "--database",
                database,
            ]
        )
        == 0
    )
    launch = capsys.readouterr().out.strip()
    body = _token(hospital, launch=launch, scope="launch openid fhirUser patient/*.rs")
    assert body["patient"] == "p2" and body["encounter"] == "e1"
    assert body["need_patient_banner"] is False
    # single use
    params, _ = _request(launch=launch, scope="launch patient/*.rs")
    r = _drive(hospital, params)
    assert "code" not in parse_qs(urlsplit(r.headers["location"]).query)


def test_launch_of_another_user_is_refused(hospital: TestClient) -> None:
    admin.add_user(auth_of(hospital).store, "drli", PASSWORD, "PractitionerRole/dr1")
    launch = admin.create_launch(auth_of(hospital).store, "conf", "drli", "Patient/p1")
    params, _ = _request(launch=launch, scope="launch patient/*.rs")
    r = _drive(hospital, params, user="drwang")
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and "code" not in query


def test_emr_gets_a_launch_value_with_a_system_token(hospital: TestClient, rsa_key: Any) -> None:
    _backend(hospital, rsa_key)
    system = _client_credentials(hospital, _assertion(rsa_key, "RS384")).json()["access_token"]
    wanted = {"client_id": "conf", "user": "drwang", "patient": "Patient/p1"}
    assert hospital.post("/auth/launch", json=wanted).status_code == 401
    user_token = _token(hospital)["access_token"]
    r = hospital.post(
        "/auth/launch", json=wanted, headers={"Authorization": f"Bearer {user_token}"}
    )
    assert r.status_code == 401
    r = hospital.post("/auth/launch", json=wanted, headers={"Authorization": f"Bearer {system}"})
    assert r.status_code == 200
    body = _token(hospital, launch=r.json()["launch"], scope="launch patient/*.rs")
    assert body["patient"] == "p1"


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_client_add_prints_json_with_the_secret_hashed(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(client.app.state.services.settings.database)  # type: ignore[attr-defined]
    args = [
        "client",
        "add",
        "--client-id",
        "app1",
        "--redirect-uri",
        REDIRECT,
        "--secret",
        "s3cret-value",
        "--scope",
        "openid user/*.rs",
        "--database",
        database,
    ]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["client_id"] == "app1" and printed["redirect_uris"] == [REDIRECT]
    assert "s3cret-value" not in json.dumps(printed)
    assert printed["secret_hash"].startswith("scrypt$")
    assert cli.main(["client", "list", "--database", database]) == 0
    assert [c["client_id"] for c in json.loads(capsys.readouterr().out)] == ["app1"]
    assert (
        cli.main(
            [
                "user",
                "add",
                "--username",
                "u1",
                "--password",
                "password1",
                "--patient",
                "Patient/p1",
                "--database",
                database,
            ]
        )
        == 0
    )
    assert "password1" not in capsys.readouterr().out
    assert cli.main(["client", "remove", "app1", "--database", database]) == 0
    assert auth_of(client).store.client("app1") is None
