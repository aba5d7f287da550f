"""Base R4 validation on every write (validation.html): the R4 examples pass, and mutated copies
(a code out of its required value set, a required element removed, an invariant broken, unsafe
narrative, an unknown modifier extension) are refused with the issue and the element named, on
POST, in transactions and batches, and by $validate.

Expectations come from the R4 specification: the element definitions (cardinality, binding
strength and value set) and the invariants' own text, cited next to each case.
"""

from __future__ import annotations

import copy
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts

Json = dict[str, Any]
DATA = Path(__file__).parent / "data"
SINGLES = DATA / "r4-examples"
#: the rest of the R4 examples, where a branch vendors them as one archive
ARCHIVE = DATA / "r4-examples-more.tar.xz"
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'

#: R4 examples that break R4's own rules, with the element the HL7 validator names too
KNOWN_INVALID = {
    # Basic.modifierExtension: example.org urls nobody defines (extensibility.html: an
    # unknown modifier extension makes the resource unsafe to process)
    "Basic-referral.json": "Basic.modifierExtension[0]",
    # DeviceMetric.parent is Reference(Device), the example points at a DeviceDefinition
    "DeviceMetric-example.json": "DeviceMetric.parent",
    # DeviceUseStatement.reasonReference excludes Procedure
    "DeviceUseStatement-example.json": "DeviceUseStatement.reasonReference[0]",
    # MedicationRequest.dispenseRequest.performer is Reference(Organization)
    "MedicationRequest-medrx0301.json": "MedicationRequest.dispenseRequest.performer",
    # Observation.performer excludes Encounter
    "Observation-clinical-gender.json": "Observation.performer[0]",
    # Questionnaire.item.linkId is 1..1
    "Questionnaire-qs1.json": "Questionnaire.item[0].item[0].linkId",
    # ImplementationGuide.name and .status are 1..1
    "ImplementationGuide-fhir.json": "ImplementationGuide.name",
}


def _examples() -> dict[str, bytes]:
    found = {p.name: p.read_bytes() for p in sorted(SINGLES.glob("*.json"))}
    if ARCHIVE.exists():
        with tarfile.open(ARCHIVE, "r:xz") as tar:
            for m in tar.getmembers():
                fh = tar.extractfile(m)
                if fh is not None:
                    found[Path(m.name).name] = fh.read()
    return found


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    """One server for the module: the cases write nothing that another would read."""
    services = make_services(tmp_path_factory.mktemp("validation") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c


def issues(response: Any) -> list[tuple[str, str, str]]:
    """(severity, code, expression) of every issue of the OperationOutcome answered."""
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [(i["severity"], i["code"], e)
            for i in outcome["issue"] for e in i.get("expression", [""])]  # fmt: skip


def errors(response: Any) -> list[tuple[str, str]]:
    return [(code, where) for severity, code, where in issues(response) if severity == "error"]


def validate(client: TestClient, resource: Json, profile: str | None = None) -> Any:
    params = {"profile": profile} if profile else None
    r = client.post(f"/fhir/{resource['resourceType']}/$validate", json=resource, params=params)
    assert r.status_code == 200, r.text
    return r


def example(name: str) -> Json:
    return json.loads(EXAMPLES[name])  # type: ignore[no-any-return]


# -- the R4 examples --------------------------------------------------------------------------


def test_the_examples_are_there() -> None:
    assert len(EXAMPLES) >= 370


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - set(KNOWN_INVALID)))
def test_r4_example_is_valid(server: TestClient, name: str) -> None:
    r = validate(server, example(name))
    assert errors(r) == [], r.text[:2000]


@pytest.mark.parametrize("name", sorted(set(KNOWN_INVALID) & set(EXAMPLES)))
def test_r4_example_breaking_r4_rules_is_refused(server: TestClient, name: str) -> None:
    resource = example(name)
    r = server.post(f"/fhir/{resource['resourceType']}", content=EXAMPLES[name],
                    headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert KNOWN_INVALID[name] in [where for _, where in errors(r)]


# -- mutated copies ---------------------------------------------------------------------------

Mutation = Callable[[Json], None]


def _set(path: list[str | int], value: Any) -> Mutation:
    def run(r: Json) -> None:
        node: Any = r
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return run


def _drop(path: list[str | int]) -> Mutation:
    def run(r: Json) -> None:
        node: Any = r
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return run


def _add(key: str, value: Any) -> Mutation:
    return lambda r: r.update({key: value})


def _keep_only(path: list[str | int], keys: set[str]) -> Mutation:
    def run(r: Json) -> None:
        node: Any = r
        for step in path:
            node = node[step]
        for k in list(node):
            if k not in keys:
                del node[k]

    return run


def _both(*mutations: Mutation) -> Mutation:
    def run(r: Json) -> None:
        for m in mutations:
            m(r)

    return run


EXT_QTY = {"url": "http://example.org/birth-weight",
           "valueQuantity": {"value": 3, "comparator": "<<"}}  # fmt: skip

#: (example, mutation, code, expression): the case's name says which rule of R4 it breaks
MUTATIONS: dict[str, tuple[str, Mutation, str, str]] = {
    # Patient.gender: required binding to administrative-gender (male|female|other|unknown)
    "gender-not-in-required-valueset": (
        "Patient-example.json", _set(["gender"], "robot"), "code-invalid", "Patient.gender"),
    "nested-gender-not-in-required-valueset": (
        "Patient-example.json", _set(["contact", 0, "gender"], "robot"), "code-invalid",
        "Patient.contact[0].gender"),
    # Coverage.status (required, fm-status) inside a contained resource
    "contained-status-not-in-required-valueset": (
        "CoverageEligibilityResponse-E2502.json", _set(["contained", 0, "status"], "bogus"),
        "code-invalid", "CoverageEligibilityResponse.contained[0].status"),
    # Quantity.comparator (required, quantity-comparator: < <= >= >) inside an extension
    "extension-value-not-in-required-valueset": (
        "Patient-example.json", _add("extension", [EXT_QTY]), "code-invalid",
        "Patient.extension[0].valueQuantity.comparator"),
    # Observation.code (a CodeableConcept) with a coding whose system+code is not in a required
    # value set: Observation.status bound to observation-status
    "observation-status-not-in-valueset": (
        "Observation-example.json", _set(["status"], "done"), "code-invalid", "Observation.status"),
    # Observation.status and .code are 1..1
    "required-element-removed": (
        "Observation-example.json", _drop(["status"]), "required", "Observation.status"),
    "required-code-removed": (
        "Observation-example.json", _drop(["code"]), "required", "Observation.code"),
    # Bundle.entry.request.method is 1..1 in a transaction's entries
    "nested-required-element-removed": (
        "Bundle-bundle-request-medsallergies.json", _drop(["entry", 0, "request", "method"]),
        "required", "Bundle.entry[0].request.method"),
    # pat-1: a contact has a name, telecom, address or organization
    "pat-1-contact-without-details": (
        "Patient-example.json", _keep_only(["contact", 0], {"relationship", "gender"}),
        "invariant", "Patient.contact[0]"),
    # obs-6: dataAbsentReason only when there is no value[x]
    "obs-6-value-and-data-absent-reason": (
        "Observation-example.json", _add("dataAbsentReason", {"text": "not measured"}),
        "invariant", "Observation"),
    # obs-7: a component must not repeat Observation.code when there is a value[x]
    "obs-7-component-repeats-the-code": (
        "Observation-example.json",
        lambda r: r.update({"component": [{"code": r["code"], "valueString": "x"}]}),
        "invariant", "Observation"),
    # per-1: a period's start is not after its end
    "per-1-period-ends-before-it-starts": (
        "Encounter-example.json", _set(["period"], {"start": "2020-01-02", "end": "2020-01-01"}),
        "invariant", "Encounter.period"),
    # dom-2: a contained resource contains nothing
    "dom-2-nested-contained": (
        "CarePlan-example.json",
        lambda r: r["contained"][0].update({"contained": [{"resourceType": "Basic", "id": "b",
                                                           "code": {"text": "x"}}]}),
        "invariant", "CarePlan"),
    # dom-3: a contained resource is referred to from the container
    "dom-3-contained-not-referenced": (
        "Patient-example.json",
        _add("contained", [{"resourceType": "Organization", "id": "lost", "name": "x"}]),
        "invariant", "Patient"),
    # dom-4: a contained resource has no meta.versionId / lastUpdated
    "dom-4-contained-with-a-version": (
        "CarePlan-example.json", lambda r: r["contained"][0].update({"meta": {"versionId": "1"}}),
        "invariant", "CarePlan"),
    # dom-5: a contained resource has no security label
    "dom-5-contained-with-a-security-label": (
        "CarePlan-example.json",
        lambda r: r["contained"][0].update({"meta": {"security": [{"code": "R"}]}}),
        "invariant", "CarePlan"),
    # ref-1: a local reference names a contained resource
    "ref-1-local-reference-to-nothing": (
        "Observation-example.json", _set(["subject"], {"reference": "#nothing"}), "invariant",
        "Observation.subject"),
    # ele-1: every element has a value or children
    "ele-1-empty-object": (
        "Patient-example.json", _set(["maritalStatus"], {}), "invariant", "Patient.maritalStatus"),
    # ext-1: an extension has a value or extensions, not both
    "ext-1-value-and-extensions": (
        "Patient-example.json",
        _add("extension", [{"url": "http://example.org/x", "valueString": "a",
                            "extension": [{"url": "y", "valueString": "b"}]}]),
        "invariant", "Patient.extension[0]"),
    # txt-1: no script, no event attribute, no javascript: link in narrative
    "txt-1-script": (
        "Patient-example.json",
        _set(["text", "div"], XHTML.format("<p>hi</p><script>alert(1)</script>")),
        "value", "Patient.text.div"),
    "txt-1-onclick": (
        "Patient-example.json", _set(["text", "div"], XHTML.format('<p onclick="x()">hi</p>')),
        "value", "Patient.text.div"),
    "txt-1-javascript-link": (
        "Patient-example.json",
        _set(["text", "div"], XHTML.format('<a href="javascript:alert(1)">hi</a>')),
        "value", "Patient.text.div"),
    "txt-1-in-contained-narrative": (
        "CarePlan-example.json",
        lambda r: r["contained"][0].update({"text": {"status": "generated",
                                                     "div": XHTML.format("<iframe/>x")}}),
        "value", "CarePlan.contained[0].text.div"),
    # a modifier extension nobody defines: the resource cannot be safely processed
    "unknown-modifier-extension": (
        "Patient-example.json",
        _add("modifierExtension", [{"url": "http://example.org/do-not-resuscitate",
                                    "valueBoolean": True}]),
        "extension", "Patient.modifierExtension[0]"),
    "unknown-modifier-extension-in-a-backbone": (
        "Patient-example.json",
        lambda r: r["contact"][0].update({"modifierExtension": [
            {"url": "http://example.org/not-really", "valueBoolean": True}]}),
        "extension", "Patient.contact[0].modifierExtension[0]"),
    # R4's patient-birthPlace is not a modifier extension
    "known-extension-used-as-a-modifier": (
        "Patient-example.json",
        _add("modifierExtension", [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                    "patient-birthPlace", "valueAddress": {"city": "x"}}]),
        "extension", "Patient.modifierExtension[0]"),
    # one value[x] at most
    "two-choices-of-one-element": (
        "Observation-example.json", _add("valueString", "x"), "structure", "Observation"),
    # Observation.subject: Reference(Patient | Group | Device | Location)
    "reference-to-a-type-not-allowed": (
        "Observation-example.json", _set(["subject"], {"reference": "Medication/m1"}), "structure",
        "Observation.subject"),
    # date: a day of the calendar
    "date-that-does-not-exist": (
        "Patient-example.json", _set(["birthDate"], "1974-02-30"), "value", "Patient.birthDate"),
    "unknown-element": (
        "Patient-example.json", _add("colour", "blue"), "structure", "Patient.colour"),
    "array-where-one-value": (
        "Patient-example.json", _set(["gender"], ["male"]), "structure", "Patient.gender"),
    "integer-out-of-range": (
        "Patient-example.json", _set(["multipleBirthInteger"], 2**31), "value",
        "Patient.multipleBirthInteger"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutated_example_is_refused_naming_the_element(server: TestClient, case: str) -> None:
    name, mutate, code, expression = MUTATIONS[case]
    resource = copy.deepcopy(example(name))
    assert errors(validate(server, resource)) == []  # the example itself is valid
    mutate(resource)
    resource.pop("id", None)
    r = server.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 400, r.text
    assert (code, expression) in errors(r), r.text
    assert (code, expression) in errors(validate(server, resource))


# -- every write path --------------------------------------------------------------------------

ROBOT = {"resourceType": "Patient", "gender": "robot"}
ROBOT_ISSUE = ("code-invalid", "Patient.gender")


def test_robot_gender_is_400_on_post_and_put(server: TestClient) -> None:
    r = server.post("/fhir/Patient", json=ROBOT)
    assert r.status_code == 400 and ROBOT_ISSUE in errors(r)
    r = server.put("/fhir/Patient/robot", json={**ROBOT, "id": "robot"})
    assert r.status_code == 400 and ROBOT_ISSUE in errors(r)
    assert server.get("/fhir/Patient/robot").status_code == 404


def test_robot_gender_fails_the_whole_transaction(server: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male", "name": [{"family": "Ok"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": ROBOT, "request": {"method": "POST", "url": "Patient"}},
    ]}  # fmt: skip
    r = server.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text
    assert ("code-invalid", "Bundle.entry[1].resource.gender") in errors(r), r.text
    assert server.get("/fhir/Patient", params={"family": "Ok"}).json()["total"] == 0


def test_robot_gender_fails_its_batch_entry_only(server: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male", "name": [{"family": "Fine"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": ROBOT, "request": {"method": "POST", "url": "Patient"}},
    ]}  # fmt: skip
    r = server.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("400")
    outcome = second["response"]["outcome"]
    expected = ("code-invalid", ["Bundle.entry[1].resource.gender"])
    assert expected in [(i["code"], i["expression"]) for i in outcome["issue"]]


def test_robot_gender_is_invalid_for_validate(server: TestClient) -> None:
    assert ROBOT_ISSUE in errors(validate(server, ROBOT))
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": ROBOT}]}
    r = server.post("/fhir/Patient/$validate", json=wrapped)
    assert ROBOT_ISSUE in errors(r)


def test_patch_to_an_invalid_code_is_refused(server: TestClient) -> None:
    created = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"})
    assert created.status_code == 201
    pid = created.json()["id"]
    patch = [{"op": "replace", "path": "/gender", "value": "robot"}]
    r = server.patch(f"/fhir/Patient/{pid}", json=patch,
                     headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    assert r.status_code == 400 and ROBOT_ISSUE in errors(r)
    assert server.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


# -- what only $validate says ------------------------------------------------------------------


def test_preferred_and_extensible_bindings_warn_in_validate_only(server: TestClient) -> None:
    # Patient.language: preferred binding to languages (an enumerated list: no 'xx');
    # Observation.category: extensible binding to observation-category
    patient = {"resourceType": "Patient", "language": "xx",
               "text": {"status": "generated", "div": XHTML.format("x")}}  # fmt: skip
    assert server.post("/fhir/Patient", json=patient).status_code == 201
    r = validate(server, patient)
    assert ("warning", "code-invalid", "Patient.language") in issues(r)
    assert errors(r) == []
    observation = example("Observation-example.json")
    observation["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "observation-category", "code": "gossip"}]}]
    r = validate(server, observation)
    assert ("warning", "code-invalid", "Observation.category[0]") in issues(r)
    assert errors(r) == []


def test_warning_invariants_warn_in_validate_only(server: TestClient) -> None:
    # dom-6 (a resource should have a narrative) is a warning: written, reported by $validate
    patient = {"resourceType": "Patient", "name": [{"family": "Narrativeless"}]}
    assert server.post("/fhir/Patient", json=patient).status_code == 201
    assert ("warning", "invariant", "Patient") in issues(validate(server, patient))


def test_validate_against_an_r4_profile(server: TestClient) -> None:
    vitals = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    heart = example("Observation-heart-rate.json")  # claims vitalsigns and heartrate
    assert errors(validate(server, heart, vitals)) == []
    # vitalsigns: category 1..* with a vital-signs coding (slice VSCat)
    other = copy.deepcopy(heart)
    other["category"] = [{"text": "not vital"}]
    r = validate(server, other, vitals)
    assert any(code == "required" and where.startswith("Observation.category")
               for code, where in errors(r)), r.text  # fmt: skip
    # and a profile nobody has
    r = validate(server, heart, "http://example.org/StructureDefinition/none")
    assert ("not-found", "profile") in errors(r)


def test_validate_against_our_profile_by_parameter(server: TestClient) -> None:
    profile = "https://yilian.health/fhir/StructureDefinition/yl-referral-task"
    task = {"resourceType": "Task", "status": "draft", "intent": "order"}
    assert errors(validate(server, task)) == []
    r = validate(server, task, profile)
    assert any(code == "required" for code, _ in errors(r)), r.text
    wrapped = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": task}, {"name": "profile", "valueUri": profile}]}
    r = server.post("/fhir/Task/$validate", json=wrapped)
    assert any(code == "required" for code, _ in errors(r)), r.text
