"""Shared resources are written by their owner only (fhir_server/policy/owner.py; security.md
§3.2 "writes only into owner_org = caller_org"), with real tokens over HTTP, in the demo
consortium: hz-first and xihu-people are two member hospitals, both `partOf` Organization/
consortium, whose office may write for every member. Each hospital still reads the other's
Slots, Schedules, Organizations (the consortium rule shares them); a write of the other's is
403 with an OperationOutcome naming the element that decides the owner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from smart import JWT_BEARER, PASSWORD, REDIRECT, assertion, auth_of
from test_policy_consortium import APP, login

from fhir_server.app import build_app, load_demo
from fhir_server.auth import admin
from fhir_server.services import Parts

#: the demo's experts (fhir_server/consultation/demo.py): expert-1 works for hz-first,
#: expert-5 for xihu-people; each has a Schedule sched-expert-N with Slots slot-expert-N-D-H
HZ_SLOT, HZ_SCHEDULE = "Slot/slot-expert-1-3-9", "Schedule/sched-expert-1"
OFFICE_ROLE = {"resourceType": "PractitionerRole", "id": "role-office", "active": True,
               "organization": {"reference": "Organization/consortium"}}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[dict[str, Any]]:
    """The demo consortium; users hz (expert-1, hz-first), xihu (expert-5, xihu-people),
    office (the consortium's office) with user/*.cruds; emr, a backend client of xihu-people
    with system/*.cruds."""
    services = make_services(tmp_path_factory.mktemp("owner") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        load_demo(services)
        assert c.put("/fhir/PractitionerRole/role-office", json=OFFICE_ROLE).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        for user, role in (("hz", "role-expert-1"), ("xihu", "role-expert-5"),
                           ("office", "role-office")):  # fmt: skip
            admin.add_user(store, user, PASSWORD, f"PractitionerRole/{role}")
        key = RSAKey.generate_key(2048, {"kid": "emr"}, private=True)
        admin.add_client(store, "emr", [], jwks={"keys": [key.as_dict(private=False)]},
                         scope="system/*.cruds",
                         organization="Organization/xihu-people")  # fmt: skip
        form = {"grant_type": "client_credentials", "scope": "system/*.cruds",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion(key, "RS384", "emr")}  # fmt: skip
        token = c.post("/auth/token", data=form)
        assert token.status_code == 200, token.text
        emr = TestClient(c.app, raise_server_exceptions=False)
        emr.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield {"c": c, "emr": emr, **{u: login(c, u) for u in ("hz", "xihu", "office")}}


def get(c: TestClient, path: str) -> dict[str, Any]:
    r = c.get(f"/fhir/{path}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def put(c: TestClient, resource: dict[str, Any]) -> Any:
    return c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)


def refused(r: Any, element: str) -> str:
    """A 403 OperationOutcome whose issue names `element`; its text."""
    assert r.status_code == 403, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["code"] == "forbidden"
    assert issue["expression"] == [element], issue
    return str(issue["diagnostics"])


def test_the_owner_writes_its_slot_and_another_hospital_gets_403_naming_the_element(
    world: dict[str, Any],
) -> None:
    hz, xihu, office = world["hz"], world["xihu"], world["office"]
    slot = get(xihu, HZ_SLOT)  # shared: the other hospital reads it
    text = refused(put(xihu, {**slot, "status": "busy"}), "Slot.schedule")
    assert "Organization/hz-first" in text
    assert get(hz, HZ_SLOT)["status"] == "free"  # nothing written
    assert put(hz, {**slot, "comment": "门诊"}).status_code == 200
    assert put(office, {**slot, "comment": "医联体办公室"}).status_code == 200
    assert get(hz, HZ_SLOT)["comment"] == "医联体办公室"


@pytest.mark.parametrize(
    ("path", "element"),
    [
        ("Schedule/sched-expert-1", "Schedule.actor"),
        ("Organization/hz-first", "Organization.partOf"),
        ("PractitionerRole/role-expert-1", "PractitionerRole.organization"),
        ("Location/bed-hz-first-1", "Location.managingOrganization"),
        ("HealthcareService/hs-teleconsult", "HealthcareService.providedBy"),
        ("CareTeam/team-chest-pain", "CareTeam.managingOrganization"),
        ("Practitioner/expert-1", "PractitionerRole.organization"),
    ],
)
def test_each_shared_type_is_refused_to_another_hospital_by_put_patch_and_delete(
    world: dict[str, Any], path: str, element: str
) -> None:
    xihu = world["xihu"]
    current = get(xihu, path)
    refused(put(xihu, {**current, "language": "en"}), element)
    patch = [{"op": "add", "path": "/language", "value": "zh-CN"}]
    r = xihu.patch(f"/fhir/{path}", json=patch,
                   headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    refused(r, element)
    refused(xihu.delete(f"/fhir/{path}"), element)
    after = get(world["hz"], path)
    assert after["meta"]["versionId"] == current["meta"]["versionId"]


def test_an_endpoint_belongs_to_its_managing_organization(world: dict[str, Any]) -> None:
    hz, xihu = world["hz"], world["xihu"]
    endpoint = {
        "resourceType": "Endpoint", "id": "ep-hz", "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "hl7-fhir-rest"},
        "payloadType": [{"text": "FHIR"}], "address": "https://hz-first.example/fhir",
        "managingOrganization": {"reference": "Organization/hz-first"},
    }  # fmt: skip
    assert put(hz, endpoint).status_code == 201
    refused(put(xihu, {**endpoint, "address": "https://evil.example/fhir"}),
            "Endpoint.managingOrganization")  # fmt: skip
    assert get(hz, "Endpoint/ep-hz")["address"] == "https://hz-first.example/fhir"


def test_rewriting_the_owner_element_does_not_take_a_resource_over(world: dict[str, Any]) -> None:
    hz, xihu = world["hz"], world["xihu"]
    mine = {"reference": "Organization/xihu-people"}
    role = get(xihu, "PractitionerRole/role-expert-2")
    text = refused(put(xihu, {**role, "organization": mine}), "PractitionerRole.organization")
    assert "belongs to Organization/hz-first" in text
    org = get(xihu, "Organization/hz-first")
    refused(put(xihu, {**org, "partOf": mine}), "Organization.partOf")
    schedule = get(xihu, "Schedule/sched-expert-2")
    refused(put(xihu, {**schedule, "actor": [{"reference": "PractitionerRole/role-expert-5"}]}),
            "Schedule.actor")  # fmt: skip
    slot = get(xihu, "Slot/slot-expert-2-2-9")
    refused(put(xihu, {**slot, "schedule": {"reference": "Schedule/sched-expert-5"}}),
            "Slot.schedule")  # fmt: skip
    assert get(hz, "Slot/slot-expert-2-2-9")["schedule"]["reference"] == "Schedule/sched-expert-2"
    # nor can the owner hand its resource to another hospital (the new owner's to decide)
    text = refused(put(hz, {**role, "organization": mine}), "PractitionerRole.organization")
    assert "would belong to Organization/xihu-people" in text


def test_a_deleted_resources_id_stays_its_owners(world: dict[str, Any]) -> None:
    """R4 http.html#update lets a PUT bring a deleted id back as its next version: for a shared
    resource that is still its owner's write, or another hospital would take over the id and
    the history behind it."""
    hz, xihu = world["hz"], world["xihu"]
    ward = {"resourceType": "Location", "id": "ward-hz-9", "name": "心内科九病区",
            "status": "active", "managingOrganization": {"reference": "Organization/hz-first"}}
    assert put(hz, ward).status_code == 201
    assert hz.delete("/fhir/Location/ward-hz-9").status_code == 200
    taken = {**ward, "name": "西湖区人民医院病区",
             "managingOrganization": {"reference": "Organization/xihu-people"}}  # fmt: skip
    text = refused(put(xihu, taken), "Location.managingOrganization")
    assert "belongs to Organization/hz-first" in text
    assert hz.get("/fhir/Location/ward-hz-9").status_code == 410  # still deleted
    back = put(hz, ward)  # the owner may bring it back: version 3 (create, delete, this)
    assert back.status_code == 201 and back.json()["meta"]["versionId"] == "3"
    # a new id of its own stays free for anyone's new resource
    assert put(xihu, {**taken, "id": "ward-xihu-9"}).status_code == 201


def test_new_content_must_name_the_writers_organization(world: dict[str, Any]) -> None:
    hz, xihu = world["hz"], world["xihu"]
    bed = {"resourceType": "Location", "name": "心内科病区 20床", "status": "active"}
    refused(xihu.post("/fhir/Location", json=bed), "Location.managingOrganization")
    refused(xihu.post("/fhir/Location", json={
        **bed, "managingOrganization": {"reference": "Organization/hz-first"}}),
        "Location.managingOrganization")  # fmt: skip
    own = {**bed, "managingOrganization": {"reference": "Organization/xihu-people"}}
    created = xihu.post("/fhir/Location", json=own)
    assert created.status_code == 201, created.text
    # a Slot in another hospital's Schedule is that hospital's
    slot = {"resourceType": "Slot", "schedule": {"reference": HZ_SCHEDULE}, "status": "free",
            "start": "2031-01-02T01:00:00Z", "end": "2031-01-02T01:30:00Z"}  # fmt: skip
    refused(xihu.post("/fhir/Slot", json=slot), "Slot.schedule")
    assert hz.post("/fhir/Slot", json=slot).status_code == 201


def test_a_hospital_writes_its_departments_and_the_office_every_member(
    world: dict[str, Any],
) -> None:
    hz, xihu, office = world["hz"], world["xihu"], world["office"]
    dept = {"resourceType": "Organization", "id": "hz-first-cardio", "name": "心血管内科",
            "partOf": {"reference": "Organization/hz-first"}}  # fmt: skip
    refused(put(xihu, dept), "Organization.partOf")
    assert put(hz, dept).status_code == 201
    refused(put(xihu, {**dept, "name": "改名"}), "Organization.partOf")
    assert put(office, {**dept, "alias": ["心内科"]}).status_code == 200
    # a new member hospital: only the office (above it) may add one to the consortium
    member = {"resourceType": "Organization", "id": "new-member", "name": "新成员医院",
              "partOf": {"reference": "Organization/consortium"}}  # fmt: skip
    refused(put(xihu, member), "Organization.partOf")
    assert put(office, member).status_code == 201
    org = get(office, "Organization/xihu-people")
    assert put(office, {**org, "alias": ["西湖区人民医院"]}).status_code == 200
    # a hospital neither leaves the office's oversight nor places itself under another
    own = get(hz, "Organization/hz-first")
    refused(put(hz, {k: v for k, v in own.items() if k != "partOf"}), "Organization.partOf")
    refused(put(hz, {**own, "partOf": {"reference": "Organization/xihu-people"}}),
            "Organization.partOf")  # fmt: skip
    assert put(hz, {**own, "alias": ["市一医院"]}).status_code == 200
    # the consortium itself is above every member: theirs to read, not to write
    root = get(hz, "Organization/consortium")
    refused(put(hz, {**root, "alias": ["医联体"]}), "Organization.partOf")


def test_a_role_for_another_hospitals_practitioner_makes_the_person_record_the_offices(
    world: dict[str, Any],
) -> None:
    """The trap: xihu gives hz's expert-3 a PractitionerRole of its own (多点执业, allowed: the
    role is xihu's); that does not let xihu rewrite the Practitioner, and from then on neither
    hospital alone may: the consortium office writes a practitioner of several hospitals."""
    hz, xihu, office = world["hz"], world["xihu"], world["office"]
    person = get(hz, "Practitioner/expert-3")
    assert put(hz, {**person, "gender": "male"}).status_code == 200
    role = {"resourceType": "PractitionerRole", "id": "role-expert-3-at-xihu", "active": True,
            "practitioner": {"reference": "Practitioner/expert-3"},
            "organization": {"reference": "Organization/xihu-people"}}  # fmt: skip
    assert put(xihu, role).status_code == 201
    person = get(hz, "Practitioner/expert-3")
    text = refused(put(xihu, {**person, "gender": "female"}), "PractitionerRole.organization")
    assert "Organization/hz-first" in text
    refused(put(hz, {**person, "gender": "female"}), "PractitionerRole.organization")
    assert put(office, {**person, "gender": "female"}).status_code == 200
    # a Practitioner no role names yet is nobody's: a hospital creates it, then its role
    new = {"resourceType": "Practitioner", "id": "new-doctor", "name": [{"text": "新医生"}]}
    assert put(xihu, new).status_code == 201


def test_inside_a_transaction_the_refusal_rolls_everything_back(world: dict[str, Any]) -> None:
    hz, xihu = world["hz"], world["xihu"]
    slot = get(xihu, "Slot/slot-expert-1-4-9")
    own = {"resourceType": "Location", "name": "西湖 会议室", "status": "active",
           "managingOrganization": {"reference": "Organization/xihu-people"}}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": own, "request": {"method": "POST", "url": "Location"}},
        {"resource": {**slot, "status": "busy"},
         "request": {"method": "PUT", "url": "Slot/slot-expert-1-4-9"}},
    ]}  # fmt: skip
    before = xihu.get("/fhir/Location", params={"name": "西湖 会议室"}).json()["total"]
    r = xihu.post("/fhir", json=bundle)
    assert r.status_code == 403, r.text
    # the element, as a path into the Bundle (the second entry's Slot.schedule)
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.schedule"]
    assert xihu.get("/fhir/Location", params={"name": "西湖 会议室"}).json()["total"] == before
    assert get(hz, "Slot/slot-expert-1-4-9")["status"] == "free"
    # a plain-create transaction (the bulk path) is checked too
    bulk = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": own, "request": {"method": "POST", "url": "Location"}},
        {"resource": {"resourceType": "Slot", "schedule": {"reference": HZ_SCHEDULE},
                      "status": "free", "start": "2031-02-02T01:00:00Z",
                      "end": "2031-02-02T01:30:00Z"},
         "request": {"method": "POST", "url": "Slot"}},
    ]}  # fmt: skip
    r = xihu.post("/fhir", json=bulk)
    assert r.status_code == 403, r.text
    assert xihu.get("/fhir/Location", params={"name": "西湖 会议室"}).json()["total"] == before
    # a Schedule and its Slots created together by the owner: the Slot sees its Schedule
    mine = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5e3b8a4e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Schedule", "active": True,
                      "actor": [{"reference": "PractitionerRole/role-expert-5"}]},
         "request": {"method": "POST", "url": "Schedule"}},
        {"resource": {"resourceType": "Slot",
                      "schedule": {"reference": "urn:uuid:5e3b8a4e-0000-4000-8000-000000000001"},
                      "status": "free", "start": "2031-03-02T01:00:00Z",
                      "end": "2031-03-02T01:30:00Z"},
         "request": {"method": "POST", "url": "Slot"}},
    ]}  # fmt: skip
    r = xihu.post("/fhir", json=mine)
    assert r.status_code == 200, r.text


def test_in_a_batch_only_the_foreign_entry_is_refused(world: dict[str, Any]) -> None:
    xihu = world["xihu"]
    slot = get(xihu, "Slot/slot-expert-1-5-9")
    own = get(xihu, "Slot/slot-expert-5-5-9")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {**slot, "comment": "x"},
         "request": {"method": "PUT", "url": "Slot/slot-expert-1-5-9"}},
        {"resource": {**own, "comment": "西湖"},
         "request": {"method": "PUT", "url": "Slot/slot-expert-5-5-9"}},
    ]}  # fmt: skip
    r = xihu.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    first, second = (e["response"] for e in r.json()["entry"])
    assert first["status"].startswith("403")
    assert first["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].resource.schedule"]
    assert second["status"].startswith("200")


def test_system_clients_keep_their_rights(world: dict[str, Any]) -> None:
    """A backend service (here one registered with xihu-people) is not bound by the owner
    rule: the consortium's integrations (HIS feeds, the scheduling interface) write for the
    hospitals they serve."""
    emr = world["emr"]
    slot = get(emr, "Slot/slot-expert-1-6-9")
    assert put(emr, {**slot, "comment": "HIS"}).status_code == 200
