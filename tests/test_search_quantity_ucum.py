"""Quantity search in UCUM's canonical units (search.html#quantity, 3.1.1.4.6: "the server
SHOULD compare in canonical units" when the system is UCUM). Expected factors are worked out by
hand from UCUM's definitions (ucum-essence.xml 2.1), not taken from fhir_server/search/ucum.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.search.ucum import factor
from fhir_server.services import Parts
from fhir_server.storage.sqlite.schema import MIGRATIONS

UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("kg", (1000.0, "g")),
        ("ug", (1e-6, "g")),
        ("mg/dL", (1e-3 / 1e-1, "g/L")),  # 1 mg per 0.1 L = 0.01 g/L
        ("mmol/L", (1e-3, "mol/L")),
        ("cm", (0.01, "m")),
        ("mL", (1e-3, "L")),
        ("min", (60.0, "s")),
        ("wk", (7 * 24 * 3600.0, "s")),
        ("a", (365.25 * 24 * 3600, "s")),  # a = a_j, the mean Julian year
        ("mo", (365.25 * 24 * 3600 / 12, "s")),  # mo = mo_j = a_j / 12
        ("[lb_av]", (7000 * 64.79891e-3, "g")),  # 7000 grains of 64.79891 mg
        ("[in_i]", (0.0254, "m")),
        ("kg/m2", (1000.0, "g/m2")),  # body mass index as Synthea writes it
        ("cm2", (1e-4, "m2")),  # the prefix is squared with its atom
        ("d", (86400.0, "s")),  # a day, not deci-
        ("dL", (0.1, "L")),
    ],
)
def test_factors_follow_ucum_definitions(code: str, expected: tuple[float, str]) -> None:
    got = factor(code)
    assert got is not None
    assert got[1] == expected[1]
    assert got[0] == pytest.approx(expected[0], rel=1e-12)


@pytest.mark.parametrize("code", ["Cel", "%", "{score}", "10*3/uL", "/min", "mm[Hg]", "kg/m/s"])
def test_units_without_a_ratio_conversion_here_are_left_alone(code: str) -> None:
    assert factor(code) is None


def _obs(client: TestClient, rid: str, value: float, code: str, system: str = UCUM) -> None:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final", "code": {"text": "w"},
        "valueQuantity": {"value": value, "unit": code, "system": system, "code": code},
    }  # fmt: skip
    r = client.put(f"/fhir/Observation/{rid}", json=resource)
    assert r.status_code in (200, 201), r.text


def _ids(client: TestClient, query: str) -> list[str]:
    r = client.get(f"/fhir/Observation?{query}")
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", [])]


def _q(value: str, code: str) -> str:
    return f"value-quantity={value}|{UCUM}|{code}"


@pytest.fixture
def weights(client: TestClient) -> TestClient:
    """Four weights in three units: 5500 g, 5.5 kg, 6 kg (= 6000 g), 12 [lb_av] (= 5443.1 g)."""
    _obs(client, "grams", 5500, "g")
    _obs(client, "kilos", 5.5, "kg")
    _obs(client, "six", 6, "kg")
    _obs(client, "pounds", 12, "[lb_av]")  # 12 x 453.59237 g = 5443.10844 g
    return client


def test_a_quantity_in_the_canonical_unit_is_found_in_another(weights: TestClient) -> None:
    # 5.5 kg = 5500 g: the stored grams and kilos both match; 12 lb = 5443.1 g does not
    # (5.5 has the range [5.45, 5.55) kg = [5450, 5550) g)
    assert sorted(_ids(weights, _q("5.5", "kg"))) == ["grams", "kilos"]
    assert sorted(_ids(weights, _q("5500", "g"))) == ["grams", "kilos"]
    assert sorted(_ids(weights, _q("5500000", "mg"))) == ["grams", "kilos"]
    # 5443.10844 g lies in 5.44 kg's range [5.435, 5.445) kg
    assert _ids(weights, _q("5.44", "kg")) == ["pounds"]


def test_prefixes_compare_canonical_values(weights: TestClient) -> None:
    # canonical grams: grams 5500, kilos 5500, six 6000, pounds 5443.10844
    assert sorted(_ids(weights, _q("gt5.5", "kg"))) == ["six"]  # > 5500 g
    assert sorted(_ids(weights, _q("lt5500", "g"))) == ["pounds"]
    assert sorted(_ids(weights, _q("ge5500", "g"))) == ["grams", "kilos", "six"]
    assert sorted(_ids(weights, _q("ne5.5", "kg"))) == ["pounds", "six"]
    # ap is within 10% of the value: 5.0 kg +- 0.5 kg = [4500, 5500] g takes all but six
    assert sorted(_ids(weights, _q("ap5.0", "kg"))) == ["grams", "kilos", "pounds"]
    # 12 lb +- 10% = [4898.8, 5987.4] g: all but six
    assert sorted(_ids(weights, _q("ap12", "[lb_av]"))) == ["grams", "kilos", "pounds"]


def test_without_ucum_the_unit_is_compared_as_written(weights: TestClient) -> None:
    assert _ids(weights, "value-quantity=5.5||kg") == ["kilos"]
    assert _ids(weights, "value-quantity=5500||g") == ["grams"]
    assert _ids(weights, "value-quantity=5.5") == ["kilos"]  # the number as written


def test_a_display_unit_is_not_taken_for_a_canonical_code(client: TestClient) -> None:
    # code kg, unit text "g": its value 5.5 is kilograms, never 5.5 grams
    resource = {"resourceType": "Observation", "id": "odd", "status": "final",
                "code": {"text": "w"},
                "valueQuantity": {"value": 5.5, "unit": "g", "system": UCUM, "code": "kg"}}
    assert client.put("/fhir/Observation/odd", json=resource).status_code == 201
    assert _ids(client, _q("5.5", "g")) == []
    assert _ids(client, _q("5500", "g")) == ["odd"]


def test_sort_orders_by_canonical_value(weights: TestClient) -> None:
    # canonical grams: pounds 5443.1 < grams 5500 = kilos 5500 < six 6000 (ties by row order)
    assert _ids(weights, "_sort=value-quantity") == ["pounds", "grams", "kilos", "six"]
    assert _ids(weights, "_sort=-value-quantity") == ["six", "grams", "kilos", "pounds"]


def test_concentrations_and_times(client: TestClient) -> None:
    _obs(client, "glucose", 90, "mg/dL")  # 90 mg/dL = 0.9 g/L
    _obs(client, "sodium", 140, "mmol/L")  # = 0.14 mol/L
    _obs(client, "age", 18, "mo")  # 18 months = 1.5 a
    _obs(client, "stay", 36, "h")  # = 1.5 d
    assert _ids(client, _q("0.9", "g/L")) == ["glucose"]
    assert _ids(client, _q("le1", "g/L")) == ["glucose"]
    assert _ids(client, _q("0.14", "mol/L")) == ["sodium"]
    assert _ids(client, _q("140000", "umol/L")) == ["sodium"]
    assert _ids(client, _q("1.5", "a")) == ["age"]
    assert _ids(client, _q("1.5", "d")) == ["stay"]
    assert _ids(client, _q("2160", "min")) == ["stay"]  # 36 x 60


def test_migration_11_adds_the_canonical_rows_of_quantities_stored_before(
    tmp_path: Path, parts: Parts
) -> None:
    """12 [lb_av] without its canonical row (as the writer of schema 10 stored it): after
    migration 11, 12 lb is found as 5443.10844 g."""
    path = tmp_path / "old.db"
    services = make_services(path, parts)
    with TestClient(build_app(services.settings, services)) as c:
        _obs(c, "pounds", 12, "[lb_av]")
        assert _ids(c, _q("5443.1", "g")) == ["pounds"]
    services.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM idx_quantity WHERE param LIKE '%:canonical'")
        conn.executescript(f"BEGIN;\n{MIGRATIONS[10]}\nCOMMIT;")  # migration 11 alone
    services = make_services(path, parts)
    with TestClient(build_app(services.settings, services)) as c:
        assert _ids(c, _q("5443.1", "g")) == ["pounds"]
        assert _ids(c, _q("5.4431", "kg")) == ["pounds"]
