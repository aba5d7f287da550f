"""Search-value normalisers, the parameter registry and index extraction.

The differential test is the safety net for the native FHIRPath compiler: every R4 expression
part it handles is also run through fhirpathpy on every vendored R4 example, and both must
extract the same values.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import defaultdict
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search.fhirpath import (
    compile_expression,
    compile_fhirpath,
    parse_reference,
    split_union,
)
from fhir_server.search.index import index_rows, plan_for
from fhir_server.search.registry import Registry
from fhir_server.search.values import (
    MAX_INSTANT,
    MIN_INSTANT,
    date_bounds,
    normalize_string,
    number_bounds,
)

EXAMPLES = Path(__file__).parent / "data" / "r4-examples"
REPO = Path(__file__).parent.parent


@cache
def registry() -> Registry:
    return Registry.load([])


@cache
def examples() -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted(EXAMPLES.glob("*.json")):
        res = orjson.loads(f.read_bytes())
        by_type[res["resourceType"]].append(res)
    return dict(by_type)


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / f"{name}.json").read_bytes())


# ------------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Smith", "smith"),
        ("  José   ÁLVAREZ ", "jose alvarez"),
        ("Nguyễn Văn\tAn", "nguyen van an"),
        ("Straße", "strasse"),
        ("Ｍüller", "muller"),  # full-width M (NFKD) and umlaut
        ("İstanbul", "istanbul"),
        ("王小明", "王小明"),
        ("東京都　渋谷区", "東京都 渋谷区"),  # ideographic space collapses, ideographs stay
        ("ガギグ", "ガギグ"),  # kana voicing marks are not "accents"
        ("김민준", "김민준"),  # Hangul must not fall apart into jamo
        ("", ""),
    ],
)
def test_normalize_string(raw: str, expected: str) -> None:
    assert normalize_string(raw) == expected


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", "2020-01-01T00:00:00.000000Z", "2020-12-31T23:59:59.999999Z"),
        ("2020-02", "2020-02-01T00:00:00.000000Z", "2020-02-29T23:59:59.999999Z"),
        ("2021-02", "2021-02-01T00:00:00.000000Z", "2021-02-28T23:59:59.999999Z"),
        ("2020-03-04", "2020-03-04T00:00:00.000000Z", "2020-03-04T23:59:59.999999Z"),
        ("2020-03-04T10:00", "2020-03-04T10:00:00.000000Z", "2020-03-04T10:00:59.999999Z"),
        ("2020-03-04T10:00:00Z", "2020-03-04T10:00:00.000000Z", "2020-03-04T10:00:00.999999Z"),
        (
            "2020-03-04T10:00:00+08:00",
            "2020-03-04T02:00:00.000000Z",
            "2020-03-04T02:00:00.999999Z",
        ),
        (
            "2020-03-04T01:30:00+08:00",  # crosses back into the previous day in UTC
            "2020-03-03T17:30:00.000000Z",
            "2020-03-03T17:30:00.999999Z",
        ),
        (
            "2020-12-31T23:00:00-05:00",  # and forward into the next year
            "2021-01-01T04:00:00.000000Z",
            "2021-01-01T04:00:00.999999Z",
        ),
        (
            "2020-03-04T10:00:00.123Z",
            "2020-03-04T10:00:00.123000Z",
            "2020-03-04T10:00:00.123999Z",
        ),
        (
            "2020-03-04T10:00:00.123456789Z",
            "2020-03-04T10:00:00.123456Z",
            "2020-03-04T10:00:00.123456Z",
        ),
        ("0999", "0999-01-01T00:00:00.000000Z", "0999-12-31T23:59:59.999999Z"),
    ],
)
def test_date_bounds(value: str, low: str, high: str) -> None:
    assert date_bounds(value) == (low, high)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20",
        "2020-13",
        "2020-02-30",
        "2021-02-29",
        "2020-3-4",
        "abc",
        "2020-03-04T25:00",
        "2020-03-04T10:61",
        "2020-03-04+08:00",
        "2020-03-04T10:00:00+15:00",
        "2020-03-04 10:00",
    ],
)
def test_date_bounds_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        date_bounds(value)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("100", 99.5, 100.5),
        ("100.00", 99.995, 100.005),
        ("0.5", 0.45, 0.55),
        ("-100", -100.5, -99.5),
        ("1e2", 50.0, 150.0),
        ("0", -0.5, 0.5),
    ],
)
def test_number_bounds(value: str, low: float, high: float) -> None:
    lo, hi = number_bounds(value)
    assert lo == pytest.approx(low) and hi == pytest.approx(high)


@pytest.mark.parametrize("value", ["", "abc", "NaN", "Infinity", "1,5"])
def test_number_bounds_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        number_bounds(value)


# ---------------------------------------------------------------------------------- registry


def test_registry_for_type_includes_common_params() -> None:
    params = registry().for_type("Patient")
    for code in (
        "_id",
        "_lastUpdated",
        "_tag",
        "_profile",
        "_security",
        "_source",
        "_text",
        "_content",
        "_list",
        "_has",
        "_type",
        "_query",
        "name",
        "birthdate",
    ):
        assert code in params, code
    assert params["birthdate"].type == "date"
    assert registry().get("Observation", "subject") is not None
    assert registry().get("Observation", "birthdate") is None
    sp = registry().get("Observation", "code-value-quantity")
    assert sp is not None and [c.expression for c in sp.components] == [
        "code",
        "value.as(Quantity)",
    ]
    general = registry().get("Patient", "general-practitioner")
    assert general is not None and set(general.targets) == {
        "Organization",
        "Practitioner",
        "PractitionerRole",
    }


def test_registry_extra_dirs_override_and_add(tmp_path: Path) -> None:
    custom = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp/patient-nickname",
        "code": "nickname",
        "type": "string",
        "base": ["Patient"],
        "status": "active",
        "expression": "Patient.name.where(use='nickname').given",
    }
    override = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp/patient-gender",
        "code": "gender",
        "type": "token",
        "base": ["Patient"],
        "status": "active",
        "expression": "Patient.gender",
    }
    (tmp_path / "SearchParameter-nickname.json").write_text(json.dumps(custom))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "bundle.json").write_text(
        json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": override}]}
        )
    )
    (tmp_path / "StructureDefinition-x.json").write_text('{"resourceType": "StructureDefinition"}')
    (tmp_path / "broken.json").write_text("{not json")
    reg = Registry.load([tmp_path, tmp_path / "absent"])
    assert reg.get("Patient", "nickname") is not None
    gender = reg.get("Patient", "gender")
    assert gender is not None and gender.url == override["url"]
    assert reg.get("Observation", "nickname") is None
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "nickname", "given": ["Bob"]}, {"use": "official", "given": ["Robert"]}],
    }
    rows = index_rows("Patient", patient, reg)["string"]
    assert ("nickname", "bob", "Bob") in rows
    assert not any(r[0] == "nickname" and r[2] == "Robert" for r in rows)


def test_spec_data_files() -> None:
    spec = REPO / "fhir_server" / "spec"
    types = json.loads((spec / "resource_types.json").read_text())
    assert "Patient" in types["types"] and types["types"] == sorted(types["types"])
    assert set(types["missing_in_r4b"]) <= set(types["types"])
    assert "MedicinalProduct" in types["missing_in_r4b"]
    comp = json.loads((spec / "compartments.json").read_text())
    assert "subject" in comp["Patient"]["Observation"]
    assert set(comp) == {"Device", "Encounter", "Patient", "Practitioner", "RelatedPerson"}


def test_build_script_compacts_records() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_spec_data", REPO / "scripts" / "build_spec_data.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rec = mod.compact_search_parameter(
        {
            "resourceType": "SearchParameter",
            "id": "x",
            "url": "u",
            "code": "c",
            "type": "token",
            "base": ["B", "A"],
            "expression": "A.x | B.x",
            "description": "long text",
            "text": {"div": "<div/>"},
            "xpath": "f:x",
            "multipleOr": True,
        }
    )
    assert rec == {
        "code": "c",
        "type": "token",
        "url": "u",
        "base": ["A", "B"],
        "expression": "A.x | B.x",
        "multipleOr": True,
    }


def test_vendored_examples_are_named_like_the_package() -> None:
    files = sorted(EXAMPLES.glob("*.json"))
    assert 250 <= len(files) <= 400
    assert sum(f.stat().st_size for f in files) < 4_000_000
    for f in files:
        res = orjson.loads(f.read_bytes())
        assert f.name == f"{res['resourceType']}-{res['id']}.json"
    assert len(examples()) >= 100  # resource types covered


# ------------------------------------------------------------------------------- extraction


def test_split_union_by_type_prefix() -> None:
    parts = split_union(
        "AllergyIntolerance.patient | (CarePlan.subject.where(resolve() is "
        "Patient)) | name | Resource.meta.tag"
    )
    assert [p for p, _ in parts] == ["AllergyIntolerance", "CarePlan", None, "Resource"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123", None)),
        ("Patient/123/_history/2", ("Patient", "123", None)),
        ("http://x.org/fhir/Patient/123", ("Patient", "123", "http://x.org/fhir/Patient/123")),
        (
            "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            (None, None, "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
        ),
        ("#contained1", None),
        ("", None),
    ],
)
def test_parse_reference(ref: str, expected: Any) -> None:
    assert parse_reference(ref) == expected


def test_patient_rows() -> None:
    rows = index_rows("Patient", example("Patient-example"), registry())
    assert ("family", "chalmers", "Chalmers") in rows["string"]
    assert ("given", "jim", "Jim") in rows["string"]
    assert ("address-city", "pleasantville", "PleasantVille") in rows["string"]
    assert ("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", None) in rows["token"]
    assert ("gender", None, "male", None) in rows["token"]
    assert ("active", None, "true", None) in rows["token"]
    assert ("deceased", None, "false", None) in rows["token"]
    assert ("phone", None, "(03) 5555 6473", None) in rows["token"]
    assert ("organization", "Organization", "1", None) in rows["reference"]
    assert ("birthdate", "1974-12-25T00:00:00.000000Z", "1974-12-25T23:59:59.999999Z") in rows[
        "date"
    ]
    assert not any(r[0].startswith("_id") for t in rows.values() for r in t)
    for table_rows in rows.values():
        assert len(table_rows) == len(set(table_rows))


def test_observation_rows() -> None:
    rows = index_rows("Observation", example("Observation-example"), registry())
    assert ("value-quantity", 185.0, "http://unitsofmeasure.org", "[lb_av]", "lbs") in rows[
        "quantity"
    ]
    assert ("code", "http://loinc.org", "29463-7", "Body Weight") in rows["token"]
    assert ("subject", "Patient", "example", None) in rows["reference"]
    assert ("patient", "Patient", "example", None) in rows["reference"]
    assert ("date", "2016-03-28T00:00:00.000000Z", "2016-03-28T23:59:59.999999Z") in rows["date"]
    # composite code-value-quantity has grouped rows (composite_rows), not plain ones; the
    # combo-* parameters, unions of code and component-code and the like, have none of their own
    assert not any(r[0] == "code-value-quantity" for t in rows.values() for r in t)
    assert not any(r[0].startswith("combo-") for t in rows.values() for r in t)


def test_synthetic_resource_rows() -> None:
    obs = {
        "resourceType": "Observation",
        "id": "x",
        "status": "final",
        "meta": {
            "tag": [{"system": "http://t", "code": "a"}],
            "profile": ["http://p|1"],
            "lastUpdated": "2020-01-01T00:00:00Z",
        },
        "code": {"text": "free text only"},
        "subject": {"reference": "Group/g1"},
        "performer": [
            {"reference": "#p1"},
            {"reference": "http://other/fhir/Practitioner/7"},
            {"identifier": {"system": "http://npi", "value": "42"}},
        ],
        "effectivePeriod": {"start": "2020-03-04T10:00:00+01:00"},
        "valueCodeableConcept": {
            "coding": [{"system": "http://s", "code": "c"}],
            "text": "Some text",
        },
        "component": [
            {"code": {"coding": [{"code": "1"}]}, "valueQuantity": {"value": 2.5}},
            {"code": {"coding": [{"code": "1"}]}, "valueQuantity": {"value": 2.5}},
        ],
    }
    rows = index_rows("Observation", obs, registry())
    assert ("_tag", "http://t", "a", None) in rows["token"]
    assert ("_profile", "http://p|1") in rows["uri"]
    assert ("code", None, None, "free text only") in rows["token"]
    assert ("value-concept", "http://s", "c", "Some text") in rows["token"]
    assert ("subject", "Group", "g1", None) in rows["reference"]
    assert not any(r[0] == "patient" for r in rows["reference"])  # resolve() is Patient
    assert ("performer", "Practitioner", "7", "http://other/fhir/Practitioner/7") in rows[
        "reference"
    ]
    assert not any(r[3] == "#p1" for r in rows["reference"])
    assert ("performer", "http://npi", "42", None) in rows["token"]  # for :identifier
    assert ("date", "2020-03-04T09:00:00.000000Z", MAX_INSTANT) in rows["date"]
    assert rows["quantity"].count(("component-value-quantity", 2.5, None, None, None)) == 1
    assert not any(r[0] == "_lastUpdated" for r in rows["date"])


def test_period_timing_canonical_and_number() -> None:
    enc = {"resourceType": "Encounter", "period": {"end": "2020-05"}}
    assert index_rows("Encounter", enc, registry())["date"] == [
        ("date", MIN_INSTANT, "2020-05-31T23:59:59.999999Z")
    ]
    plan = {
        "resourceType": "CarePlan",
        "activity": [
            {
                "detail": {
                    "scheduledTiming": {
                        "event": ["2021-01-02"],
                        "repeat": {"boundsPeriod": {"start": "2021-01-01", "end": "2021-01-31"}},
                    }
                }
            }
        ],
    }
    dates = index_rows("CarePlan", plan, registry())["date"]
    assert ("activity-date", "2021-01-02T00:00:00.000000Z", "2021-01-02T23:59:59.999999Z") in dates
    assert ("activity-date", "2021-01-01T00:00:00.000000Z", "2021-01-31T23:59:59.999999Z") in dates
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://example.org/Questionnaire/q1|2.0",
    }
    assert ("questionnaire", None, None, "http://example.org/Questionnaire/q1|2.0") in index_rows(
        "QuestionnaireResponse", qr, registry()
    )["reference"]
    ra = {
        "resourceType": "RiskAssessment",
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
    }
    nums = index_rows("RiskAssessment", ra, registry())["number"]
    assert ("probability", 0.25, 0.25) in nums  # a stored number is exact
    assert ("probability", 0.5, float("inf")) in nums


def test_choice_elements_and_bad_values_are_tolerated() -> None:
    cond = {
        "resourceType": "Condition",
        "onsetString": "childhood",
        "abatementDateTime": "not-a-date",
        "recordedDate": "2019",
    }
    rows = index_rows("Condition", cond, registry())
    assert ("onset-info", "childhood", "childhood") in rows["string"]
    assert not any(r[0] == "abatement-date" for r in rows["date"])
    assert ("recorded-date", "2019-01-01T00:00:00.000000Z", "2019-12-31T23:59:59.999999Z") in rows[
        "date"
    ]


def test_fallback_to_fhirpathpy() -> None:
    ex = compile_expression("Patient.name.select(given.first())", "Patient")
    assert ex.fallback_parts and not ex.native_parts
    assert [v for v, _ in ex(example("Patient-example"))] == ["Peter", "Jim", "Peter"]


# ------------------------------------------------------------------- differential vs fhirpathpy

_AS_RE = re.compile(r"\s+as\s+([A-Za-z]+)")


def _canon(values: list[Any]) -> list[bytes]:
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int | float | Decimal):
            return float(v)  # fhirpathpy yields Decimal, the JSON parser int/float
        return str(v)

    return sorted({orjson.dumps(norm(v), option=orjson.OPT_SORT_KEYS) for v in values})


def test_native_compiler_matches_fhirpathpy() -> None:
    reg = registry()
    checked = nonempty = 0
    mismatches: list[str] = []
    fallbacks: list[str] = []
    for rtype, docs in sorted(examples().items()):
        for code, _table, ex in plan_for(rtype, reg):
            fallbacks.extend(f"{rtype}.{code}: {p}" for p in ex.fallback_parts)
            for part in ex.native_parts:
                native = compile_expression(part, rtype)
                reference = compile_fhirpath(part, rtype)
                lenient = None
                for doc in docs:
                    try:
                        expected = reference(doc)
                    except Exception:
                        # fhirpathpy enforces singleton 'x as T'; ofType() is the collection form
                        lenient = lenient or compile_fhirpath(
                            _AS_RE.sub(r".ofType(\1)", part), rtype
                        )
                        expected = lenient(doc)
                    got = [v for v, _ in native(doc)]
                    checked += 1
                    nonempty += bool(expected)
                    if _canon(got) != _canon(expected):
                        mismatches.append(f"{rtype}/{doc.get('id')} {code}: {part}")
    assert mismatches == []
    assert fallbacks == []  # every R4 expression compiles natively today
    assert checked > 5000 and nonempty > 1000, (checked, nonempty)


def test_bundle_first_entry_reference() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}],
    }
    assert ("composition", "Composition", "c1", None) in index_rows("Bundle", bundle, registry())[
        "reference"
    ]
