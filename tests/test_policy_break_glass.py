"""Break-the-glass with real tokens (issue 10: "break-the-glass with a reason, always audited";
security.md §3.2 and §4.1; HIPAA 164.312(a)(2)(ii) emergency access procedure).

A user with the break-glass role who gives a reason in X-Break-Glass-Reason reads a patient
of another hospital that the consortium rule hides from them; every such request is recorded
with AuditEvent.purposeOfEvent v3-ActReason#BTG and the reason. Everyone else, and a request
without a reason, is refused; hidden resources still answer 404 without the header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from smart import JWT_BEARER, PASSWORD, REDIRECT, assertion, auth_of
from test_audit import events
from test_policy_consent import consent, put
from test_policy_consortium import APP, DATA, login
from test_policy_enforce import ids

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

HEADER = "X-Break-Glass-Reason"
REASON = "患者昏迷，急诊抢救 (unconscious in the emergency room)"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def serve(path: Path, parts: Parts, **settings: Any) -> Iterator[dict[str, Any]]:
    """Hospitals A and B (tests/test_policy_consortium.py DATA: pa and oa are A's); drb is a
    B doctor with the break-glass role, drb2 one without; pa-user is the patient pa; emr-b a
    backend service of B."""
    services = make_services(path, parts, **{"audit": True, **settings})
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in DATA:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "dra", PASSWORD, "PractitionerRole/dra")
        admin.add_user(store, "drb", PASSWORD, "PractitionerRole/drb", ["break-glass"])
        admin.add_user(store, "drb2", PASSWORD, "PractitionerRole/drb")
        admin.add_user(store, "pa-user", PASSWORD, "Patient/pa")
        key = RSAKey.generate_key(2048, {"kid": "emr-b"}, private=True)
        admin.add_client(store, "emr-b", [], jwks={"keys": [key.as_dict(private=False)]},
                         scope="system/*.rs", organization="Organization/hb")  # fmt: skip
        form = {"grant_type": "client_credentials", "scope": "system/*.rs",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion(key, "RS384", "emr-b")}  # fmt: skip
        token = c.post("/auth/token", data=form)
        assert token.status_code == 200, token.text
        emr = TestClient(c.app, raise_server_exceptions=False)
        emr.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        users = {name: login(c, name) for name in ("dra", "drb", "drb2", "pa-user")}
        yield {"c": c, "emr": emr, **users}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[dict[str, Any]]:
    yield from serve(tmp_path_factory.mktemp("btg") / "fhir.db", parts)


def glass(reason: str = REASON) -> dict[str, str]:
    """The header as a browser must send it: percent-encoded UTF-8 (fetch allows only
    ISO-8859-1 header values)."""
    return {HEADER: quote(reason)}


def by_request(c: TestClient, request_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one request (entity XrequestId, BALP)."""
    return [
        e for e in events(c)
        if any(x.get("what", {}).get("identifier", {}).get("value") == request_id
               for x in e.get("entity", ()))
    ]  # fmt: skip


def btg(concept: dict[str, Any], reason: str) -> None:
    assert concept["coding"] == [{"system": ACT_REASON, "code": "BTG",
                                  "display": "break the glass"}]  # fmt: skip
    assert concept["text"] == reason


def test_break_glass_reads_another_hospitals_patient_and_every_read_is_audited(
    world: dict[str, Any],
) -> None:
    b = world["drb"]
    assert b.get("/fhir/Patient/pa").status_code == 404  # no reason given: hidden as ever
    assert ids(b.get("/fhir/Observation", params={"subject": "Patient/pa"})) == set()
    r = b.get("/fhir/Patient/pa", headers={**glass(), "X-Request-ID": "btg-read"})
    assert r.status_code == 200, r.text
    found = b.get("/fhir/Observation", params={"subject": "Patient/pa"},
                  headers={**glass(), "X-Request-ID": "btg-search"})  # fmt: skip
    assert ids(found) == {"Observation/oa"}
    # curl sends the header's UTF-8 bytes as they are
    raw = b.get("/fhir/Observation/oa", headers={HEADER: REASON.encode(),  # type: ignore[dict-item]
                                                 "X-Request-ID": "btg-raw"})  # fmt: skip
    assert raw.status_code == 200, raw.text
    for request_id in ("btg-read", "btg-search", "btg-raw"):
        (event,) = by_request(world["c"], request_id)
        assert event["outcome"] == "0"
        btg(event["purposeOfEvent"][0], REASON)
        (user,) = [a for a in event["agent"] if a["requestor"]]
        assert user["who"]["reference"] == "PractitionerRole/drb"
        btg(user["purposeOfUse"][0], REASON)
        patients = [e["what"]["reference"] for e in event["entity"]
                    if e.get("role", {}).get("code") == "1"]  # fmt: skip
        assert patients == ["Patient/pa"]
    # an ordinary read of the same user carries no purpose of use
    b.get("/fhir/Patient/pb", headers={"X-Request-ID": "plain"})
    (plain,) = by_request(world["c"], "plain")
    assert "purposeOfEvent" not in plain


@pytest.mark.parametrize("who", ["drb2", "dra", "pa-user", "emr"])
def test_break_glass_is_refused_to_everyone_without_the_role(
    world: dict[str, Any], who: str
) -> None:
    """A user without the role (of B, or of A reading its own patient), the patient, a
    backend service: 403, and the attempt is audited as a failure."""
    request_id = f"refused-{who}"
    r = world[who].get("/fhir/Patient/pa", headers={**glass(), "X-Request-ID": request_id})
    assert r.status_code == 403, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "forbidden" and issue["expression"] == [HEADER]
    (event,) = by_request(world["c"], request_id)
    assert event["outcome"] == "4"
    btg(event["purposeOfEvent"][0], REASON)


def test_break_glass_needs_a_reason(world: dict[str, Any]) -> None:
    r = world["drb"].get("/fhir/Patient/pa", headers={HEADER: "   "})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["code"] == "required"
    r = world["drb"].get("/fhir/Patient/pa", headers=glass("x" * 501))
    assert r.status_code == 400, r.text


def test_break_glass_lifts_a_denial_for_reads_but_never_for_writes(
    world: dict[str, Any],
) -> None:
    """An emergency overrides the patient's opt-out (security.md §3.2: break-glass is the
    audited way around the policy); it gives reads only: a B doctor still cannot change A's
    record."""
    a, b = world["dra"], world["drb"]
    put(a, consent("deny-b", "deny", "Organization/hb"))
    assert b.get("/fhir/Patient/pa").status_code == 404
    assert b.get("/fhir/Patient/pa", headers=glass()).status_code == 200
    changed = {**a.get("/fhir/Observation/oa").json(), "status": "amended"}
    assert b.put("/fhir/Observation/oa", json=changed, headers=glass()).status_code == 404
    new = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
           "subject": {"reference": "Patient/pa"}}  # fmt: skip
    assert b.post("/fhir/Observation", json=new, headers=glass()).status_code == 403
    assert a.get("/fhir/Observation/oa").json()["status"] == "final"


def test_break_glass_is_refused_while_the_audit_trail_is_off(
    tmp_path: Path, parts: Parts
) -> None:
    """No emergency access goes unrecorded: without the audit trail the glass stays whole."""
    for w in serve(tmp_path / "fhir.db", parts, audit=False):
        r = w["drb"].get("/fhir/Patient/pa", headers=glass())
        assert r.status_code == 403, r.text
        assert "audit" in r.json()["issue"][0]["diagnostics"]


def test_only_practitioners_get_the_break_glass_role(world: dict[str, Any]) -> None:
    with pytest.raises(admin.AdminError):
        admin.add_user(auth_of(world["c"]).store, "p2", PASSWORD, "Patient/pa", ["break-glass"])
    with pytest.raises(admin.AdminError):
        admin.add_user(auth_of(world["c"]).store, "x", PASSWORD, "PractitionerRole/drb", ["root"])


def test_a_browser_app_may_send_the_reason(world: dict[str, Any]) -> None:
    """An app on another origin (the registered redirect URI's) sends the header after a
    CORS preflight (Fetch §4.8), percent-encoded as the first test does."""
    r = world["c"].options("/fhir/Patient/pa", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, x-break-glass-reason"})  # fmt: skip
    assert r.status_code in (200, 204), r.text
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "x-break-glass-reason" in allowed
