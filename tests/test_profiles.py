"""Our implementation guide (profiles/): StructureDefinitions, SearchParameters and
OperationDefinitions are served; resources claiming a profile are checked against it (422,
http.html) and the IG's SearchParameters are searchable with no code (search.html#custom)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import seed
from fastapi.testclient import TestClient

from fhir_server.model import profiles
from fhir_server.model.invariants import Env
from fhir_server.terminology import Terminology

C = "https://yilian.health/fhir"
SD = f"{C}/StructureDefinition/"
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
CATALOG = profiles.load_catalog([PROFILES_DIR])
TERMINOLOGY = Terminology.load([PROFILES_DIR, PROFILES_DIR.parent / "terminology"])
REQUEST = SD + "yl-referral-request"
TASK = SD + "yl-referral-task"


def ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": SD + name, **value}


def coding(cs: str, code: str) -> dict[str, Any]:
    return {"system": f"{C}/CodeSystem/{cs}", "code": code}


def referral(rid: str = "sr1", direction: str = "up", rtype: str = "outpatient") -> dict[str, Any]:
    """A ServiceRequest valid against yl-referral-request."""
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "meta": {"profile": [REQUEST]},
        "extension": [
            ext("yl-referral-direction", valueCoding=coding("yl-referral-direction", direction)),
            ext(
                "yl-referral-org-levels",
                extension=[
                    {"url": "source", "valueCoding": coding("yl-org-level", "chc")},
                    {"url": "target", "valueCoding": coding("yl-org-level", "3A")},
                ],
            ),
            ext("yl-consortium", valueReference={"reference": "Organization/consortium-1"}),
            ext(
                "yl-priority-handling", valueCoding=coding("yl-priority-handling", "green-channel")
            ),
        ],
        "identifier": [{"system": f"{C}/sid/referral-number", "value": f"ZZ-{rid}"}],
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]},
            {"coding": [coding("yl-referral-type", rtype)]},
        ],
        "priority": "routine",
        "code": {"text": "心内科门诊"},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-01-05T09:00:00+08:00",
        "requester": {"reference": "PractitionerRole/sd-1"},
        "performer": [{"reference": "Organization/tertiary-a"}],
        "reasonCode": [{"text": "胸痛待查"}],
    }


def task(
    tid: str = "t1",
    status: str = "requested",
    business: str = "submitted",
    when: str = "2026-01-05",
    focus: str = "sr1",
) -> dict[str, Any]:
    """A Task valid against yl-referral-task."""
    return {
        "resourceType": "Task",
        "id": tid,
        "meta": {"profile": [TASK]},
        "extension": [
            ext("yl-referral-direction", valueCoding=coding("yl-referral-direction", "up")),
            ext(
                "yl-milestones",
                extension=[
                    {"url": "code", "valueCoding": coding("yl-milestone", "submitted")},
                    {"url": "dateTime", "valueDateTime": f"{when}T09:12:00+08:00"},
                ],
            ),
        ],
        "basedOn": [{"reference": f"ServiceRequest/{focus}"}],
        "status": status,
        "businessStatus": {"coding": [coding("yl-referral-business-status", business)]},
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": f"ServiceRequest/{focus}"},
        "for": {"reference": "Patient/p1"},
        "authoredOn": f"{when}T09:12:00+08:00",
        "lastModified": f"{when}T09:12:00+08:00",
        "requester": {"reference": "PractitionerRole/sd-1"},
        "owner": {"reference": "Organization/tertiary-a"},
    }


def create(client: TestClient, resource: dict[str, Any]) -> Any:
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)


def issues(response: Any) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def rejected(response: Any, code: str, expression: str) -> dict[str, Any]:
    """The response is a 422 naming `expression` with issue `code`; returns that issue."""
    assert response.status_code == 422, response.text
    found = [
        i for i in issues(response) if i["code"] == code and expression in i.get("expression", [])
    ]
    assert found, response.text
    return found[0]


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


# ----------------------------------------------------------------------------- served


def ig_files() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(PROFILES_DIR.glob("*.json"))]


def test_every_ig_resource_is_served_by_url_and_id(client: TestClient) -> None:
    kinds = {"StructureDefinition": 0, "SearchParameter": 0, "OperationDefinition": 0}
    for res in ig_files():
        rtype = res["resourceType"]
        kinds[rtype] += 1
        found = client.get(f"/fhir/{rtype}", params={"url": res["url"]}).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [res["id"]], res["url"]
        read = client.get(f"/fhir/{rtype}/{res['id']}")
        assert read.status_code == 200 and read.json()["url"] == res["url"]
    # remote consultation (issue 14) added 3 profiles, 1 search parameter, 12 operations
    # (Appointment/$join of the video room among them)
    assert kinds == {"StructureDefinition": 22, "SearchParameter": 13, "OperationDefinition": 30}


def test_ig_resources_follow_the_canonical_conventions() -> None:
    for res in ig_files():
        rtype, rid = res["resourceType"], res["id"]
        assert res["url"] == f"{C}/{rtype}/{rid}" and res["status"] == "active"
        if rtype == "StructureDefinition":
            assert res["derivation"] == "constraint" and res["fhirVersion"] == "4.0.1"
            assert res["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{res['type']}"
            assert res["kind"] == ("complex-type" if res["type"] == "Extension" else "resource")
        if rtype == "OperationDefinition":
            assert res["kind"] == "operation" and not res["code"].startswith("$")
            # named Type-code; an operation on every type (reindex) by its code alone
            generic = len(res["resource"]) > 100 and rid == res["code"]
            assert generic or rid == f"{res['resource'][0]}-{res['code']}"


def test_profiles_lists_our_resource_profiles_and_every_invariant_compiles() -> None:
    catalog = CATALOG
    assert REQUEST in catalog.profiles and TASK in catalog.profiles
    assert len(catalog.profiles) == 13  # 10 of the referral, 3 of remote consultation
    keys = {c.key for p in catalog.profiles.values() for e in p.elements for c in e.constraints}
    assert {"yl-task-1", "yl-task-3", "yl-sr-2", "yl-sr-3", "yl-approval-1"} <= keys
    for p in catalog.profiles.values():  # every expression compiles natively
        for e in p.elements:
            for c in e.constraints:
                assert c.compiled, c.expression
                c.run({"resourceType": p.type}, Env({}, {}))


# ----------------------------------------------------------------------------- accepted


def test_valid_referral_request_and_task_are_accepted(client: TestClient) -> None:
    r = client.post("/fhir/ServiceRequest", json=referral())
    assert r.status_code == 201, r.text
    r = client.post("/fhir/Task", json=task())
    assert r.status_code == 201, r.text


def test_resource_without_meta_profile_is_not_profile_checked(client: TestClient) -> None:
    bare = task(status="rejected", business="flying")
    del bare["meta"], bare["businessStatus"], bare["code"]
    assert client.post("/fhir/Task", json=bare).status_code == 201
    other = task()
    other["meta"]["profile"] = ["http://example.org/StructureDefinition/not-ours"]
    del other["businessStatus"]
    assert client.post("/fhir/Task", json=other).status_code == 201


def test_every_profile_accepts_a_conforming_instance(client: TestClient) -> None:
    good = [
        {
            "resourceType": "Task",
            "id": "ap1",
            "meta": {"profile": [SD + "yl-referral-approval-task"]},
            "status": "requested",
            "intent": "order",
            "partOf": [{"reference": "Task/t1"}],
            "code": {
                "coding": [
                    {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "approve"}
                ]
            },
            "focus": {"reference": "ServiceRequest/sr1"},
            "owner": {"reference": "PractitionerRole/ra"},
        },
        {
            "resourceType": "Task",
            "id": "fu1",
            "meta": {"profile": [SD + "yl-follow-up-task"]},
            "status": "requested",
            "intent": "plan",
            "code": {"coding": [coding("yl-task-type", "follow-up")]},
            "for": {"reference": "Patient/p1"},
            "owner": {"reference": "PractitionerRole/fd"},
        },
        {
            "resourceType": "Appointment",
            "id": "a1",
            "meta": {"profile": [SD + "yl-referral-appointment"]},
            "status": "booked",
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "slot": [{"reference": "Slot/s1"}],
            # app-3: a booked appointment has its start and end
            "start": "2026-03-02T09:00:00+08:00",
            "end": "2026-03-02T09:30:00+08:00",
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
        },
        {
            "resourceType": "Encounter",
            "id": "e1",
            "meta": {"profile": [SD + "yl-referral-encounter"]},
            "status": "arrived",
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        },
        {
            "resourceType": "Organization",
            "id": "o1",
            "meta": {"profile": [SD + "yl-organization"]},
            "extension": [ext("yl-org-level", valueCoding=coding("yl-org-level", "3A"))],
            "type": [{"text": "hospital"}],
            "name": "省人民医院",
        },
        {
            "resourceType": "OrganizationAffiliation",
            "id": "af1",
            "meta": {"profile": [SD + "yl-consortium-affiliation"]},
            "organization": {"reference": "Organization/c1"},
            "participatingOrganization": {"reference": "Organization/o1"},
            "code": [{"coding": [coding("yl-affiliation-role", "consortium-member")]}],
        },
        {
            "resourceType": "PractitionerRole",
            "id": "rc1",
            "meta": {"profile": [SD + "yl-referral-coordinator"]},
            "code": [{"coding": [coding("yl-practitioner-role", "referral-coordinator")]}],
            "organization": {"reference": "Organization/o1"},
        },
        {
            "resourceType": "CareTeam",
            "id": "ct1",
            "meta": {"profile": [SD + "yl-collaboration-team"]},
            "category": [{"coding": [coding("yl-careteam-type", "collaboration")]}],
            "participant": [
                {
                    "role": [{"coding": [coding("yl-collaboration-role", "primary-doctor")]}],
                    "member": {"reference": "PractitionerRole/rc1"},
                }
            ],
            "managingOrganization": [{"reference": "Organization/o1"}],
        },
    ]
    for res in good:
        r = create(client, res)
        assert r.status_code == 201, r.text


# ----------------------------------------------------------------------------- rejected


def test_missing_required_element_is_422_naming_it(client: TestClient) -> None:
    bad = task()
    del bad["businessStatus"], bad["owner"]
    r = client.post("/fhir/Task", json=bad)
    rejected(r, "required", "Task.businessStatus")
    rejected(r, "required", "Task.owner")


def test_missing_required_extension_is_422(client: TestClient) -> None:
    bad = referral()
    bad["extension"] = bad["extension"][1:]  # no yl-referral-direction
    issue = rejected(
        client.post("/fhir/ServiceRequest", json=bad), "required", "ServiceRequest.extension"
    )
    assert "direction" in issue["diagnostics"]


def test_missing_required_slice_is_422(client: TestClient) -> None:
    bad = referral()
    bad["category"] = bad["category"][:1]  # no yl-referral-type category
    issue = rejected(
        client.post("/fhir/ServiceRequest", json=bad), "required", "ServiceRequest.category"
    )
    assert "referralType" in issue["diagnostics"]


def test_wrong_fixed_code_is_422(client: TestClient) -> None:
    bad = task()
    bad["code"]["coding"][0]["code"] = "approve"
    rejected(client.post("/fhir/Task", json=bad), "value", "Task.code")
    bad = referral()
    bad["intent"] = "plan"
    rejected(client.post("/fhir/ServiceRequest", json=bad), "value", "ServiceRequest.intent")


def test_code_outside_required_binding_is_422(client: TestClient) -> None:
    bad = task(business="flying")
    issue = rejected(client.post("/fhir/Task", json=bad), "code-invalid", "Task.businessStatus")
    assert "flying" in issue["diagnostics"]
    bad = task(status="ready")  # not in yl-referral-task-status
    rejected(client.post("/fhir/Task", json=bad), "code-invalid", "Task.status")


def test_extension_value_outside_its_binding_or_type_is_422(client: TestClient) -> None:
    bad = referral()
    bad["extension"][0]["valueCoding"]["code"] = "sideways"
    rejected(client.post("/fhir/ServiceRequest", json=bad), "code-invalid",
             "ServiceRequest.extension[0].valueCoding")  # fmt: skip
    bad = referral()
    bad["extension"][0] = ext("yl-referral-direction", valueString="up")
    rejected(client.post("/fhir/ServiceRequest", json=bad), "value",
             "ServiceRequest.extension[0].valueString")  # fmt: skip
    bad = referral()
    del bad["extension"][1]["extension"][1]  # org-levels without target
    rejected(client.post("/fhir/ServiceRequest", json=bad), "required",
             "ServiceRequest.extension[1].extension")  # fmt: skip


def valid(client: TestClient, resource: dict[str, Any]) -> bool:
    """Whether $validate finds no error in the resource."""
    outcome = client.post(f"/fhir/{resource['resourceType']}/$validate", json=resource).json()
    return not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def test_broken_invariant_is_422(client: TestClient) -> None:
    bad = task(status="rejected", business="rejected")  # no statusReason
    issue = rejected(client.post("/fhir/Task", json=bad), "invariant", "Task")
    assert "yl-task-3" in issue["diagnostics"]
    bad["statusReason"] = {"coding": [coding("yl-referral-rejection-reason", "no-capacity")]}
    assert valid(client, bad)  # (not created: a referral Task starts as a draft)


def test_status_and_business_status_must_pair(client: TestClient) -> None:
    issue = rejected(client.post("/fhir/Task", json=task(status="requested", business="booked")),
                     "invariant", "Task")  # fmt: skip
    assert "yl-task-1" in issue["diagnostics"]
    assert (
        client.post("/fhir/Task", json=task(status="accepted", business="booked")).status_code
        == 201
    )


def test_referral_invariants(client: TestClient) -> None:
    bad = referral()
    bad["status"] = "revoked"
    assert "yl-sr-2" in rejected(client.post("/fhir/ServiceRequest", json=bad), "invariant",
                                 "ServiceRequest")["diagnostics"]  # fmt: skip
    bad["extension"].append(ext("yl-status-reason", valueCodeableConcept={"text": "患者要求"}))
    assert valid(client, bad)  # (not created: only $cancel revokes a referral)
    bad = referral(rtype="inpatient")
    del bad["reasonCode"]
    r = client.post("/fhir/ServiceRequest", json=bad)
    assert {"yl-sr-3", "yl-sr-5"} <= {i["diagnostics"].split()[1] for i in issues(r)}


def test_reference_to_a_disallowed_type_is_422(client: TestClient) -> None:
    bad = referral()
    bad["requester"] = {"reference": "Practitioner/x"}
    rejected(client.post("/fhir/ServiceRequest", json=bad), "value", "ServiceRequest.requester")


def test_profile_for_another_type_is_422(client: TestClient) -> None:
    bad = referral()
    bad["meta"]["profile"] = [TASK]
    rejected(
        client.post("/fhir/ServiceRequest", json=bad), "invalid", "ServiceRequest.meta.profile"
    )


def test_update_and_transaction_are_profile_checked_too(client: TestClient) -> None:
    assert create(client, task()).status_code == 201
    bad = task(status="cancelled", business="withdrawn")
    rejected(create(client, bad), "invariant", "Task")
    assert client.get("/fhir/Task/t1").json()["status"] == "requested"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": bad, "request": {"method": "PUT", "url": "Task/t1"}}],
    }
    assert client.post("/fhir", json=bundle).status_code == 422


def test_profile_issues_is_empty_for_valid_instances() -> None:
    assert profiles.profile_issues(referral(), CATALOG, TERMINOLOGY) == []
    assert profiles.profile_issues(task(), CATALOG, TERMINOLOGY) == []
    unclaimed = copy.deepcopy(task())
    del unclaimed["meta"], unclaimed["code"]
    assert profiles.profile_issues(unclaimed, CATALOG, TERMINOLOGY) == []


# ----------------------------------------------------------------------------- search


@pytest.fixture
def referrals(client: TestClient) -> TestClient:
    for res in [
        referral("up1", "up", "outpatient"),
        referral("up2", "up", "inpatient"),
        referral("down1", "down", "rehabilitation"),
        task("t-jan", when="2026-01-10", focus="sr-jan"),
        task("t-dec", when="2025-12-20", focus="sr-dec"),
    ]:
        assert create(client, res).status_code == 201
    down = referral("down2", "down")
    down["extension"][1]["extension"][0]["valueCoding"]["code"] = "3A"
    down["extension"][1]["extension"][1]["valueCoding"]["code"] = "chc"
    down["extension"][2]["valueReference"]["reference"] = "Organization/consortium-2"
    assert create(client, down).status_code == 201
    return client


def test_ig_search_parameters_work_with_no_code(referrals: TestClient) -> None:
    def search(query: str) -> set[str]:
        r = referrals.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
        assert r.status_code == 200, r.text
        return ids(r.json())

    assert search("ServiceRequest?referral-direction=up") == {"up1", "up2"}
    system = f"{C}/CodeSystem/yl-referral-direction"
    assert search(f"ServiceRequest?referral-direction={system}|down") == {"down1", "down2"}
    assert search("Task?referral-direction=up") == {"t-jan", "t-dec"}
    assert search("ServiceRequest?referral-type=inpatient") == {"up2"}
    assert search("ServiceRequest?source-org-level=3A") == {"down2"}
    assert search("ServiceRequest?target-org-level=3A") == {"up1", "up2", "down1"}
    assert search("ServiceRequest?consortium=Organization/consortium-2") == {"down2"}
    assert search("Task?milestone-date=ge2026-01-01") == {"t-jan"}
    assert search("Task?milestone-date=lt2026-01-01") == {"t-dec"}
    assert search("Task?milestone-code=submitted") == {"t-jan", "t-dec"}
    assert search("Task?milestone=submitted$ge2026-01-01") == {"t-jan"}
    assert search("Task?focus:ServiceRequest.referral-type=outpatient") == set()


def test_referral_type_reaches_tasks_through_a_chain(referrals: TestClient) -> None:
    t = task("t-up2")
    t["focus"] = {"reference": "ServiceRequest/up2"}
    assert create(referrals, t).status_code == 201
    r = referrals.get("/fhir/Task?focus:ServiceRequest.referral-type=inpatient")
    assert ids(r.json()) == {"t-up2"}


def test_status_reason_search(client: TestClient) -> None:
    t = task(status="rejected", business="rejected")
    t["statusReason"] = {"coding": [coding("yl-referral-rejection-reason", "no-capacity")]}
    seed(client, [t])  # a rejected referral cannot be created by REST
    assert ids(client.get("/fhir/Task?status-reason=no-capacity").json()) == {"t1"}


def test_milestone_composite_matches_within_one_milestone(client: TestClient) -> None:
    t = task(when="2025-12-20")  # submitted in December...
    t["extension"].append(
        ext(
            "yl-milestones",
            extension=[
                {"url": "code", "valueCoding": coding("yl-milestone", "booked")},
                {"url": "dateTime", "valueDateTime": "2026-01-03T10:00:00+08:00"},
            ],
        )
    )  # ...booked in January
    assert create(client, t).status_code == 201
    found = client.get("/fhir/Task?milestone=booked$ge2026-01-01").json()
    assert ids(found) == {"t1"}
    assert ids(client.get("/fhir/Task?milestone=submitted$ge2026-01-01").json()) == set()


def test_capability_statement_lists_our_profiles_and_operations(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    base = "https://yilian.health/fhir/StructureDefinition/"
    assert f"{base}yl-referral-task" in resources["Task"]["supportedProfile"]
    assert f"{base}yl-referral-request" in resources["ServiceRequest"]["supportedProfile"]
    task_ops = {o["name"] for o in resources["Task"]["operation"]}
    assert {"claim", "accept", "reject", "cancel", "check-in", "complete"} <= task_ops
    sr_ops = {o["name"] for o in resources["ServiceRequest"]["operation"]}
    assert {"submit", "referral-slip", "referral-stats"} <= sr_ops
