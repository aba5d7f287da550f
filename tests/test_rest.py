"""The RESTful interactions of http://hl7.org/fhir/R4/http.html over HTTP on a real SQLite file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from fastapi.testclient import TestClient

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.156.112604.1", "value": "MRN-001"}],
    "name": [{"family": "张", "given": ["三"], "text": "张三"}],
    "gender": "male",
    "birthDate": "1970-03-05",
}
JSON = "application/fhir+json; charset=utf-8"


def create(client: TestClient, resource: dict[str, Any] = PATIENT, **headers: str) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def outcome_codes(r: Any) -> list[str]:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return [i["code"] for i in body["issue"]]


def test_create_assigns_id_and_returns_version_headers(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json={**PATIENT, "id": "client-chosen"})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["content-type"] == JSON
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["last-modified"].endswith("GMT")


def test_read_returns_stored_resource_with_etag(client: TestClient) -> None:
    pid = create(client)
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'
    assert r.json()["name"][0]["text"] == "张三"


def test_read_unknown_id_is_404_and_unknown_type_is_404(client: TestClient) -> None:
    r = client.get("/fhir/Patient/nope")
    assert r.status_code == 404
    assert outcome_codes(r) == ["not-found"]
    assert client.get("/fhir/Patientx/1").status_code == 404


def test_invalid_id_in_url_is_400(client: TestClient) -> None:
    assert client.get("/fhir/Patient/bad_id!").status_code == 400


def test_update_creates_new_version_and_vread_reads_each(client: TestClient) -> None:
    pid = create(client)
    r = client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "female"})
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_with_client_id_returns_201(client: TestClient) -> None:
    r = client.put("/fhir/Patient/p-100", json={**PATIENT, "id": "p-100"})
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Patient/p-100/_history/1")


def test_update_with_identical_content_makes_no_new_version(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json={**PATIENT, "id": "p1"})
    r = client.put("/fhir/Patient/p1", json={**PATIENT, "id": "p1"})
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'


def test_update_id_must_match_url(client: TestClient) -> None:
    r = client.put("/fhir/Patient/p1", json={**PATIENT, "id": "p2"})
    assert r.status_code == 400
    assert client.put("/fhir/Patient/p1", json=PATIENT).status_code == 400
    assert client.get("/fhir/Patient/p1").status_code == 404


def test_wrong_resource_type_for_url_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Observation", json=PATIENT)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["resourceType"]


def test_malformed_json_is_400_and_stores_nothing(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient",
        content=b'{"resourceType": "Patient",',
        headers={"content-type": "application/fhir+json"},
    )
    assert r.status_code == 400
    assert outcome_codes(r) == ["structure"]
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_validation_failure_names_the_element(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json={**PATIENT, "birthDate": "1970-13-45"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    r = client.post("/fhir/Patient", json={**PATIENT, "unknownElement": 1})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Patient.unknownElement"]


def test_delete_keeps_history_and_reads_410(client: TestClient) -> None:
    pid = create(client)
    r = client.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 410
    assert outcome_codes(r) == ["deleted"]
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    # deleting again is a no-op; a new PUT revives the resource as version 3
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    r = client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid})
    assert r.status_code == 201
    assert r.headers["etag"] == 'W/"3"'


def test_deleted_resource_is_not_found_by_search(client: TestClient) -> None:
    pid = create(client)
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get("/fhir/Patient?identifier=MRN-001").json()["total"] == 0


def test_history_type_and_system_with_count_since_and_paging(client: TestClient) -> None:
    ids = [create(client) for _ in range(3)]
    client.put(f"/fhir/Patient/{ids[0]}", json={**PATIENT, "id": ids[0], "active": True})
    create(client, {"resourceType": "Organization", "name": "市第一人民医院"})
    r = client.get("/fhir/Patient/_history?_count=2")
    body = r.json()
    assert body["type"] == "history" and body["total"] == 4
    assert len(body["entry"]) == 2
    # newest first: the update is the first entry
    assert body["entry"][0]["resource"]["meta"]["versionId"] == "2"
    nxt = next(lk["url"] for lk in body["link"] if lk["relation"] == "next")
    page2 = client.get(nxt.replace("http://testserver", "")).json()
    assert len(page2["entry"]) == 2
    seen = {(e["fullUrl"], e["response"]["etag"]) for e in body["entry"] + page2["entry"]}
    assert len(seen) == 4
    # the IG's conformance resources, stored at start-up, are in the system history too, and
    # so are the AuditEvents the audit trail expands in the background meanwhile: the system
    # total is read between two equal AuditEvent counts (else an expansion ran in between)
    def total(path: str) -> int:
        return int(client.get(f"/fhir/{path}_history?_count=1").json()["total"])

    for _ in range(20):
        audited = total("AuditEvent/")
        system = total("")
        if total("AuditEvent/") == audited:
            break
    types = ("CodeSystem", "ValueSet", "StructureDefinition", "SearchParameter")
    assert system - 5 - audited == sum(total(f"{t}/") for t in (*types, "OperationDefinition"))
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.get(f"/fhir/_history?_since={future}").json()["total"] == 0


def test_history_at_returns_versions_current_then(client: TestClient) -> None:
    pid = create(client)
    first = client.get(f"/fhir/Patient/{pid}").json()["meta"]["lastUpdated"]
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "active": True})
    body = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": first}).json()
    assert [e["resource"]["meta"]["versionId"] for e in body["entry"]] == ["1"]


def test_history_of_unknown_resource_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Patient/none/_history").status_code == 404


def test_if_match_rejects_stale_version_with_412(client: TestClient) -> None:
    pid = create(client)
    body = {**PATIENT, "id": pid, "active": True}
    r = client.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    r = client.put(
        f"/fhir/Patient/{pid}", json={**body, "active": False}, headers={"If-Match": 'W/"1"'}
    )
    assert r.status_code == 412
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is True
    assert client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'}).status_code == 412


def test_if_none_match_and_if_modified_since_give_304(client: TestClient) -> None:
    pid = create(client)
    r = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.content == b""
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    later = format_datetime(datetime.now(UTC) + timedelta(minutes=5), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert (
        client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": later}).status_code == 304
    )
    assert (
        client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": earlier}).status_code
        == 200
    )


def test_prefer_return_minimal_representation_and_outcome(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=representation"})
    assert r.json()["resourceType"] == "Patient"


def test_conditional_create_returns_existing_on_single_match(client: TestClient) -> None:
    pid = create(client)
    r = client.post(
        "/fhir/Patient",
        json=PATIENT,
        headers={"If-None-Exist": "identifier=urn:oid:1.2.156.112604.1|MRN-001"},
    )
    assert r.status_code == 200
    assert r.json()["id"] == pid
    r = client.post("/fhir/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=OTHER"})
    assert r.status_code == 201


def test_conditional_create_with_several_matches_is_412(client: TestClient) -> None:
    create(client)
    create(client)
    r = client.post("/fhir/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=MRN-001"})
    assert r.status_code == 412


def test_conditional_create_with_unknown_parameter_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=PATIENT, headers={"If-None-Exist": "nonsense=1"})
    assert r.status_code == 400
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_conditional_update_creates_updates_or_refuses(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=urn:oid:1.2.156.112604.1|MRN-001"
    r = client.put(url, json=PATIENT)
    assert r.status_code == 201
    pid = r.json()["id"]
    r = client.put(url, json={**PATIENT, "active": True})
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["meta"]["versionId"] == "2"
    create(client)
    assert client.put(url, json=PATIENT).status_code == 412


def test_conditional_delete_single_and_multiple(client: TestClient) -> None:
    create(client)
    assert client.delete("/fhir/Patient?identifier=MRN-001").status_code == 200
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0
    create(client)
    create(client)
    assert client.delete("/fhir/Patient?identifier=MRN-001").status_code == 412
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 2
    assert client.delete("/fhir/Patient?identifier=nothing").status_code == 204


def test_json_patch_applies_and_versions(client: TestClient) -> None:
    pid = create(client)
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/active", "value": True},
    ]
    r = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(ops),
        headers={"content-type": "application/json-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and r.json()["active"] is True
    assert r.headers["etag"] == 'W/"2"'


def test_json_patch_failing_test_op_is_422_and_changes_nothing(client: TestClient) -> None:
    pid = create(client)
    ops = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "other"},
    ]
    r = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(ops),
        headers={"content-type": "application/json-patch+json"},
    )
    assert r.status_code == 422
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_json_patch_producing_invalid_resource_is_rejected(client: TestClient) -> None:
    pid = create(client)
    ops = [{"op": "replace", "path": "/birthDate", "value": "not-a-date"}]
    r = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(ops),
        headers={"content-type": "application/json-patch+json"},
    )
    assert r.status_code == 400
    assert client.get(f"/fhir/Patient/{pid}").json()["birthDate"] == "1970-03-05"


def test_fhirpath_patch_with_parameters(client: TestClient) -> None:
    pid = create(client)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.birthDate"},
                    {"name": "value", "valueDate": "1971-01-01"},
                ],
            }
        ],
    }
    r = client.patch(
        f"/fhir/Patient/{pid}", json=params, headers={"content-type": "application/fhir+json"}
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/fhir/Patient/{pid}").json()["birthDate"] == "1971-01-01"


def test_conditional_patch(client: TestClient) -> None:
    pid = create(client)
    ops = [{"op": "add", "path": "/active", "value": False}]
    r = client.patch(
        "/fhir/Patient?identifier=MRN-001",
        content=json.dumps(ops),
        headers={"content-type": "application/json-patch+json"},
    )
    assert r.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is False


def test_format_and_accept_negotiation(client: TestClient) -> None:
    """JSON and XML (tests/test_xml.py has the rest); anything else is 406, said in JSON."""
    pid = create(client)
    assert client.get(f"/fhir/Patient/{pid}?_format=json").status_code == 200
    r = client.get(f"/fhir/Patient/{pid}?_format=text/html")
    assert r.status_code == 406
    assert r.headers["content-type"] == JSON
    r = client.get(f"/fhir/Patient/{pid}", headers={"Accept": "text/html"})
    assert r.status_code == 406
    assert r.headers["content-type"] == JSON
    ok = client.get(f"/fhir/Patient/{pid}", headers={"Accept": "application/fhir+json"})
    assert ok.status_code == 200


def test_body_in_another_format_is_415(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient", content=b"resourceType: Patient", headers={"content-type": "text/yaml"}
    )
    assert r.status_code == 415


def test_pretty_summary_and_elements_on_read(client: TestClient) -> None:
    pid = create(
        client,
        {
            **PATIENT,
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
            },
            "maritalStatus": {"text": "married"},
        },
    )
    pretty = client.get(f"/fhir/Patient/{pid}?_pretty=true").text
    assert "\n  " in pretty
    summary = client.get(f"/fhir/Patient/{pid}?_summary=true").json()
    assert "name" in summary and "maritalStatus" not in summary and "text" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    text = client.get(f"/fhir/Patient/{pid}?_summary=text").json()
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = client.get(f"/fhir/Patient/{pid}?_summary=data").json()
    assert "text" not in data and "maritalStatus" in data
    elements = client.get(f"/fhir/Patient/{pid}?_elements=gender").json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}


def test_method_not_allowed_is_405_outcome(client: TestClient) -> None:
    r = client.post("/fhir/Patient/123/_history")
    assert r.status_code in (404, 405)
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.delete("/fhir/Patient/123/_history/1")
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"


def test_body_over_limit_is_413(client_with: Any) -> None:
    c = client_with(max_body_bytes=100)
    r = c.post(
        "/fhir/Patient",
        json={**PATIENT, "text": {"status": "generated", "div": "<div>" + "x" * 200}},
    )
    assert r.status_code == 413
    assert outcome_codes(r) == ["too-costly"]
    assert c.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_unhandled_error_is_500_outcome_without_trace(client: TestClient, monkeypatch: Any) -> None:
    from fhir_server.interactions import read

    def boom(*_: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(read, "read", boom)
    r = client.get("/fhir/Patient/x")
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_validate_operation_type_and_instance(client: TestClient) -> None:
    ok = client.post("/fhir/Patient/$validate", json=PATIENT)
    assert ok.status_code == 200
    # valid; the HL7 validator's best-practice warning dom-6 (no narrative) is all it says
    assert [(i["severity"], i["diagnostics"][:5]) for i in ok.json()["issue"]] == [
        ("warning", "dom-6")
    ]
    bad = client.post(
        "/fhir/Patient/$validate",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": {**PATIENT, "birthDate": "x"}}],
        },
    )
    assert bad.status_code == 200
    assert bad.json()["issue"][0]["severity"] == "error"
    assert bad.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    pid = create(client)
    r = client.post(
        f"/fhir/Patient/{pid}/$validate",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "mode", "valueCode": "update"},
                {"name": "resource", "resource": {**PATIENT, "id": "other"}},
            ],
        },
    )
    assert r.json()["issue"][0]["severity"] == "error"
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 1


def test_capability_statement_lists_interactions_and_search_params(client: TestClient) -> None:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    patient = next(res for res in rest["resource"] if res["type"] == "Patient")
    names = {p["name"] for p in patient["searchParam"]}
    assert {
        "_id",
        "_lastUpdated",
        "identifier",
        "name",
        "birthdate",
        "general-practitioner",
    } <= names
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "create", "search-type"} <= codes
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    assert len(rest["resource"]) >= 140
