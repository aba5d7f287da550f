"""FHIR XML (http://hl7.org/fhir/R4/xml.html, http.html#mime-type): read and written wherever
JSON is, chosen by `_format` or `Accept`, for resources, bundles and OperationOutcomes.

Independent expectations: XML written by HL7 (tests/data/xml, from fhir-test-cases) must read
as HL7's JSON of the same resource; XML we write must parse with fhir.resources' own XML
reader; the rest is worked out by hand from xml.html. The round trip of every R4 example
through XML is in test_examples_roundtrip.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from lxml import etree
from test_examples_roundtrip import (
    EXAMPLES,
    canonical_narratives,
    literal_tree,
    without_server_meta,
)

XML_DATA = Path(__file__).parent / "data" / "xml"
NS = {"f": "http://hl7.org/fhir"}
XML = "application/fhir+xml"
XML_TYPE = "application/fhir+xml; charset=utf-8"
SEND_XML = {"Content-Type": XML}


def xml_of(response: bytes) -> etree._Element:
    return etree.fromstring(response)


def values(root: etree._Element, path: str) -> list[str]:
    return [str(v) for v in root.xpath(path + "/@value", namespaces=NS)]


@pytest.mark.parametrize(
    ("xml_file", "json_example"),
    [("patient-example.xml", "Patient-example.json"),
     ("questionnaire-example.xml", "Questionnaire-3141.json")],
)  # fmt: skip
def test_hl7_xml_reads_as_hl7_json(client: TestClient, xml_file: str, json_example: str) -> None:
    """HL7 publishes each example in both formats: our JSON of their XML is their JSON."""
    want = literal_tree(EXAMPLES[json_example])
    url = f"/fhir/{want['resourceType']}/{want['id']}"
    r = client.put(url, content=(XML_DATA / xml_file).read_bytes(), headers=SEND_XML)
    assert r.status_code == 201, r.text
    got = literal_tree(client.get(url).content)
    assert canonical_narratives(without_server_meta(got)) == canonical_narratives(
        without_server_meta(want)
    )


def test_hl7_xml_with_comments_schema_location_and_any_order_is_read(client: TestClient) -> None:
    """observation-example.xml has comments, an extension after `status` (out of the
    definition order, which HAPI reads too) and character references in the narrative;
    XML tools put an xsi:schemaLocation on the root."""
    r = client.put("/fhir/Observation/example",
                   content=(XML_DATA / "observation-example.xml").read_bytes(), headers=SEND_XML)
    assert r.status_code == 201, r.text
    obs = r.json()
    assert obs["extension"][0]["valueAge"]["value"] == 41
    assert obs["valueQuantity"] == {
        "value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"
    }
    assert "code 'vital-signs'" in obs["text"]["div"]  # &#39; read as the character
    schema = b"""<Patient xmlns="http://hl7.org/fhir"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xsi:schemaLocation="http://hl7.org/fhir ../../schema/fhir-single.xsd">
      <active value="true"/></Patient>"""
    r = client.post("/fhir/Patient", content=schema, headers=SEND_XML)
    assert r.status_code == 201, r.text
    assert r.json()["active"] is True


def test_our_xml_parses_with_fhir_resources(client: TestClient) -> None:
    """An independent XML reader (fhir.resources R4B) reads what we write."""
    for name, model in (("Patient-example.json", Patient), ("Observation-example.json",
                                                              Observation)):  # fmt: skip
        resource = literal_tree(EXAMPLES[name])
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert client.put(url, content=EXAMPLES[name],
                          headers={"Content-Type": "application/fhir+json"}).status_code == 201
        r = client.get(url, params={"_format": "xml"})
        assert r.headers["content-type"] == XML_TYPE
        parsed = model.model_validate_xml(r.content)
        assert parsed.id == resource["id"]
    assert parsed.valueQuantity.value == 185  # type: ignore[union-attr]


def test_create_in_xml_keeps_decimals_and_primitive_extensions(client: TestClient) -> None:
    """xml.html: a primitive's id and extensions sit on its element; JSON puts them in
    `_birthDate`. The decimal keeps its two zeros in both formats."""
    body = b"""<Observation xmlns="http://hl7.org/fhir">
      <status value="final"/>
      <code><text value="weight"/></code>
      <valueQuantity><value value="80.00"/><unit value="kg"/></valueQuantity>
    </Observation>"""
    r = client.post("/fhir/Observation", content=body, headers=SEND_XML)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert b'"value":80.00' in r.content
    location = r.headers["location"].split("/fhir/")[1].rsplit("/_history", 1)[0]
    root = xml_of(client.get(f"/fhir/{location}", headers={"Accept": XML}).content)
    assert values(root, "f:valueQuantity/f:value") == ["80.00"]

    patient = b"""<Patient xmlns="http://hl7.org/fhir"><id value="p1"/>
      <birthDate id="b1" value="1970-03-30">
        <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
          <valueDateTime value="1970-03-30T14:35:45-05:00"/>
        </extension>
      </birthDate>
      <name><given value="A"/><given id="g2"><extension url="http://example.org/x">
        <valueString value="no value"/></extension></given></name>
    </Patient>"""
    r = client.put("/fhir/Patient/p1", content=patient, headers=SEND_XML)
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["birthDate"] == "1970-03-30"
    assert got["_birthDate"] == {"id": "b1", "extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
        "valueDateTime": "1970-03-30T14:35:45-05:00"}]}  # fmt: skip
    assert got["name"][0]["given"] == ["A", None]  # json.html: null keeps the arrays aligned
    assert got["name"][0]["_given"][0] is None and got["name"][0]["_given"][1]["id"] == "g2"
    root = xml_of(client.get("/fhir/Patient/p1", params={"_format": XML}).content)
    assert root.xpath("f:birthDate/@id", namespaces=NS) == ["b1"]
    assert len(root.xpath("f:name/f:given", namespaces=NS)) == 2


def test_accept_chooses_by_quality_and_format_wins(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"})
    r = client.get("/fhir/Patient/p", headers={"Accept": f"application/fhir+json;q=0.5, {XML}"})
    assert r.headers["content-type"] == XML_TYPE
    r = client.get("/fhir/Patient/p", headers={"Accept": f"{XML};q=0.1, application/json"})
    assert r.headers["content-type"].startswith("application/fhir+json")
    r = client.get("/fhir/Patient/p?_format=xml", headers={"Accept": "application/fhir+json"})
    assert r.headers["content-type"] == XML_TYPE
    assert client.get("/fhir/Patient/p?_format=text/xml").headers["content-type"] == XML_TYPE
    r = client.get("/fhir/Patient/p", headers={"Accept": f"{XML}; fhirVersion=3.0"})
    assert r.status_code == 406
    r = client.get("/fhir/Patient/p?_format=xml&_pretty=true")
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Patient')
    assert '\n  <id value="p"/>' in r.text


def test_search_history_and_capabilities_in_xml(client: TestClient) -> None:
    for rid in ("a", "b"):
        client.put(f"/fhir/Patient/{rid}", json={"resourceType": "Patient", "id": rid})
    root = xml_of(client.get("/fhir/Patient", params={"_format": "xml", "_sort": "_id"}).content)
    assert root.tag == "{http://hl7.org/fhir}Bundle"
    assert values(root, "f:type") == ["searchset"] and values(root, "f:total") == ["2"]
    assert values(root, "f:entry/f:resource/f:Patient/f:id") == ["a", "b"]
    assert values(root, "f:entry/f:search/f:mode") == ["match", "match"]
    root = xml_of(client.get("/fhir/Patient/a/_history", headers={"Accept": XML}).content)
    assert values(root, "f:type") == ["history"]
    assert values(root, "f:entry/f:response/f:status") == ["201 Created"]
    root = xml_of(client.get("/fhir/metadata", headers={"Accept": XML}).content)
    assert set(values(root, "f:format")) >= {"application/fhir+xml", "application/fhir+json"}


def test_transaction_in_xml_answers_in_xml(client: TestClient) -> None:
    bundle = b"""<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>
      <entry><fullUrl value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/>
        <resource><Patient><active value="true"/></Patient></resource>
        <request><method value="POST"/><url value="Patient"/></request></entry>
      <entry><resource><Observation><status value="final"/><code><text value="x"/></code>
          <subject><reference value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/></subject>
          <valueQuantity><value value="1.50"/></valueQuantity></Observation></resource>
        <request><method value="POST"/><url value="Observation"/></request></entry>
    </Bundle>"""
    r = client.post("/fhir", content=bundle,
                    headers={**SEND_XML, "Accept": XML, "Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == XML_TYPE
    root = xml_of(r.content)
    assert values(root, "f:type") == ["transaction-response"]
    assert values(root, "f:entry/f:response/f:status") == ["201", "201"]
    patient_id = values(root, "f:entry/f:resource/f:Patient/f:id")[0]
    reference = values(root, "f:entry/f:resource/f:Observation/f:subject/f:reference")
    assert reference == [f"Patient/{patient_id}"]
    assert values(root, "f:entry/f:resource/f:Observation/f:valueQuantity/f:value") == ["1.50"]


def test_errors_are_operation_outcomes_in_xml(client: TestClient) -> None:
    r = client.get("/fhir/Patient/nobody", headers={"Accept": XML})
    assert r.status_code == 404 and r.headers["content-type"] == XML_TYPE
    root = xml_of(r.content)
    assert root.tag == "{http://hl7.org/fhir}OperationOutcome"
    assert values(root, "f:issue/f:code") == ["not-found"]
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient","gender":7}',
                    headers={"Content-Type": "application/fhir+json", "Accept": XML})
    assert r.status_code == 400 and r.headers["content-type"] == XML_TYPE
    assert values(xml_of(r.content), "f:issue/f:expression") == ["Patient.gender"]


@pytest.mark.parametrize(
    ("body", "status", "says", "where"),
    [
        (b"<Patient xmlns='http://hl7.org/fhir'><active value='true'>", 400, "Malformed XML",
         None),
        (b"<Patient><active value='true'/></Patient>", 400, "not in the FHIR namespace", None),
        (b"<Patient xmlns='http://hl7.org/fhir'><colour value='red'/></Patient>", 400,
         "Unknown element 'colour'", "Patient.colour"),
        (b"<Patient xmlns='http://hl7.org/fhir'><active value='yes'/></Patient>", 400,
         "'yes' is not a boolean", "Patient.active"),
        (b"<Patient xmlns='http://hl7.org/fhir'><active value='true'/><active value='false'/>"
         b"</Patient>", 400, "occurs twice", "Patient.active"),
        (b"<Patient xmlns='http://hl7.org/fhir'><gender>male</gender></Patient>", 400,
         "value attribute", "Patient.gender"),
        (b'<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
         b"<Patient xmlns='http://hl7.org/fhir'><id value='&x;'/></Patient>", 400, "", None),
        (b"<Basic xmlns='http://hl7.org/fhir'/>", 400, "", None),  # Basic.code is 1..1
    ],
)
def test_bad_xml_is_400_naming_the_element(
    client: TestClient, body: bytes, status: int, says: str, where: str | None
) -> None:
    r = client.post(f"/fhir/{'Basic' if b'Basic' in body else 'Patient'}", content=body,
                    headers=SEND_XML)  # fmt: skip
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert says in issue["diagnostics"]
    if where is not None:
        assert issue["expression"] == [where]
    assert "root:" not in r.text  # no file content, entity or not


def test_fhirpath_patch_and_validate_in_xml(client: TestClient) -> None:
    client.put("/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"})
    patch = b"""<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>
      <part><name value="type"/><valueCode value="add"/></part>
      <part><name value="path"/><valueString value="Patient"/></part>
      <part><name value="name"/><valueString value="birthDate"/></part>
      <part><name value="value"/><valueDate value="1980-01-01"/></part>
    </parameter></Parameters>"""
    r = client.patch("/fhir/Patient/p", content=patch, headers=SEND_XML)
    assert r.status_code == 200, r.text
    assert r.json()["birthDate"] == "1980-01-01"
    male = b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/></Patient>"
    r = client.post("/fhir/Patient/$validate", headers={**SEND_XML, "Accept": XML}, content=male)
    assert r.status_code == 200 and r.headers["content-type"] == XML_TYPE
    # valid: no error (a warning, dom-6 for the missing narrative, is allowed)
    assert "error" not in values(xml_of(r.content), "f:issue/f:severity")


def test_a_narrative_xml_cannot_carry_is_406(client: TestClient) -> None:
    """A stored narrative that is not well-formed XHTML has no XML form: 406, not a broken
    document (and not a 500)."""
    bad = {"resourceType": "Patient", "id": "n",
           "text": {"status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>open</div>'}}
    if client.put("/fhir/Patient/n", json=bad).status_code >= 400:
        pytest.skip("the validator refuses a narrative that is not well-formed")
    r = client.get("/fhir/Patient/n?_format=xml")
    assert r.status_code == 406
    assert "XHTML" in r.text
