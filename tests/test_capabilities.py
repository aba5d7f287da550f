"""The CapabilityStatement (/metadata) is valid R4 as independent models read it
(capabilitystatement.html), every operation it lists names a resolvable OperationDefinition
that declares what the operation reads and answers (operationdefinition.html), and what it
claims matches the server's settings."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import seed
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement as R4BCapabilityStatement
from fhirclient import client as smart_client
from fhirclient.models import capabilitystatement as r4_capability
from fhirclient.models import operationdefinition as r4_operation
from fhirclient.models import patient as r4_patient
from test_slip_stats_demo import fixture_resources

from fhir_server.operations.registry import Call, Operations, Outcome

OURS = "https://yilian.health/fhir/OperationDefinition/"
ALLOWED_TYPE = "http://hl7.org/fhir/StructureDefinition/operationdefinition-allowed-type"


def metadata(client: TestClient) -> dict[str, Any]:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def listed_operations(statement: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(resource type or None for system level, operation entry) for every listed operation."""
    rest = statement["rest"][0]
    out: list[tuple[str | None, dict[str, Any]]] = [(None, op) for op in rest.get("operation", [])]
    for resource in rest["resource"]:
        out += [(resource["type"], op) for op in resource.get("operation", [])]
    return out


# ----------------------------------------------------------------------------- R4 validity


def test_every_listed_operation_has_a_definition(client: TestClient) -> None:
    """rest.resource.operation.definition and rest.operation.definition are 1..1 in R4."""
    listed = listed_operations(metadata(client))
    names = {op["name"] for _, op in listed}
    assert {"referral-slip", "referral-stats", "start-treatment", "enter-in-error"} <= names
    missing = [(rtype, op["name"]) for rtype, op in listed if not op.get("definition")]
    assert missing == []


def test_our_operation_definitions_are_served_and_match_the_operation(client: TestClient) -> None:
    """Each canonical of ours resolves on this server to one OperationDefinition whose code is
    the operation's name and whose resource lists the type it is offered on."""
    for rtype, op in listed_operations(metadata(client)):
        url = op["definition"]
        if not url.startswith(OURS):  # R4's own, or the Bulk Data Access IG's ($export)
            assert url.startswith(("http://hl7.org/fhir/OperationDefinition/",
                                   "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/")), url
            continue
        found = client.get("/fhir/OperationDefinition", params={"url": url}).json()
        entries = [e["resource"] for e in found.get("entry", [])]
        assert len(entries) == 1, url
        definition = entries[0]
        assert definition["code"] == op["name"], url
        if rtype is None:  # rest.operation: a system-level operation
            assert definition["system"] is True, url
        else:
            assert rtype in definition["resource"], url


def test_capability_statement_is_valid_for_the_smart_on_fhir_r4_models(client: TestClient) -> None:
    """fhirclient (SMART on FHIR's Python client) parses strictly: a missing 1..1 element or an
    unknown element raises."""
    statement = metadata(client)
    parsed = r4_capability.CapabilityStatement(statement, strict=True)
    assert parsed.fhirVersion == "4.0.1"
    assert parsed.rest[0].mode == "server"


def test_capability_statement_is_valid_for_the_fhir_resources_r4b_model(client: TestClient) -> None:
    statement = metadata(client)
    parsed = R4BCapabilityStatement.model_validate(statement)
    assert parsed.rest is not None and parsed.rest[0].resource


def test_fhirclient_prepares_and_reads_a_patient_over_real_http(live_server: str) -> None:
    """The issue: "Python fhirclient cannot even connect (FHIRClient.prepare() fails validating
    it)". prepare() fetches /metadata and parses it strictly."""
    import httpx

    created = httpx.post(
        f"{live_server}/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Zhang", "given": ["Wei"]}]},
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    fhir = smart_client.FHIRClient(settings={"app_id": "x", "api_base": live_server})
    fhir.prepare()  # fetches /metadata and parses it with the strict R4 models (raised before)
    assert fhir.server.capabilityStatement.fhirVersion == "4.0.1"
    # the server advertises SMART (rest.security oauth-uris), so the client knows where to
    # authorize; with `auth` off (this test harness) it may still read without a token
    assert fhir.server.auth is not None
    assert fhir.server.auth._authorize_uri.endswith("/auth/authorize")
    patient = r4_patient.Patient.read(pid, fhir.server)
    assert patient.id == pid
    assert patient.name[0].family == "Zhang"


def test_served_operation_definitions_are_valid_for_the_smart_on_fhir_r4_models(
    client: TestClient,
) -> None:
    """What a client resolves `definition` to parses strictly as an R4 OperationDefinition."""
    found = client.get("/fhir/OperationDefinition", params={"_count": "100"}).json()
    definitions = [e["resource"] for e in found["entry"]]
    assert len(definitions) == len({d["url"] for d in definitions}) >= 15
    for definition in definitions:
        parsed = r4_operation.OperationDefinition(definition, strict=True)
        assert parsed.parameter, definition["url"]


# ----------------------------------------------------------------------------- start-up


def _handler(call: Call) -> Outcome:
    return Outcome()


@pytest.mark.parametrize("definition", [None, "", "Task-x"])
def test_registering_an_operation_without_a_definition_fails_at_start_up(
    definition: Any,
) -> None:
    """A feature's operations are registered when the server starts; one that names no
    OperationDefinition (an absolute canonical URL) could only be listed invalidly."""
    table = Operations()
    with pytest.raises(ValueError, match=r"\$x .*OperationDefinition"):
        table.operation("$x", "instance", types=("Task",), definition=definition)(_handler)
    assert list(table) == []


# ----------------------------------------------------------------------------- settings


def test_conditional_delete_is_single_by_default(client: TestClient) -> None:
    resources = metadata(client)["rest"][0]["resource"]
    assert {r["conditionalDelete"] for r in resources} == {"single"}


def test_conditional_delete_is_multiple_when_multiple_deletes_are_allowed(
    client_with: Any,
) -> None:
    """conditional-delete-status: `multiple` when several matches may be deleted at once."""
    client = client_with(allow_multiple_delete=True)
    resources = metadata(client)["rest"][0]["resource"]
    assert {r["conditionalDelete"] for r in resources} == {"multiple"}
    for pid in ("a", "b"):
        body = {"resourceType": "Patient", "id": pid, "gender": "other"}
        assert client.put(f"/fhir/Patient/{pid}", json=body).status_code == 201
    assert client.delete("/fhir/Patient?gender=other").status_code in (200, 204)
    assert client.get("/fhir/Patient/a").status_code == 410


# ----------------------------------------------------------------------------- definitions


def _types(declared: dict[str, Any]) -> set[str]:
    allowed = {e["valueUri"] for e in declared.get("extension", []) if e["url"] == ALLOWED_TYPE}
    return allowed or ({declared["type"]} if "type" in declared else set())


def _problems(given: list[dict[str, Any]], declared: list[dict[str, Any]], at: str) -> list[str]:
    """Where `given` (Parameters.parameter or .part) departs from the declared parameters:
    unknown names, counts outside min..max, values of another type, parts not as declared."""
    out = []
    by_name = {d["name"]: d for d in declared}
    for p in given:
        if p["name"] not in by_name:
            out.append(f"{at}: undeclared {p['name']}")
    for name, d in by_name.items():
        found = [p for p in given if p["name"] == name]
        high = len(found) + 1 if d["max"] == "*" else int(d["max"])
        if not d["min"] <= len(found) <= high:
            out.append(f"{at}.{name}: {len(found)} given, declared {d['min']}..{d['max']}")
        for p in found:
            if "part" in d:
                out += _problems(p.get("part", []), d["part"], f"{at}.{name}")
                continue
            value = next(k[5:] for k in p if k.startswith("value"))
            if value[0].lower() + value[1:] not in {t[0].lower() + t[1:] for t in _types(d)}:
                out.append(f"{at}.{name}: value{value}, declared {sorted(_types(d))}")
    return out


def _definition(client: TestClient, rid: str, use: str) -> dict[str, dict[str, Any]]:
    """The `use` parameters (in | out) of our OperationDefinition `rid`, by name."""
    found = client.get("/fhir/OperationDefinition", params={"url": OURS + rid}).json()
    parameters = found["entry"][0]["resource"]["parameter"]
    return {p["name"]: p for p in parameters if p["use"] == use}


@pytest.mark.parametrize(
    "query",
    [
        "periodStart=2026-03-01&periodEnd=2026-03-31",
        "periodStart=2026-03-01T00:00:00%2B08:00&organization=org-a&groupBy=target",
        "groupBy=month",
        "",
    ],
)
def test_referral_stats_answers_the_parameters_its_definition_declares(
    client: TestClient, query: str
) -> None:
    """operationdefinition.html: the output Parameters holds the declared `out` parameters."""
    seed(client, fixture_resources())
    r = client.get(f"/fhir/ServiceRequest/$referral-stats?{query}")
    assert r.status_code == 200, r.text
    declared = _definition(client, "ServiceRequest-referral-stats", "out")
    assert _problems(r.json()["parameter"], list(declared.values()), "Parameters") == []


def test_referral_stats_definition_declares_the_inputs_it_reads(client: TestClient) -> None:
    declared = _definition(client, "ServiceRequest-referral-stats", "in")
    assert set(declared) == {"periodStart", "periodEnd", "organization", "groupBy"}
    assert declared["groupBy"]["max"] == "1"
    seed(client, fixture_resources())
    for value in ("source", "target", "type", "month"):
        assert value in declared["groupBy"]["documentation"]
        r = client.get(f"/fhir/ServiceRequest/$referral-stats?groupBy={value}")
        assert r.status_code == 200, r.text


def test_referral_slip_definition_declares_the_format_it_reads(client: TestClient) -> None:
    declared = _definition(client, "ServiceRequest-referral-slip", "in")
    assert set(declared) == {"format"}
    seed(client, fixture_resources())
    default = client.get("/fhir/ServiceRequest/sr-1/$referral-slip")
    assert default.headers["content-type"].startswith("text/html")
    assert "html (default)" in declared["format"]["documentation"]
