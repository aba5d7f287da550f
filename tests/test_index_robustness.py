"""Indexing is total over whatever validation lets through: never a 500.

The R4 types that fhir.resources R4B lacks (MedicinalProduct*, Evidence*, Substance*...) are
validated for their common elements only, so their own elements reach the index builders in any
JSON shape. Validation decides what is acceptable (201 or 400); a value of the wrong shape must
then simply produce no index row, and what the store binds must be str, int, float or None.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.search.composite import composite_rows
from fhir_server.search.fhirpath import compile_expression
from fhir_server.search.index import BUILDERS, TABLES, index_rows
from fhir_server.search.registry import Registry

SCALARS = (str, int, float, type(None))

#: one resource per R4B-less type, each search parameter of the type given a well-shaped value
BASES: list[dict[str, Any]] = [
    {
        "resourceType": "MedicinalProduct",
        "identifier": [{"system": "urn:mp", "value": "mp1"}],
        "name": [
            {
                "productName": "Aspirin 100 mg",
                "countryLanguage": [
                    {
                        "country": {"coding": [{"system": "urn:iso:std:iso:3166", "code": "NL"}]},
                        "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nl"}]},
                    }
                ],
            }
        ],
    },
    {
        "resourceType": "MedicinalProductAuthorization",
        "identifier": [{"system": "urn:mpa", "value": "a1"}],
        "country": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "NL"}]}],
        "holder": {"reference": "Organization/o1", "identifier": {"system": "urn:o", "value": "o"}},
        "subject": {"reference": "MedicinalProduct/mp1"},
        "status": {"coding": [{"system": "urn:status", "code": "active"}], "text": "Active"},
    },
    {
        "resourceType": "MedicinalProductPharmaceutical",
        "identifier": [{"system": "urn:mpp", "value": "p1", "type": {"coding": [{"code": "x"}]}}],
        "routeOfAdministration": [
            {
                "code": {"coding": [{"system": "urn:route", "code": "oral"}]},
                "targetSpecies": [{"code": {"coding": [{"system": "urn:sp", "code": "dog"}]}}],
            }
        ],
    },
    {
        "resourceType": "MedicinalProductPackaged",
        "identifier": [{"system": "urn:pkg", "value": "k1"}],
        "subject": [{"reference": "MedicinalProduct/mp1"}],
    },
    {
        "resourceType": "MedicinalProductIngredient",
        "role": {"coding": [{"system": "urn:role", "code": "active"}]},
    },
    {
        "resourceType": "SubstanceSpecification",
        "code": [{"code": {"coding": [{"system": "urn:sub", "code": "c1"}]}}],
    },
    {
        "resourceType": "Evidence",
        "url": "http://example.org/Evidence/e1",
        "identifier": [{"system": "urn:ev", "value": "e1"}],
        "version": "1",
        "name": "E1",
        "title": "Evidence one",
        "status": "active",
        "date": "2021-02-03",
        "publisher": "Someone",
        "description": "About something",
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "NL"}]}],
        "topic": [{"coding": [{"system": "urn:topic", "code": "t1", "display": "T"}]}],
        "useContext": [
            {"code": {"code": "focus"}, "valueCodeableConcept": {"coding": [{"code": "x"}]}},
            {
                "code": {"code": "age"},
                "valueQuantity": {"value": 5, "system": "http://unitsofmeasure.org", "code": "a"},
            },
            {"code": {"code": "age"}, "valueRange": {"low": {"value": 1}, "high": {"value": 9}}},
        ],
        "effectivePeriod": {"start": "2020-01-01", "end": "2020-12-31"},
        "relatedArtifact": [{"type": "composed-of", "resource": "Evidence/e2"}],
        "exposureBackground": {"reference": "EvidenceVariable/v1"},
    },
    {
        "resourceType": "RiskEvidenceSynthesis",
        "url": "http://example.org/RiskEvidenceSynthesis/r1",
        "status": "draft",
        "date": "2021",
        "name": "R1",
        "useContext": [{"code": {"code": "age"}, "valueQuantity": {"value": 2, "currency": "EUR"}}],
        "effectivePeriod": {"start": "2020-01-01"},
        "population": {"reference": "EvidenceVariable/v1"},
        "outcome": {"reference": "EvidenceVariable/v2"},
    },
]


def _base(rtype: str) -> dict[str, Any]:
    return copy.deepcopy(next(b for b in BASES if b["resourceType"] == rtype))


def _with(rtype: str, **elements: Any) -> dict[str, Any]:
    return {**_base(rtype), **elements}


#: (case id, resource): each puts a wrong JSON shape where a search parameter reads
WRONG_SHAPES: list[tuple[str, dict[str, Any]]] = [
    # token
    ("token-coding-number", _with("MedicinalProductPharmaceutical", routeOfAdministration=[
        {"code": {"coding": 1.5}}])),
    ("token-coding-string", _with("SubstanceSpecification", code=[{"code": {"coding": "abc"}}])),
    ("token-coding-object", _with("MedicinalProductAuthorization", country=[
        {"coding": {"system": "urn:x", "code": "NL"}}])),
    ("token-coding-code-object", _with("MedicinalProductPharmaceutical", routeOfAdministration=[
        {"code": {"coding": [{"code": {"a": 1}}]}}])),
    ("token-coding-system-object", _with("Evidence", topic=[
        {"coding": [{"system": {"a": 1}, "code": "x"}]}])),
    ("token-coding-display-object", _with("Evidence", topic=[
        {"coding": [{"code": "x", "display": {"a": 1}}], "text": "t"}])),
    ("token-text-list", _with("Evidence", topic=[{"text": [1]}])),
    ("token-identifier-list-of-lists", _with("MedicinalProduct", identifier=[
        [{"system": "urn:mp", "value": "x"}]])),
    ("token-identifier-value-object", _with("MedicinalProduct", identifier=[
        {"system": "urn:mp", "value": {"a": 1}}])),
    ("token-identifier-value-list", _with("MedicinalProductPackaged", identifier=[
        {"system": "urn:pkg", "value": [1]}])),
    ("token-identifier-system-list", _with("MedicinalProductPackaged", identifier=[
        {"system": ["urn:pkg"], "value": "v"}])),
    ("token-identifier-type-coding-number", _with("MedicinalProductPharmaceutical", identifier=[
        {"system": "urn:mpp", "value": "v", "type": {"coding": 3.5}}])),
    ("token-identifier-type-code-list", _with("MedicinalProductPharmaceutical", identifier=[
        {"system": "urn:mpp", "value": "v", "type": {"coding": [{"code": ["x"]}]}}])),
    ("token-code-object", _with("Evidence", status={"a": 1})),
    ("token-code-number", _with("Evidence", version=1.5)),
    ("token-context-type-list", _with("Evidence", useContext=[{"code": [{"code": "x"}]}])),
    # string
    ("string-object", _with("MedicinalProduct", name=[{"productName": {"x": 1}}])),
    ("string-list-of-mixed", _with("Evidence", name=["a", {"b": 1}, [2]])),
    ("string-number", _with("Evidence", title=12)),
    # reference
    ("reference-list", _with("MedicinalProductAuthorization", holder=[
        {"reference": "Organization/1"}])),
    ("reference-reference-list", _with("MedicinalProductAuthorization", holder={
        "reference": ["Organization/1"]})),
    ("reference-identifier-value-object", _with("MedicinalProductAuthorization", holder={
        "identifier": {"system": "urn:o", "value": {"a": 1}}})),
    ("reference-identifier-system-list", _with("MedicinalProductAuthorization", holder={
        "identifier": {"system": [1], "value": "v"}})),
    ("reference-identifier-list", _with("MedicinalProductAuthorization", subject=[
        {"identifier": [{"value": "v"}]}])),
    ("reference-type-object", _with("MedicinalProductAuthorization", holder={
        "reference": "Organization/1", "type": {"a": 1}})),
    ("reference-canonical-object", _with("Evidence", relatedArtifact=[
        {"type": "composed-of", "resource": {"a": 1}}])),
    ("reference-canonical-list", _with("Evidence", relatedArtifact=[
        {"type": "composed-of", "resource": [["Evidence/e2"]]}])),
    # date
    ("date-object", _with("Evidence", date={"a": 1})),
    ("date-list", _with("Evidence", date=["2020"])),
    ("date-period-start-number", _with("Evidence", effectivePeriod={"start": 5})),
    ("date-period-start-list", _with("Evidence", effectivePeriod={"start": ["2020"]})),
    ("date-period-end-object", _with("Evidence", effectivePeriod={"end": {"a": 1}})),
    ("date-period-list", _with("Evidence", effectivePeriod=[{"start": "2020"}])),
    ("date-period-string", _with("Evidence", effectivePeriod="2020")),
    # quantity (and the composite context-type-quantity over it)
    ("quantity-value-string", _with("Evidence", useContext=[
        {"code": {"code": "age"}, "valueQuantity": {"value": "5"}}])),
    ("quantity-code-object", _with("Evidence", useContext=[{"code": {"code": "age"},
        "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": {"a": 1}}}])),
    ("quantity-unit-list", _with("Evidence", useContext=[
        {"code": {"code": "age"}, "valueQuantity": {"value": 1, "unit": [1]}}])),
    ("quantity-system-object", _with("Evidence", useContext=[
        {"code": {"code": "age"}, "valueQuantity": {"value": 1, "system": {"a": 1}}}])),
    ("quantity-currency-list", _with("RiskEvidenceSynthesis", useContext=[
        {"code": {"code": "age"}, "valueQuantity": {"value": 1, "currency": ["EUR"]}}])),
    ("quantity-range-low-number", _with("Evidence", useContext=[
        {"code": {"code": "age"}, "valueRange": {"low": 5, "high": [1]}}])),
    ("quantity-list", _with("Evidence", useContext=[
        {"code": {"code": "age"}, "valueQuantity": [{"value": 1}]}])),
    # uri
    ("uri-object", _with("Evidence", url={"a": 1})),
    ("uri-list-of-lists", _with("RiskEvidenceSynthesis", url=[["http://x"]])),
]


@pytest.mark.parametrize(("case", "resource"), WRONG_SHAPES, ids=[c for c, _ in WRONG_SHAPES])
def test_wrong_json_shape_under_a_search_parameter_is_never_a_server_error(
    client: TestClient, case: str, resource: dict[str, Any]
) -> None:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code in (201, 400), (case, response.status_code, response.text)
    assert response.json()["resourceType"] in (resource["resourceType"], "OperationOutcome")


def test_wrong_shapes_in_r4_types_r4b_lacks_are_refused_by_validation(client: TestClient) -> None:
    """Validation now knows every R4 type from the R4 definitions: the wrong values are named
    (a uri that is an object, an Identifier that is an array), and nothing is stored."""
    resource = _with(
        "Evidence",
        topic=[
            {"coding": [{"system": {"a": 1}, "code": "bad"}, {"system": "urn:t", "code": "ok"}]}
        ],
        identifier=[[{"system": "urn:ev", "value": "nested"}], {"system": "urn:ev", "value": "e9"}],
    )
    r = client.post("/fhir/Evidence", json=resource)
    assert r.status_code == 400, r.text
    named = {e for i in r.json()["issue"] for e in i["expression"]}
    assert {"Evidence.identifier[0]", "Evidence.topic[0].coding[0].system"} <= named
    assert client.get("/fhir/Evidence?identifier=urn:ev|e9").json().get("entry", []) == []


# ------------------------------------------------------------------------------ builders


#: JSON values of every shape, for the builders and the fuzzer
JUNK: list[Any] = [
    0, -1, 1.5, 10**30, True, False, None, "", "x", "2020-13-45", "Patient/1", "#c1",
    {}, {"a": 1}, [], [1], [[1]], [{"a": []}], {"coding": 3}, {"coding": [[1]]},
    {"value": {"a": 1}, "system": {"b": 2}}, {"reference": ["Patient/1"]},
    {"start": 5, "end": ["2020"]}, {"event": 7, "repeat": {"boundsPeriod": 1}},
    {"low": 5, "high": {"value": "9"}}, {"family": {"a": 1}, "given": "x"},
    {"line": 3, "city": ["c"]}, {"identifier": [[1]], "resourceType": {"a": 1}, "id": [1]},
    {"system": "phone", "value": {"a": 1}}, {"value": 1, "code": {"a": 1}, "unit": [1]},
    {"value": 1, "currency": {"a": 1}}, {"type": {"coding": 1, "text": [1]}, "value": "v"},
]  # fmt: skip
#: the FHIR types the extractors attach to values (None: unknown, from fhirpathpy)
TYPE_HINTS = [
    None, "CodeableConcept", "Coding", "Identifier", "ContactPoint", "Reference", "HumanName",
    "Address", "Period", "Timing", "Quantity", "Money", "Range", "string", "canonical",
]  # fmt: skip


def _cells_are_scalars(tables: dict[str, list[tuple[Any, ...]]]) -> None:
    for table, rows in tables.items():
        for row in rows:
            bad = [c for c in row if type(c) not in SCALARS]
            assert not bad, (table, row)


@pytest.mark.parametrize("table", sorted(BUILDERS))
def test_every_builder_is_total_and_yields_only_bindable_cells(table: str) -> None:
    for value in JUNK:
        for hint in TYPE_HINTS:
            tables: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
            BUILDERS[table]("p", [(value, hint)], tables)
            _cells_are_scalars(tables)


@pytest.mark.parametrize(
    ("expression", "resource"),
    [
        ("Patient.extension('http://x')", {"resourceType": "Patient", "extension": 5}),
        (
            "Bundle.entry[0].resource as Composition",
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": {"a": 1}}}]},
        ),
    ],
)
def test_compiled_extractors_skip_wrong_shapes(expression: str, resource: dict[str, Any]) -> None:
    """The native ops (not only the fhirpathpy fallback, which is guarded) are total too."""
    extractor = compile_expression(expression, resource["resourceType"])
    assert extractor.native_parts == [expression]
    assert extractor(resource) == []


# ------------------------------------------------------------------------------ fuzzing


def _locations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a resource a value can be put (not resourceType)."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if path == () and key == "resourceType":
            continue
        yield (*path, key)
        if isinstance(value, dict | list):
            yield from _locations(value, (*path, key))


def _junk(rng: random.Random, old: Any) -> Any:
    """A wrong shape for `old`: a random JSON value, or the old value wrapped or unwrapped."""
    roll = rng.random()
    if roll < 0.15:
        return [old]
    if roll < 0.25:
        return [[old]]
    if roll < 0.35:
        return {"value": old}
    if roll < 0.45 and isinstance(old, list) and old:
        return old[0]
    return copy.deepcopy(rng.choice(JUNK))


def _mutate(rng: random.Random, resource: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(resource)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_locations(doc)))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = _junk(rng, parent[path[-1]])
    return doc


def test_random_wrong_shapes_in_r4b_less_types_never_give_a_server_error(
    client: TestClient,
) -> None:
    rng = random.Random(20240917)
    registry: Registry = client.app.state.services.registry  # type: ignore[attr-defined]
    for n in range(200):
        resource = _mutate(rng, rng.choice(BASES))
        rtype = resource["resourceType"]
        _cells_are_scalars(index_rows(rtype, resource, registry))
        _cells_are_scalars(composite_rows(rtype, resource, registry))
        response = client.post(f"/fhir/{rtype}", json=resource)
        assert response.status_code < 500, (n, resource, response.text)
