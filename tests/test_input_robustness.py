"""Malformed input found by fuzzing answers a 4xx OperationOutcome naming the element, never 500,
and leaves stored data untouched (http.html: 400 for content that fails basic FHIR validation)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_workflow import build_world, referral, submit

Json = dict[str, Any]
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def refused(response: Any, expression: str, status: int = 400) -> Json:
    """The response is `status` with an OperationOutcome one of whose issues names `expression`."""
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    named = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert expression in named, named
    return outcome


def create(client: TestClient, resource: Json) -> Json:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def count(client: TestClient, rtype: str) -> int:
    return int(client.get(f"/fhir/{rtype}?_summary=count").json()["total"])


# -- 1. narrative: character references must name XML characters (XML 1.0 §4.1, [66] + WFC
# Legal Character); the full-text indexer must not choke on what validation lets through ---------


@pytest.mark.parametrize(
    "reference", ["&#1114112;", "&#x110000;", "&#xD800;", "&#55296;", "&#0;", "&#" + "9" * 30 + ";"]
)
def test_narrative_with_a_character_reference_outside_xml_chars_is_400(
    client: TestClient, reference: str
) -> None:
    text = {"status": "generated", "div": XHTML.format(reference)}
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "text": text})
    refused(r, "Patient.text.div")
    assert count(client, "Patient") == 0


def test_narrative_character_references_are_searchable_text(client: TestClient) -> None:
    div = XHTML.format("caf&#233; &#x4E2D;&#x6587; &eacute;t&eacute; &lt;b&gt;")
    create(client, {"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    for word in ("café", "中文", "été", "<b>"):
        bundle = client.get("/fhir/Patient", params={"_text": word}).json()
        assert bundle["total"] == 1, word


def test_contained_narrative_is_checked_too(client: TestClient) -> None:
    bad = {"resourceType": "Organization", "id": "o", "name": "x"}
    bad["text"] = {"status": "generated", "div": XHTML.format("&#xD800;")}
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "contained": [bad]})
    refused(r, "Patient.contained[0].text.div")


# -- 2. nesting depth ------------------------------------------------------------------------


def nested_extension(depth: int) -> Json:
    ext: Json = {"url": "http://example.org/leaf", "valueString": "a"}
    for _ in range(depth):
        ext = {"url": "http://example.org/node", "extension": [ext]}
    return ext


def test_extensions_nested_120_deep_are_400_too_deeply_nested(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "extension": [nested_extension(120)]}
    )
    outcome = refused(r, "Patient" + ".extension[0]" * 32)
    assert "nested" in outcome["issue"][0]["diagnostics"]
    assert count(client, "Patient") == 0


def test_extensions_nested_a_reasonable_depth_are_accepted(client: TestClient) -> None:
    create(client, {"resourceType": "Patient", "extension": [nested_extension(20)]})


def test_deep_nesting_in_a_transaction_entry_is_400(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "extension": [nested_extension(120)]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text
    assert count(client, "Patient") == 0


# -- 3. contained resources ------------------------------------------------------------------


@pytest.mark.parametrize(
    "item", [{"resourceType": "Foo"}, 5, "x", {"id": "c1"}, {"resourceType": 7}, []]
)
def test_contained_that_is_not_a_known_resource_is_400(client: TestClient, item: Any) -> None:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "contained": [item]})
    refused(r, "Patient.contained[0]")


def test_contained_resource_is_validated_with_its_own_path(client: TestClient) -> None:
    contained = [{"resourceType": "Organization", "id": "o", "name": 5}]
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "contained": contained})
    refused(r, "Patient.contained[0].name")


def test_contained_r4_type_missing_from_r4b_is_accepted(client: TestClient) -> None:
    contained = [{"resourceType": "SubstancePolymer", "id": "p"}]
    # referred to from the container (dom-3)
    ext = [{"url": "http://example.org/polymer", "valueReference": {"reference": "#p"}}]
    create(client, {"resourceType": "Patient", "contained": contained, "extension": ext})


def test_bundle_entry_of_unknown_type_is_400(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Foo"}}],
    }
    refused(client.post("/fhir/Bundle", json=bundle), "Bundle.entry[0].resource")


# -- 4. the common Resource/DomainResource elements of the types R4B lacks or redesigned --------


@pytest.mark.parametrize("rtype", ["SubstancePolymer", "MedicinalProduct", "Evidence"])
@pytest.mark.parametrize(
    ("element", "value", "expression"),
    [
        ("meta", [], "meta"),
        ("meta", "x", "meta"),
        ("meta", {"versionId": 1}, "meta.versionId"),
        ("meta", {"lastUpdated": "yesterday"}, "meta.lastUpdated"),
        ("meta", {"profile": "http://example.org/p"}, "meta.profile"),
        ("meta", {"tag": [5]}, "meta.tag[0]"),
        ("id", 5, "id"),
        ("text", 5, "text"),
        ("text", {"div": XHTML.format("x")}, "text.status"),
        ("text", {"status": "generated", "div": 5}, "text.div"),
        ("contained", {"resourceType": "Patient"}, "contained"),
        ("contained", [5], "contained[0]"),
        ("extension", [{"valueString": "x"}], "extension[0].url"),
        ("extension", [5], "extension[0]"),
        ("modifierExtension", {"url": "http://x"}, "modifierExtension"),
        ("implicitRules", 5, "implicitRules"),
        ("language", ["en"], "language"),
    ],
)
def test_common_elements_of_basic_check_types_are_validated(
    client: TestClient, rtype: str, element: str, value: Any, expression: str
) -> None:
    r = client.post(f"/fhir/{rtype}", json={"resourceType": rtype, element: value})
    refused(r, f"{rtype}.{expression}")
    assert count(client, rtype) == 0


def test_meta_given_as_a_json_string_is_400_for_every_type(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "meta": '{"tag": []}'})
    refused(r, "Patient.meta")


def test_valid_common_elements_of_basic_check_types_are_accepted(client: TestClient) -> None:
    resource = {
        "resourceType": "SubstancePolymer",
        "meta": {"profile": ["http://example.org/p"], "tag": [{"code": "t"}]},
        "text": {"status": "generated", "div": XHTML.format("polymer")},
        "extension": [{"url": "http://example.org/e", "valueString": "x"}],
        "language": "en",
    }
    create(client, resource)


# -- 5. operation input: Parameters.parameter is a list of objects (operations.html) ----------


@pytest.mark.parametrize(
    ("parameter", "expression"),
    [
        (5, "Parameters.parameter"),
        ({"name": "resource"}, "Parameters.parameter"),
        ([5], "Parameters.parameter[0]"),
        ([{"name": 5}], "Parameters.parameter[0].name"),
        ([{"name": "x", "part": 5}], "Parameters.parameter[0].part"),
        (
            [{"name": "x", "part": [{"name": "y", "part": ["z"]}]}],
            "Parameters.parameter[0].part[0].part[0]",
        ),
    ],
)
def test_validate_operation_with_malformed_parameters_is_400(
    client: TestClient, parameter: Any, expression: str
) -> None:
    body = {"resourceType": "Parameters", "parameter": parameter}
    refused(client.post("/fhir/Patient/$validate", json=body), expression)
    refused(client.post("/fhir/Patient/$validate?mode=create", json=body), expression)


@pytest.mark.parametrize("parameter", [5, [5], [{"name": "slot", "part": "x"}]])
def test_referral_operation_with_malformed_parameters_is_400_and_changes_nothing(
    client: TestClient, parameter: Any
) -> None:
    task, _ = submit(client, referral(client, build_world(client)))
    before = client.get(f"/fhir/{task}").json()
    body = {"resourceType": "Parameters", "parameter": parameter}
    r = client.post(f"/fhir/{task}/$accept", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"][0].startswith("Parameters.parameter")
    assert client.get(f"/fhir/{task}").json() == before


# -- 6. FHIRPath Patch parts (fhirpatch.html) ------------------------------------------------


def fhirpath_patch(*parts: Json) -> Json:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": list(parts)}]}


ADD_CONTACT = [
    {"name": "type", "valueCode": "add"},
    {"name": "path", "valueString": "Patient"},
    {"name": "name", "valueString": "contact"},
]


@pytest.mark.parametrize(
    ("parameters", "expression"),
    [
        ({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": 5}]},
         "Parameters.parameter[0].part"),
        ({"resourceType": "Parameters", "parameter": 5}, "Parameters.parameter"),
        (fhirpath_patch(5), "Parameters.parameter[0].part[0]"),
        (fhirpath_patch({"name": "path", "valueString": "Patient"}),
         "Parameters.parameter[0].part"),
        (fhirpath_patch(*ADD_CONTACT, {"name": "value", "part": "x"}),
         "Parameters.parameter[0].part[3].part"),
        (fhirpath_patch(*ADD_CONTACT, {"name": "value", "part": 5}),
         "Parameters.parameter[0].part[3].part"),
        (fhirpath_patch(*ADD_CONTACT, {"name": "value", "part": [5]}),
         "Parameters.parameter[0].part[3].part[0]"),
        (fhirpath_patch(*ADD_CONTACT, {"name": "value", "part": [{"name": 5}]}),
         "Parameters.parameter[0].part[3].part[0].name"),
    ],
)
def test_fhirpath_patch_with_malformed_parts_is_refused_naming_the_parameter(
    client: TestClient, parameters: Json, expression: str
) -> None:
    patient = create(client, {"resourceType": "Patient", "active": True})
    r = client.patch(f"/fhir/Patient/{patient['id']}", json=parameters)
    assert r.status_code in (400, 422), r.text
    refused(r, expression, r.status_code)
    assert client.get(f"/fhir/Patient/{patient['id']}").json() == patient


def test_fhirpath_patch_value_string_where_a_backbone_is_needed_is_400(
    client: TestClient,
) -> None:
    patient = create(client, {"resourceType": "Patient", "active": True})
    parameters = fhirpath_patch(*ADD_CONTACT, {"name": "value", "valueString": "x"})
    r = client.patch(f"/fhir/Patient/{patient['id']}", json=parameters)
    refused(r, "Patient.contact[0]")
    assert client.get(f"/fhir/Patient/{patient['id']}").json() == patient


# -- 7. empty strings (json.html: string property values can never be empty) -----------------


def test_binary_with_empty_data_is_400(client: TestClient) -> None:
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": ""}
    r = client.post("/fhir/Binary", json=binary)
    refused(r, "Binary.data")
    assert count(client, "Binary") == 0


def test_empty_string_anywhere_is_400(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["a", ""]}]}
    r = client.post("/fhir/Patient", json=patient)
    refused(r, "Patient.name[0].given[1]")


def batch_patch(rtype: str, rid: str, binary: Json) -> Json:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": binary, "request": {"method": "PATCH", "url": f"{rtype}/{rid}"}}],
    }


@pytest.mark.parametrize("data", ["", "!!not base64!!", base64.b64encode(b"not json").decode(),
                                  base64.b64encode(b'{"op": "add"}').decode()])
def test_batch_json_patch_in_a_binary_with_bad_data_is_refused(
    client: TestClient, data: str
) -> None:
    patient = create(client, {"resourceType": "Patient", "active": True})
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    r = client.post("/fhir", json=batch_patch("Patient", patient["id"], binary))
    assert r.status_code == 200, r.text
    response = r.json()["entry"][0]["response"]
    assert response["status"].startswith("4"), response
    assert client.get(f"/fhir/Patient/{patient['id']}").json() == patient


def test_batch_json_patch_in_a_binary_still_applies(client: TestClient) -> None:
    patient = create(client, {"resourceType": "Patient", "active": True})
    ops = b'[{"op": "replace", "path": "/active", "value": false}]'
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(ops).decode(),
    }
    r = client.post("/fhir", json=batch_patch("Patient", patient["id"], binary))
    assert r.json()["entry"][0]["response"]["status"] == "200", r.text
    assert client.get(f"/fhir/Patient/{patient['id']}").json()["active"] is False


def test_a_number_where_a_url_is_needed_is_400(client: TestClient) -> None:
    endpoint = {
        "resourceType": "Endpoint",
        "status": "active",
        "connectionType": {"code": "hl7-fhir-rest"},
        "payloadType": [{"text": "any"}],
        "address": 5,
    }
    refused(client.post("/fhir/Endpoint", json=endpoint), "Endpoint.address")
    assert count(client, "Endpoint") == 0


def test_a_transaction_entry_nested_hundreds_deep_is_400(client: TestClient) -> None:
    """Reference rewriting walks an entry before it is validated: 400 levels deep that walk
    overflowed Python's stack (500)."""
    depth = 200  # 400 JSON levels, built by hand: json.dumps itself cannot go this deep
    node = '{"url":"http://example.org/x","extension":[' * depth + '{"valueString":"x"}'
    node += "]}" * depth
    body = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1",'
        f'"resource":{{"resourceType":"Patient","extension":[{node}]}},'
        '"request":{"method":"PUT","url":"Patient/deep"}}]}'
    )
    headers = {"Content-Type": "application/fhir+json"}
    response = client.post("/fhir", content=body.encode(), headers=headers)
    assert response.status_code == 400, response.text
    assert client.get("/fhir/Patient/deep").status_code == 404
