"""Issue 10 with real tokens: the audit trail is for the auditor role only (read, search,
history); the authorization server's security events go into the same audit chain (IHE BALP /
ATNA: DICOM 110114 User Authentication, 110113 Security Alert); and the referral transitions
belong to one side each (only the receiving organization accepts, only the sender cancels).

Tokens come from the real authorization server (tests/smart.py): the authorization-code flow
with PKCE S256, signed in through the login form."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import audit_tables, copy_database, make_services
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from smart import (
    BASE,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    assertion,
    auth_code,
    auth_of,
    drive,
    pkce,
)
from smart import code_flow as smart_code_flow
from test_audit import _db, events, subtype
from test_workflow import (
    CANCEL,
    REASON,
    build_world,
    create,
    get,
    ok,
    op,
    pair,
    ref,
    referral,
    slot,
    submit,
)

from fhir_server.app import build_app
from fhir_server.audit.chain import verify
from fhir_server.auth import admin
from fhir_server.services import Parts

APP = "roles-app"  # a trusted public client: no consent page, PKCE only
EVERYTHING = "openid fhirUser user/*.cruds offline_access"


def serve(path: Path, parts: Parts, **settings: Any) -> Iterator[TestClient]:
    """The real app (audit on) with a trusted public app registered."""
    services = make_services(path, parts, **{"audit": True, **settings})
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
    """The authorization-code flow with PKCE S256 for this file's app; the token response."""
    return smart_code_flow(c, APP, scope, username)


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
        managed = {"reference": "Organization/org-a"}  # both users' hospital (consortium rule)
        patient = {"resourceType": "Patient", "managingOrganization": managed}
        pid = c.post("/fhir/Patient", json=patient).json()["id"]
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
    if not any(k.startswith("_has") for k in params):  # _has is refused to any user whose
        # patients the consortium rule narrows, the auditor included
        auditor = roles["auditor"].get(url.format(pid=roles["patient"]), params=params)
        assert auditor.status_code == 200, auditor.text


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


# --- 2. the authorization server's security events in the audit chain --------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
KIND = "https://yilian.health/fhir/CodeSystem/security-event"


@pytest.fixture
def audited(tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    for c in serve(tmp_path / "fhir.db", parts):
        user(c, "doctor1", "dr")
        yield c


def security_events(c: TestClient, kind: str) -> list[dict[str, Any]]:
    """The AuditEvents of one security event kind, oldest first, as an auditor finds them: a
    search by subtype, read straight from the database (looking must not add events)."""
    flush(c)
    return [
        e for e in events(c)
        if {"system": KIND, "code": kind} in [{k: s[k] for k in ("system", "code")}
                                               for s in e["subtype"]]
    ]  # fmt: skip


def agents(event: dict[str, Any]) -> set[str]:
    return {a["who"].get("identifier", {}).get("value", "") for a in event["agent"]} - {""}


def assert_atna(event: dict[str, Any], dcm: str, outcome: str) -> None:
    assert event["type"] == {"system": DCM, "code": dcm,
                             "display": {"110114": "User Authentication",
                                         "110113": "Security Alert"}[dcm]}  # fmt: skip
    assert event["action"] == "E" and event["outcome"] == outcome


def test_sign_in_and_token_events_are_audited_in_the_chain(audited: TestClient) -> None:
    """BALP / ATNA: a successful login and the token issued are User Authentication events
    (DICOM 110114, subtype 110122 Login) naming client and user; the token's uses name it
    the same way (agent.policy), so an auditor can follow one token; the chain verifies."""
    r = code_flow(audited, "doctor1")
    assert r.status_code == 200
    (login,) = security_events(audited, "login")
    assert_atna(login, "110114", "0")
    assert {"system": DCM, "code": "110122", "display": "Login"} in login["subtype"]
    assert agents(login) == {APP, "doctor1"}
    # BALP: the client application's network address (TestClient calls from "testclient"),
    # and the /auth request's X-Request-Id, as REST events carry them
    assert login["agent"][0]["network"] == {"address": "testclient", "type": "2"}
    assert [e["type"]["code"] for e in login["entity"]] == ["XrequestId"]
    (issued,) = security_events(audited, "token-issued")
    assert_atna(issued, "110114", "0")
    token = TestClient(audited.app, raise_server_exceptions=False)
    token.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    assert token.get("/fhir/Patient").status_code == 200
    flush(audited)
    (search,) = [e for e in events(audited) if e["type"]["code"] == "rest"
                 and subtype(e) == "search-type"]  # fmt: skip
    policy = [p for a in issued["agent"] for p in a.get("policy", ())]
    assert policy and policy == [p for a in search["agent"] for p in a.get("policy", ())]
    assert "password" not in str(login) and PASSWORD not in str(security_events(audited, "login"))
    refreshed = audited.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"],
              "client_id": APP},
    )  # fmt: skip
    assert refreshed.status_code == 200
    (again,) = security_events(audited, "token-refreshed")
    assert_atna(again, "110114", "0")
    revoked = audited.post("/auth/revoke", data={"token": r.json()["refresh_token"],
                                                  "client_id": APP})  # fmt: skip
    assert revoked.status_code == 200
    (logout,) = security_events(audited, "token-revoked")
    assert {"system": DCM, "code": "110123", "display": "Logout"} in logout["subtype"]
    found = verify(audit_tables(_db(audited)))
    assert found.broken is None and found.events == len(events(audited))


def _sign_in(c: TestClient, password: str) -> Any:
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": APP, "redirect_uri": REDIRECT,
        "scope": EVERYTHING, "state": "s", "aud": BASE,
        "code_challenge": challenge, "code_challenge_method": "S256",
        "username": "doctor1", "password": password,
    }  # fmt: skip
    return c.post("/auth/authorize", data=params, follow_redirects=False)


def test_failed_sign_ins_and_the_rate_limit_are_audited(audited: TestClient) -> None:
    """Each wrong password: a failed login (outcome 4, minor failure) naming the user; once
    the limit is reached (429): a Security Alert (DICOM 110113)."""
    for _ in range(5):
        assert _sign_in(audited, "wrong").status_code == 401
    assert _sign_in(audited, PASSWORD).status_code == 429
    failed = security_events(audited, "login")
    assert len(failed) == 5
    for event in failed:
        assert_atna(event, "110114", "4")
        assert agents(event) == {APP, "doctor1"} and event["outcomeDesc"] == "wrong password"
    (limited,) = security_events(audited, "rate-limit")
    assert_atna(limited, "110113", "4")
    assert agents(limited) == {APP, "doctor1"}


def test_pkce_and_client_authentication_failures_are_security_alerts(
    audited: TestClient,
) -> None:
    """A code redeemed with a wrong code_verifier (RFC 7636 §4.6) and a confidential client
    with a wrong secret (RFC 6749 §5.2 invalid_client): Security Alerts naming the client."""
    admin.add_client(auth_of(audited).store, "conf", [REDIRECT], secret="s3cret-value")
    browser = TestClient(audited.app, raise_server_exceptions=False)
    _, challenge = pkce()
    params = {
        "response_type": "code", "client_id": APP, "redirect_uri": REDIRECT,
        "scope": EVERYTHING, "state": "s", "aud": BASE,
        "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    code = auth_code(drive(browser, params, "doctor1"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": pkce()[0], "client_id": APP}  # fmt: skip
    assert browser.post("/auth/token", data=form).json()["error"] == "invalid_grant"
    (pkce_event,) = security_events(audited, "pkce")
    assert_atna(pkce_event, "110113", "4")
    assert agents(pkce_event) == {APP, "doctor1"}
    bad = audited.post("/auth/token", data={"grant_type": "client_credentials"},
                       auth=("conf", "not-the-secret"))  # fmt: skip
    assert bad.status_code == 401
    (client_event,) = security_events(audited, "client-authentication")
    assert_atna(client_event, "110113", "4")
    assert agents(client_event) == {"conf"} and "s3cret" not in str(client_event)
    assert not security_events(audited, "token-issued")


def test_a_replayed_client_assertion_is_a_security_alert(audited: TestClient) -> None:
    """RFC 7523 §3 / SMART Backend Services: the second use of a jti is refused and audited
    as a replay (not as an ordinary authentication failure)."""
    key = RSAKey.generate_key(2048, {"kid": "k1"}, private=True)
    admin.add_client(auth_of(audited).store, "emr", [],
                     jwks={"keys": [key.as_dict(private=False)]}, scope="system/*.rs")  # fmt: skip
    signed = assertion(key, "RS384", "emr")
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs",
            "client_assertion_type": JWT_BEARER, "client_assertion": signed}  # fmt: skip
    assert audited.post("/auth/token", data=form).status_code == 200
    assert audited.post("/auth/token", data=form).status_code == 401
    (issued,) = security_events(audited, "token-issued")
    assert agents(issued) == {"emr"}
    (replay,) = security_events(audited, "jti-replay")
    assert_atna(replay, "110113", "4")
    assert agents(replay) == {"emr"}
    assert not security_events(audited, "client-authentication")


def test_no_security_events_are_stored_without_the_audit_setting(
    tmp_path: Path, parts: Parts
) -> None:
    for c in serve(tmp_path / "off.db", parts, audit=False):
        user(c, "doctor1", "dr")
        assert code_flow(c, "doctor1").status_code == 200
        r = c.get("/fhir/AuditEvent")
        assert ids(r) == set()


# --- 3. per-transition permissions of the referral table -----------------------------------------


REFERRAL_USERS = ("sender", "receiver", "outsider")


@pytest.fixture(scope="module")
def referral_world(
    tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """The workflow tests' world, built once for the module: its database (each test gets a
    copy, conftest.copy_database), the world's ids, and each user's Authorization header."""
    path = tmp_path_factory.mktemp("referrals") / "fhir.db"
    for c in serve(path, parts, audit=False):
        world = build_world(c)
        patient = c.get(f"/fhir/{world['patient']}").json()  # the sender's patient
        patient["managingOrganization"] = {"reference": world["sender"]}
        assert c.put(f"/fhir/{world['patient']}", json=patient).status_code == 200
        store = auth_of(c).store
        admin.add_user(store, "sender", PASSWORD, world["sd"])
        admin.add_user(store, "receiver", PASSWORD, world["rc"])
        user(c, "outsider", "outsider-role", world["other"].split("/")[1])
        headers = {n: bearer(c, n).headers["Authorization"] for n in REFERRAL_USERS}
    return path, world, headers


@pytest.fixture
def referrals(
    referral_world: tuple[Path, dict[str, Any], dict[str, str]], tmp_path: Path, parts: Parts
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """The workflow tests' world (a sender and a receiver organization, another hospital),
    with a user at each: the sender doctor, the receiver coordinator, and a doctor of the
    other hospital; the same wide scopes for all three."""
    source, world, headers = referral_world
    services = make_services(copy_database(source, tmp_path / "fhir.db"), parts, audit=False)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        users = {}
        for n in REFERRAL_USERS:
            users[f"by_{n}"] = TestClient(c.app, raise_server_exceptions=False)
            users[f"by_{n}"].headers["Authorization"] = headers[n]
        yield c, {**world, **users}


def refused(r: Any) -> None:
    """403 from the side check; or 404 where the consortium rule already hides the referral
    from this user (the other hospital, or the receiver before it was submitted)."""
    assert r.status_code in (403, 404), r.text
    assert r.json()["issue"][0]["code"] in ("forbidden", "not-found")


def test_only_the_sender_submits_and_only_the_receiver_claims_and_accepts(
    referrals: tuple[TestClient, dict[str, Any]],
) -> None:
    c, w = referrals
    sr = referral(c, w)
    for who in ("receiver", "outsider"):
        refused(op(w[f"by_{who}"], f"{sr}/$submit"))
    task, _ = submit(w["by_sender"], sr)
    for who in ("sender", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$claim"))
    assert pair(get(c, task)) == ("requested", "submitted")  # nothing changed
    ok(op(w["by_receiver"], f"{task}/$claim", ref("owner", w["rc"])))
    info = {"name": "question", "valueString": "ECG?"}
    refused(op(w["by_sender"], f"{task}/$request-info", info))
    ok(op(w["by_receiver"], f"{task}/$request-info", info))
    answer = {"name": "answer", "valueString": "attached"}
    for who in ("receiver", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$provide-info", answer))
    ok(op(w["by_sender"], f"{task}/$provide-info", answer))
    for who in ("sender", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$accept"))
        refused(op(w[f"by_{who}"], f"{task}/$reject", REASON))
    ok(op(w["by_receiver"], f"{task}/$reject", REASON))


def test_only_the_sender_cancels(referrals: tuple[TestClient, dict[str, Any]]) -> None:
    c, w = referrals
    task, _ = submit(w["by_sender"], referral(c, w))
    for who in ("receiver", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$cancel", CANCEL))
    assert pair(ok(op(w["by_sender"], f"{task}/$cancel", CANCEL))["entry"][0]["resource"]) == (
        "cancelled", "withdrawn")  # fmt: skip


def test_the_visit_belongs_to_the_receiver(referrals: tuple[TestClient, dict[str, Any]]) -> None:
    c, w = referrals
    task, _ = submit(w["by_sender"], referral(c, w), ref("slot", slot(c, w)))
    for name in ("$check-in", "$no-show"):
        for who in ("sender", "outsider"):
            refused(op(w[f"by_{who}"], f"{task}/{name}"))
    ok(op(w["by_receiver"], f"{task}/$check-in"))
    for who in ("sender", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$start-treatment"))
        refused(op(w[f"by_{who}"], f"{task}/$fail", {"name": "reason", "valueString": "left"}))
    ok(op(w["by_receiver"], f"{task}/$start-treatment"))
    doc = create(c, {"resourceType": "DocumentReference", "status": "current",
                     "content": [{"attachment": {"contentType": "text/plain", "data": "RUNH"}}]})
    feedback = ref("feedbackDocument", f"DocumentReference/{doc['id']}")
    for who in ("sender", "outsider"):
        refused(op(w[f"by_{who}"], f"{task}/$complete", feedback))
    ok(op(w["by_receiver"], f"{task}/$complete", feedback))


def test_no_show_by_the_receiver(referrals: tuple[TestClient, dict[str, Any]]) -> None:
    c, w = referrals
    task, _ = submit(w["by_sender"], referral(c, w), ref("slot", slot(c, w)))
    ok(op(w["by_receiver"], f"{task}/$no-show"))


def test_either_side_enters_in_error_and_nobody_else(
    referrals: tuple[TestClient, dict[str, Any]],
) -> None:
    c, w = referrals
    first, _ = submit(w["by_sender"], referral(c, w))
    second, _ = submit(w["by_sender"], referral(c, w))
    refused(op(w["by_outsider"], f"{first}/$enter-in-error"))
    ok(op(w["by_sender"], f"{first}/$enter-in-error"))
    ok(op(w["by_receiver"], f"{second}/$enter-in-error"))


def test_a_patient_token_and_missing_scopes_cannot_run_referral_operations(
    referrals: tuple[TestClient, dict[str, Any]],
) -> None:
    """A patient belongs to no side (403 from the referral check); a user whose scopes do not
    grant updating Tasks is refused by the policy module's operations table (403)."""
    c, w = referrals
    task, _ = submit(w["by_sender"], referral(c, w))
    admin.add_user(auth_of(c).store, "patient", PASSWORD, w["patient"])
    patient = bearer(c, "patient", "openid fhirUser user/*.cruds")
    refused(op(patient, f"{task}/$cancel", CANCEL))
    reader = bearer(c, "receiver", "openid fhirUser user/*.rs")
    refused(op(reader, f"{task}/$claim"))
    assert pair(get(c, task)) == ("requested", "submitted")


def backend(
    c: TestClient, client_id: str, organization: str, scope: str = "system/*.cruds"
) -> TestClient:
    """A SMART Backend Services client registered with `organization` (`client add
    --organization`), carrying its client_credentials token (private_key_jwt, RS384)."""
    key = RSAKey.generate_key(2048, {"kid": client_id}, private=True)
    admin.add_client(auth_of(c).store, client_id, [], jwks={"keys": [key.as_dict(private=False)]},
                     scope=scope, organization=organization)  # fmt: skip
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(key, "RS384", client_id)}  # fmt: skip
    r = c.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    out = TestClient(c.app, raise_server_exceptions=False)
    out.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return out


def test_hospital_systems_run_their_sides_referral_operations(
    referrals: tuple[TestClient, dict[str, Any]],
) -> None:
    """A hospital's own system (an HIS acting machine-to-machine) is on its hospital's side
    like its users, within its scopes: the receiver's claims and accepts, the sender's
    submits and cancels; the other hospital's does neither."""
    c, w = referrals
    sender, receiver = backend(c, "his-s", w["sender"]), backend(c, "his-r", w["receiver"])
    other = backend(c, "his-o", w["other"])
    sr = referral(c, w)
    refused(op(receiver, f"{sr}/$submit"))
    task, _ = submit(sender, sr)
    for system in (sender, other):
        refused(op(system, f"{task}/$claim"))
    ok(op(receiver, f"{task}/$claim", ref("owner", w["rc"])))
    booked = ref("slot", slot(c, w))
    refused(op(sender, f"{task}/$accept", booked))
    ok(op(receiver, f"{task}/$accept", booked))
    assert pair(get(c, task)) == ("accepted", "booked")
    second, _ = submit(sender, referral(c, w))
    refused(op(receiver, f"{second}/$cancel", CANCEL))
    # without a scope to update Tasks, the operations table refuses even the sender's system
    refused(op(backend(c, "his-s-read", w["sender"], "system/*.rs"), f"{second}/$cancel", CANCEL))
    ok(op(sender, f"{second}/$cancel", CANCEL))
    assert pair(get(c, second)) == ("cancelled", "withdrawn")


def test_no_side_rewrites_a_submitted_referral_request(
    referrals: tuple[TestClient, dict[str, Any]],
) -> None:
    """The care relationship and the sides are read from the ServiceRequest (requester,
    performer) too: once submitted, a plain write keeps them, so the receiver cannot make
    itself the sender (and then cancel)."""
    c, w = referrals
    sr = referral(c, w)
    task, _ = submit(w["by_sender"], sr)
    body = {**get(c, sr), "requester": {"reference": w["rc"]}}
    r = w["by_receiver"].put(f"/fhir/{sr}", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["issue"][0]["expression"] == ["ServiceRequest.requester"]
    refused(op(w["by_receiver"], f"{task}/$cancel", CANCEL))
    note = {**get(c, sr), "note": [{"text": "ECG attached"}]}
    assert w["by_receiver"].put(f"/fhir/{sr}", json=note).status_code == 200
