"""Conformance tests for fhir_server.model.json_patch and .fhirpath_patch against HL7's
fhir-test-cases (r4/patch).

``json-patch-tests.json`` is vendored unchanged; ``fhir-patch-tests.json`` is generated from
``fhir-patch-tests.xml`` by ``scripts/convert_fhirpath_patch_tests.py``. Results are compared as
whole JSON documents (dict equality, so key order is irrelevant); no ``meta``/``text``
normalisation is needed because the cases never touch ``meta`` and the one narrative case
("Full Resource") round-trips the XHTML string exactly.

The FHIRPath cases' ``mode`` (both/forwards) only matters to diff *generators* (can the diff be
re-derived from input and output?); every case is applicable to applying a patch, so none is
skipped.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.model.fhirpath_patch import apply_fhirpath_patch
from fhir_server.model.json_patch import apply_json_patch
from fhir_server.model.patch_error import PatchError

DATA = Path(__file__).parent / "data" / "patch"
JSON_CASES: list[dict[str, Any]] = json.loads((DATA / "json-patch-tests.json").read_text("utf-8"))
FHIRPATH_CASES: list[dict[str, Any]] = json.loads(
    (DATA / "fhir-patch-tests.json").read_text("utf-8")
)


def _case_id(case: dict[str, Any]) -> str:
    return str(case.get("comment") or case.get("name"))


@pytest.mark.parametrize("case", JSON_CASES, ids=_case_id)
def test_json_patch_cases(case: dict[str, Any]) -> None:
    if case.get("disabled"):
        pytest.skip("marked disabled in the upstream test file")
    before = copy.deepcopy(case["doc"])
    if "error" in case:
        with pytest.raises(PatchError):
            apply_json_patch(case["doc"], case["patch"])
    else:
        assert apply_json_patch(case["doc"], case["patch"]) == case["expected"]
    assert case["doc"] == before, "input must not be mutated"


@pytest.mark.parametrize("case", FHIRPATH_CASES, ids=_case_id)
def test_fhirpath_patch_cases(case: dict[str, Any]) -> None:
    before = copy.deepcopy(case["input"])
    if "error" in case:
        with pytest.raises(PatchError):
            apply_fhirpath_patch(case["input"], case["diff"])
    else:
        assert apply_fhirpath_patch(case["input"], case["diff"]) == case["output"]
    assert case["input"] == before, "input must not be mutated"


# -- extra cases beyond the HL7 suites ----------------------------------------------------------


def _op(type_: str, path: str, **parts: Any) -> dict[str, Any]:
    part: list[dict[str, Any]] = [
        {"name": "type", "valueCode": type_},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name in ("index", "source", "destination"):
            part.append({"name": name, "valueInteger": value})
        elif name == "name":
            part.append({"name": name, "valueString": value})
        else:
            part.append({"name": name, **value})
    return {"name": "operation", "part": part}


def _params(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "deceasedBoolean": False,
    "extension": [
        {"url": "http://e/a", "valueString": "a"},
        {"url": "http://e/b", "valueString": "b"},
    ],
    "identifier": [
        {"use": "official", "value": "1"},
        {"use": "usual", "value": "2"},
    ],
    "name": [{"given": ["Ann", "Bea"], "_given": [None, {"id": "g2"}]}],
}


def test_fhirpath_delete_no_match_is_noop() -> None:
    out = apply_fhirpath_patch(PATIENT, _params(_op("delete", "Patient.birthDate")))
    assert out == PATIENT


def test_fhirpath_delete_multiple_is_error() -> None:
    with pytest.raises(PatchError):
        apply_fhirpath_patch(PATIENT, _params(_op("delete", "Patient.identifier")))


def test_fhirpath_replace_where_filter() -> None:
    op = _op("replace", "Patient.identifier.where(use = 'usual').value", value={"valueString": "9"})
    out = apply_fhirpath_patch(PATIENT, _params(op))
    assert out["identifier"][1] == {"use": "usual", "value": "9"}
    assert PATIENT["identifier"][1]["value"] == "2"


def test_fhirpath_extension_function_and_first() -> None:
    op1 = _op("delete", "Patient.extension('http://e/b')")
    op2 = _op("replace", "Patient.extension.first().value", value={"valueString": "z"})
    out = apply_fhirpath_patch(PATIENT, _params(op1, op2))
    assert out["extension"] == [{"url": "http://e/a", "valueString": "z"}]


def test_fhirpath_choice_type_replace_changes_type() -> None:
    op = _op("replace", "Patient.deceased", value={"valueDateTime": "2020-01-01"})
    out = apply_fhirpath_patch(PATIENT, _params(op))
    assert out["deceasedDateTime"] == "2020-01-01"
    assert "deceasedBoolean" not in out


def test_fhirpath_primitive_list_keeps_extensions_aligned() -> None:
    ops = _params(
        _op("insert", "Patient.name[0].given", index=0, value={"valueString": "Cat"}),
        _op("delete", "Patient.name[0].given[1]"),
    )
    out = apply_fhirpath_patch(PATIENT, ops)
    assert out["name"][0] == {"given": ["Cat", "Bea"], "_given": [None, {"id": "g2"}]}


def test_fhirpath_add_non_repeating_twice_is_error() -> None:
    op = _op("add", "Patient", name="gender", value={"valueCode": "male"})
    with pytest.raises(PatchError):
        apply_fhirpath_patch(PATIENT, _params(op, op))


def test_fhirpath_bad_documents() -> None:
    with pytest.raises(PatchError):
        apply_fhirpath_patch(PATIENT, {"resourceType": "Bundle"})
    with pytest.raises(PatchError):
        apply_fhirpath_patch(PATIENT, _params(_op("frobnicate", "Patient")))
    with pytest.raises(PatchError):
        apply_fhirpath_patch(PATIENT, _params(_op("add", "Patient", name="nope", value={})))
    with pytest.raises(PatchError) as info:
        apply_fhirpath_patch(PATIENT, _params(_op("delete", "Patient.where(")))
    assert info.value.expression == "Patient.where("
    with pytest.raises(PatchError):
        apply_fhirpath_patch(
            PATIENT, _params(_op("insert", "Patient.identifier", index=5, value={}))
        )


def test_json_patch_errors_and_edges() -> None:
    doc = {"resourceType": "Patient", "a": [1, 2], "b": True}
    assert apply_json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}])["a"] == [1, 2, 3]
    assert apply_json_patch(doc, [{"op": "copy", "from": "/a", "path": "/c"}])["c"] == [1, 2]
    for bad in (
        [{"op": "test", "path": "/b", "value": 1}],  # true is not 1
        [{"op": "remove", "path": "/a/01"}],  # leading zero
        [{"op": "move", "from": "/a", "path": "/a/0"}],  # into own child
        [{"op": "add", "path": "a", "value": 1}],  # not a pointer
        [{"op": "add", "path": "/x"}],  # no value
        [{"op": "nope", "path": "/x"}],
        [{"op": "replace", "path": "", "value": [1]}],  # result not an object
    ):
        with pytest.raises(PatchError):
            apply_json_patch(doc, bad)
