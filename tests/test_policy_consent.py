"""Consent in the consortium rule, with real tokens (issue 10 "Access decisions": "another
organization's patient data ... under an active Consent"; security.md §3.2 read rule).

Hospitals A, B and C; B is a member of the consortium YL (Organization.partOf), C is not. pa
is A's patient (managingOrganization), with Observation oa. What each rule should let a user
see is worked out from the R4 Consent definition (consent.html: status, scope, patient,
provision.type / actor / period) and IHE PCF (a root provision of type deny is an opt-out),
not from the server's answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_database, make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of
from test_policy_consortium import APP, login, referral
from test_policy_enforce import ids

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts

LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0"}
PRIVACY = "http://terminology.hl7.org/CodeSystem/consentscope"
#: Consent.provision.actor.role (1..1): the primary information recipient, as in the R4
#: examples (consent-example-notOrg)
RECIPIENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                         "code": "PRCP"}]}  # fmt: skip


def _created(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as a create sends it: without an id (FHIR JSON has no null)."""
    return {k: v for k, v in resource.items() if k != "id"}


def _org(oid: str, part_of: str | None = None) -> dict[str, Any]:
    org: dict[str, Any] = {"resourceType": "Organization", "id": oid, "name": oid}
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    return org


def _role(rid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "id": rid,
            "organization": {"reference": f"Organization/{org}"}}  # fmt: skip


DATA = [
    _org("yl"), _org("ha", "yl"), _org("hb", "yl"), _org("hc"),
    _role("dra", "ha"), _role("drb", "hb"), _role("drc", "hc"),
    {"resourceType": "Patient", "id": "pa", "name": [{"family": "Secret"}],
     "managingOrganization": {"reference": "Organization/ha"}},
    {"resourceType": "Observation", "id": "oa", "status": "final", "code": {"text": "weight"},
     "subject": {"reference": "Patient/pa"}},
]  # fmt: skip


def consent(cid: str, decision: str | None, *actors: str, **more: Any) -> dict[str, Any]:
    """A patient-privacy Consent of pa (R4 consent.html) whose root provision is `decision`
    for `actors` (references); `more` replaces top-level elements or, as provision_*, adds
    provision elements."""
    provision: dict[str, Any] = {}
    if decision:
        provision["type"] = decision
    if actors:
        provision["actor"] = [{"role": RECIPIENT, "reference": {"reference": a}} for a in actors]
    provision.update({k.removeprefix("provision_"): v for k, v in more.items()
                      if k.startswith("provision_")})  # fmt: skip
    body = {
        "resourceType": "Consent", "id": cid, "status": "active",
        "scope": {"coding": [{"system": PRIVACY, "code": "patient-privacy"}]},
        "category": [{"coding": [LOINC_CONSENT]}],
        "patient": {"reference": "Patient/pa"},
        "dateTime": "2026-01-01",
        "organization": [{"reference": "Organization/ha"}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN"}]},
        "provision": provision,
    }  # fmt: skip
    body.update({k: v for k, v in more.items() if not k.startswith("provision_")})
    return body


def _day(delta: int) -> str:
    return (datetime.now(UTC) + timedelta(days=delta)).date().isoformat()


USERS = ("dra", "drb", "drc")


@pytest.fixture(scope="module")
def signed_in(
    tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> tuple[Path, dict[str, str]]:
    """The world's database, built once (DATA, the app, the users, each signed in), and each
    user's Authorization header; every test gets a copy (conftest.copy_database)."""
    path = tmp_path_factory.mktemp("consent") / "fhir.db"
    services = make_services(path, parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in DATA:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        for name in USERS:
            admin.add_user(store, name, PASSWORD, f"PractitionerRole/{name}")
        headers = {name: login(c, name).headers["Authorization"] for name in USERS}
    return path, headers


@pytest.fixture
def world(
    signed_in: tuple[Path, dict[str, str]], tmp_path: Path, parts: Parts
) -> Iterator[dict[str, Any]]:
    source, headers = signed_in
    services = make_services(copy_database(source, tmp_path / "fhir.db"), parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        users = {}
        for name in USERS:
            users[name] = TestClient(c.app, raise_server_exceptions=False)
            users[name].headers["Authorization"] = headers[name]
        yield {"c": c, **users}


#: every way of reaching pa's record without a chain or _has (security.md §5.1 API1), and
#: what it returns to a user who sees pa
FORMS: list[tuple[str, dict[str, str], set[str]]] = [
    ("/fhir/Patient", {}, {"Patient/pa"}),
    ("/fhir/Patient", {"_id": "pa"}, {"Patient/pa"}),
    ("/fhir/Patient", {"family": "Secret"}, {"Patient/pa"}),
    ("/fhir/Observation", {"subject": "Patient/pa"}, {"Observation/oa"}),
    ("/fhir/Patient/pa/Observation", {}, {"Observation/oa"}),
    ("/fhir", {"_type": "Patient,Observation", "_id": "pa,oa"}, {"Patient/pa", "Observation/oa"}),
    ("/fhir/Patient", {"_id": "pa", "_revinclude": "Observation:subject"},
     {"Patient/pa", "Observation/oa"}),
    ("/fhir/Observation", {"_id": "oa", "_include": "Observation:subject"},
     {"Patient/pa", "Observation/oa"}),
    ("/fhir/Organization", {"_id": "ha", "_revinclude": "Patient:organization"},
     {"Organization/ha", "Patient/pa"}),
]  # fmt: skip
READS = ["/fhir/Patient/pa", "/fhir/Observation/oa", "/fhir/Observation/oa/_history/1",
         "/fhir/Patient/pa/_history"]  # fmt: skip
#: chains and _has into the Patient compartment: refused while a user sees it only in part,
#: whether or not pa is among what they see (no existence oracle either way)
ORACLES = [
    ("/fhir/Observation", {"subject:Patient.family": "Secret"}),
    ("/fhir/Patient", {"_has:Observation:subject:code": "weight"}),
    ("/fhir/Organization", {"_has:Patient:organization:family": "Secret"}),
    ("/fhir/PractitionerRole", {"organization:Organization._has:Patient:organization:_id": "pa"}),
]


def sees_pa(c: TestClient) -> bool:
    """Whether the user sees pa's record; every form must agree (all or nothing)."""
    reads = {c.get(url).status_code for url in READS}
    assert reads in ({200}, {404}), reads
    shown = reads == {200}
    for url, params, when_seen in FORMS:
        r = c.get(url, params={**params, "_total": "accurate"})
        got = ids(r) & {"Patient/pa", "Observation/oa"}
        assert got == (when_seen & {"Patient/pa", "Observation/oa"} if shown else set()), url
        matches = [e for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]
        assert r.json()["total"] == len(matches)  # the count tells nothing hidden
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pa"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pa"}},
    ]}  # fmt: skip
    entries = c.post("/fhir", json=batch).json()["entry"]
    assert entries[0]["response"]["status"].startswith("200" if shown else "404")
    assert bool(entries[1]["resource"].get("entry")) is shown
    for url, params in ORACLES:
        r = c.get(url, params=params)
        assert r.status_code == 403, (url, r.text)
        assert r.json()["issue"][0]["code"] == "forbidden"
    return shown


def put(c: TestClient, resource: dict[str, Any], status: int = 201) -> None:
    r = c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code == status, r.text


# --- permit ---------------------------------------------------------------------------------------


def test_a_permit_lets_the_named_organization_see_the_patient_until_it_ends(
    world: dict[str, Any],
) -> None:
    a, b, c = world["dra"], world["drb"], world["drc"]
    assert sees_pa(a) and not sees_pa(b) and not sees_pa(c)
    # A records pa's consent to share with B for a month (provision.period covers today)
    period = {"start": _day(-1), "end": _day(30)}
    put(a, consent("c1", "permit", "Organization/hb", provision_period=period))
    assert sees_pa(b) and not sees_pa(c)
    # status inactive: no longer in force (consent.html: only active consents apply)
    put(a, consent("c1", "permit", "Organization/hb", provision_period=period, status="inactive"),
        200)  # fmt: skip
    assert not sees_pa(b)
    put(a, consent("c1", "permit", "Organization/hb", provision_period=period), 200)
    assert sees_pa(b)
    # the period ended yesterday
    ended = {"start": _day(-30), "end": _day(-1)}
    put(a, consent("c1", "permit", "Organization/hb", provision_period=ended), 200)
    assert not sees_pa(b)
    # a period that starts tomorrow is not in force yet
    put(a, consent("c1", "permit", "Organization/hb", provision_period={"start": _day(1)}), 200)
    assert not sees_pa(b)
    put(a, consent("c1", "permit", "Organization/hb"), 200)  # no period: no time limit
    assert sees_pa(b)
    assert a.delete("/fhir/Consent/c1").status_code == 200  # deleted: gone
    assert not sees_pa(b)
    assert sees_pa(a)  # the managing organization throughout


def test_a_permit_names_an_organization_a_practitioner_role_or_the_consortium(
    world: dict[str, Any],
) -> None:
    a, b, c = world["dra"], world["drb"], world["drc"]
    put(a, consent("c2", "permit", "PractitionerRole/drb"))  # stands for its organization
    assert sees_pa(b) and not sees_pa(c)
    # the consortium YL: every organization partOf it (B), not C
    put(a, consent("c2", "permit", "Organization/yl"), 200)
    assert sees_pa(b) and not sees_pa(c)
    put(a, consent("c2", "permit", "Organization/hc"), 200)
    assert sees_pa(c) and not sees_pa(b)


@pytest.mark.parametrize(
    "consent_body",
    [
        # no provision.type: R4 leaves the root rule's type out; nothing is permitted
        consent("c3", None, "Organization/hb"),
        # no actor: permitted to no one in particular, so to no one
        consent("c3", "permit"),
        # another scope: a treatment consent is not a privacy consent
        consent("c3", "permit", "Organization/hb",
                scope={"coding": [{"system": PRIVACY, "code": "treatment"}]}),
        consent("c3", "permit", "Organization/hb", status="proposed"),
        # a permit of part of the record (R4 provision.data / class / nested provisions):
        # the rule enforces whole records only, so it grants nothing rather than everything
        consent("c3", "permit", "Organization/hb", provision_data=[
            {"meaning": "instance", "reference": {"reference": "Observation/oa"}}]),
        consent("c3", "permit", "Organization/hb", provision_class=[
            {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]),
        consent("c3", "permit", "Organization/hb", provision_provision=[
            {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types",
                                        "code": "Observation"}]}]),
        # another patient's consent
        consent("c3", "permit", "Organization/hb", patient={"reference": "Patient/other"}),
    ],
    ids=["no-type", "no-actor", "treatment-scope", "proposed", "data", "class", "nested",
         "other-patient"],
)  # fmt: skip
def test_consents_that_permit_nothing(world: dict[str, Any], consent_body: dict[str, Any]) -> None:
    a = world["dra"]
    if consent_body["patient"]["reference"] == "Patient/other":
        put(world["c"], {"resourceType": "Patient", "id": "other",
                         "managingOrganization": {"reference": "Organization/ha"}})  # fmt: skip
    put(a, consent_body)
    assert not sees_pa(world["drb"])


# --- deny: the patient's opt-out ----------------------------------------------------------------


def test_a_deny_takes_away_what_a_referral_and_a_permit_gave(world: dict[str, Any]) -> None:
    """IHE PCF: a root provision of type deny is the patient's opt-out; security.md §3.2: no
    active Consent with provision.type deny may apply to the reader. The managing
    organization keeps its own record."""
    a, b, c = world["dra"], world["drb"], world["drc"]
    r = a.post("/fhir/Task", json=_created(referral("t", "requested", "submitted")))
    assert r.status_code == 201, r.text  # a referral from A to B: B sees pa
    put(a, consent("permit-c", "permit", "Organization/hc"))
    assert sees_pa(b) and sees_pa(c)
    put(a, consent("deny-b", "deny", "Organization/hb"))  # opts out of sharing with B only
    assert not sees_pa(b) and sees_pa(c) and sees_pa(a)
    # the Task itself is in pa's record (Task.for): hidden from B as well
    assert b.get(f"/fhir/Task/{r.json()['id']}").status_code == 404
    put(a, consent("deny-b", "deny", "Organization/hb", status="inactive"), 200)
    assert sees_pa(b)
    put(a, consent("deny-all", "deny"))  # no actor: opts out of sharing with everyone
    assert not sees_pa(b) and not sees_pa(c) and sees_pa(a)
    assert a.delete("/fhir/Consent/deny-all").status_code == 200
    assert sees_pa(b) and sees_pa(c)
    # a deny naming the consortium binds its members (B), not others (C)
    put(a, consent("deny-yl", "deny", "Organization/yl"))
    assert not sees_pa(b) and sees_pa(c)


def test_a_deny_of_part_of_the_record_denies_all_of_it(world: dict[str, Any]) -> None:
    """The rule enforces whole records: a partial opt-out is applied to the whole record
    (fail closed), never ignored."""
    a, b = world["dra"], world["drb"]
    put(a, consent("permit-b", "permit", "Organization/hb"))
    assert sees_pa(b)
    class_ = [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]
    put(a, consent("deny-obs", "deny", "Organization/hb", provision_class=class_))
    assert not sees_pa(b)
    # a deny naming only a Practitioner cannot be narrowed to an organization: it binds all
    put(a, consent("deny-obs", "deny", "Practitioner/someone"), 200)
    assert not sees_pa(b)


# --- who records a Consent ------------------------------------------------------------------------


def test_only_the_managing_organization_records_consents(world: dict[str, Any]) -> None:
    """A Consent is the patient's decision recorded by their own hospital: a hospital that
    sees pa through a referral can neither grant itself lasting access nor lift a denial."""
    a, b = world["dra"], world["drb"]
    a.post("/fhir/Task", json=_created(referral("t", "requested", "submitted")))
    assert sees_pa(b)
    r = b.post("/fhir/Consent", json=_created(consent("x", "permit", "Organization/hb")))
    assert r.status_code == 403, r.text
    assert r.json()["issue"][0]["code"] == "forbidden"
    put(a, consent("permit-c", "permit", "Organization/hc"))
    assert b.get("/fhir/Consent/permit-c").status_code == 200  # B reads pa's record
    assert b.delete("/fhir/Consent/permit-c").status_code == 404  # but may not change it
    changed = consent("permit-c", "permit", "Organization/hb")
    assert b.put("/fhir/Consent/permit-c", json=changed).status_code == 404
    assert a.get("/fhir/Consent/permit-c").json()["provision"]["actor"][0]["reference"] == {
        "reference": "Organization/hc"}  # fmt: skip
