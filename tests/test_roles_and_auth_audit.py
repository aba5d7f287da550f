"""Issue 10 with real tokens: the audit trail is for the auditor role only (read, search,
history); the authorization server's security events go into the same audit chain (IHE BALP /
ATNA: DICOM 110114 User Authentication, 110113 Security Alert); and the referral transitions
belong to one side each (only the receiving organization accepts, only the sender cancels).

Tokens come from the real authorization server (tests/smart.py): the authorization-code flow
with PKCE S256, signed in through the login form."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import BASE, PASSWORD, REDIRECT, auth_code, auth_of, drive, pkce

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

APP = "roles-app"  # a trusted public client: no consent page, PKCE only
EVERYTHING = "openid fhirUser user/*.cruds offline_access"


def serve(path: Path, parts: Parts, **settings: Any) -> Iterator[TestClient]:
    """The real app (audit on) with a trusted public app registered."""
    services = make_services(path, parts, audit=True, **settings)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        admin.add_client(auth_of(c).store, APP, [REDIRECT], public=True, trusted=True)
        yield c


def user(c: TestClient, name: str, role: str = "dr", org: str = "org-a", **kw: Any) -> None:
    """A practitioner user working for `org` (PractitionerRole `role` names the organization)."""
    body = {
        "resourceType": "PractitionerRole",
        "id": role,
        "organization": {"reference": f"Organization/{org}"},
    }
    assert c.put(f"/fhir/PractitionerRole/{role}", json=body).status_code in (200, 201)
    admin.add_user(auth_of(c).store, name, PASSWORD, f"PractitionerRole/{role}", **kw)


def code_flow(c: TestClient, username: str, scope: str = EVERYTHING) -> Any:
    """The authorization-code flow with PKCE S256 in a fresh browser; the token response."""
    browser = TestClient(c.app, raise_server_exceptions=False)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": state,
        "aud": BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    form = {
        "grant_type": "authorization_code",
        "code": auth_code(drive(browser, params, username), state),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": APP,
    }
    return browser.post("/auth/token", data=form)


def bearer(c: TestClient, username: str, scope: str = EVERYTHING) -> TestClient:
    """A client carrying `username`'s access token (RFC 6750 §2.1)."""
    r = code_flow(c, username, scope)
    assert r.status_code == 200, r.text
    out = TestClient(c.app, raise_server_exceptions=False)
    out.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return out


def flush(c: TestClient) -> None:
    c.app.state.services.features["audit"].flush()  # type: ignore[attr-defined]


def ids(r: Any) -> set[str]:
    assert r.status_code == 200, r.text
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in r.json().get("entry", ())
        if e.get("search", {}).get("mode") != "outcome"
    }


# --- 1. AuditEvents: the auditor role only ------------------------------------------------------


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[dict[str, Any]]:
    """An auditor and an ordinary doctor with the same wide scopes, some AuditEvents, and one
    AuditEvent's id."""
    for c in serve(tmp_path_factory.mktemp("roles") / "fhir.db", parts):
        user(c, "auditor1", "aud", roles=["auditor"])
        user(c, "doctor1", "dr")
        pid = c.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
        flush(c)
        auditor, doctor = bearer(c, "auditor1"), bearer(c, "doctor1")
        found = auditor.get("/fhir/AuditEvent", params={"_count": "1"})
        event = next(iter(ids(found)))
        yield {"c": c, "auditor": auditor, "doctor": doctor, "event": event, "patient": pid}


def test_an_auditor_reads_searches_and_histories_audit_events(roles: dict[str, Any]) -> None:
    auditor, event = roles["auditor"], roles["event"]
    assert auditor.get(f"/fhir/{event}").status_code == 200
    assert auditor.get(f"/fhir/{event}/_history/1").status_code == 200
    assert auditor.get(f"/fhir/{event}/_history").status_code == 200
    assert auditor.get("/fhir/AuditEvent/_history").status_code == 200
    assert event in ids(auditor.get("/fhir/AuditEvent", params={"_count": "1000"}))
    assert ids(auditor.get("/fhir", params={"_type": "AuditEvent", "_count": "1000"}))


@pytest.mark.parametrize("suffix", ["", "/_history/1", "/_history"])
def test_audit_events_are_not_found_for_other_users(roles: dict[str, Any], suffix: str) -> None:
    """security.html#AccessDenied: a resource the user may not see answers as unknown (404),
    the same as an id that does not exist."""
    doctor = roles["doctor"]
    r = doctor.get(f"/fhir/{roles['event']}{suffix}")
    assert r.status_code == 404, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    unknown = doctor.get(f"/fhir/AuditEvent/no-such-event{suffix}")
    assert unknown.status_code == 404
    validate = doctor.post(f"/fhir/{roles['event']}/$validate", json={"resourceType": "Parameters"})
    assert validate.status_code == 404


@pytest.mark.parametrize(
    "url, params",
    [
        ("/fhir/AuditEvent", {}),
        ("/fhir/AuditEvent/_history", {}),
        ("/fhir", {"_type": "AuditEvent"}),
        ("/fhir", {"_type": "Patient,AuditEvent"}),
        ("/fhir/Patient", {"_has:AuditEvent:patient:action": "C"}),
        ("/fhir/Patient/{pid}/AuditEvent", {}),
    ],
)
def test_audit_event_searches_are_refused_to_other_users(
    roles: dict[str, Any], url: str, params: dict[str, str]
) -> None:
    """The type is not permitted to this user at all: 403 (security.html#AccessDenied, the
    policy module's convention for an interaction no grant permits), not an empty Bundle."""
    r = roles["doctor"].get(url.format(pid=roles["patient"]), params=params)
    assert r.status_code == 403, r.text
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert roles["auditor"].get(url.format(pid=roles["patient"]), params=params).status_code == 200


def test_searches_of_other_types_reach_no_audit_event(roles: dict[str, Any]) -> None:
    """A system search without _type and _revinclude return everything but AuditEvents to a
    user without the role; to the auditor they return AuditEvents too."""
    doctor, auditor, pid = roles["doctor"], roles["auditor"], roles["patient"]
    every = ids(doctor.get("/fhir", params={"_count": "1000"}))
    assert f"Patient/{pid}" in every
    assert not [i for i in every if i.startswith("AuditEvent/")]
    assert [i for i in ids(auditor.get("/fhir", params={"_count": "1000"}))
            if i.startswith("AuditEvent/")]  # fmt: skip
    params = {"_id": pid, "_revinclude": "AuditEvent:patient"}
    assert ids(doctor.get("/fhir/Patient", params=params)) == {f"Patient/{pid}"}
    assert len(ids(auditor.get("/fhir/Patient", params=params))) > 1


def test_anonymous_reads_audit_events_only_while_auth_is_off(
    tmp_path: Path, parts: Parts
) -> None:
    for c in serve(tmp_path / "off.db", parts, auth="off"):
        c.post("/fhir/Patient", json={"resourceType": "Patient"})
        flush(c)
        assert ids(c.get("/fhir/AuditEvent"))
    for c in serve(tmp_path / "on.db", parts, auth="on"):
        r = c.get("/fhir/AuditEvent")
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
