"""Escaping in search values (search.html#escaping, R4 §3.1.1.4.7): `\\,` `\\|` `\\$` and `\\\\`
stand for the characters themselves in every parameter type; unescaped, `,` separates OR values,
`|` a token's system from its code (and a quantity's number, system and code), `$` a composite's
components. "The parameter value xx\\xx is illegal".

Data built by hand: identifiers, names, codes and units that contain those characters.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import seed
from fastapi.testclient import TestClient

IDS = "http://example.org/ids"
CODES = "http://example.org/codes"
UNITS = "http://example.org/units"


def patient(rid: str, value: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": IDS, "value": value}],
        "name": [{"family": family}],
    }


def observation(rid: str, code: str, unit: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": CODES, "code": code}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 5, "system": UNITS, "code": unit},
    }


@pytest.fixture
def data(client: TestClient) -> TestClient:
    seed(client, [
        patient("pipe", "a|b", "Smith, Jr"),
        patient("comma", "a,b", "Doe$"),
        patient("dollar", "a$b", "Back\\slash"),
        patient("backslash", "a\\b", "Plain"),
        patient("a", "a", "Other"),
        observation("o-dollar", "x$y", "mg|dL", "Patient/pipe"),
        observation("o-pipe", "x|y", "mg", "Patient/comma"),
        observation("o-far", "x,y", "mg", "http://other.example/fhir/Group/a,b"),
        {"resourceType": "ValueSet", "id": "vs", "status": "active",
         "url": "http://example.org/vs/a,b|c"},
    ])  # fmt: skip
    return client


def ids(client: TestClient, rtype: str, **params: str) -> set[str]:
    r = client.get(f"/fhir/{rtype}", params={**params, "_count": "100"})
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


def test_token_values_with_each_special_character(data: TestClient) -> None:
    assert ids(data, "Patient", identifier=f"{IDS}|a\\|b") == {"pipe"}
    assert ids(data, "Patient", identifier="a\\|b") == {"pipe"}
    assert ids(data, "Patient", identifier="a\\,b") == {"comma"}
    assert ids(data, "Patient", identifier="a\\$b") == {"dollar"}
    assert ids(data, "Patient", identifier="a\\\\b") == {"backslash"}
    # unescaped, the comma is an OR of `a` and `b`; the pipe splits system `a` from code `b`
    assert ids(data, "Patient", identifier="a,b") == {"a"}
    assert ids(data, "Patient", identifier="a|b") == set()
    assert ids(data, "Observation", code=f"{CODES}|x\\|y") == {"o-pipe"}
    assert ids(data, "Observation", code=f"{CODES}|x\\$y,{CODES}|x\\,y") == {"o-dollar", "o-far"}


def test_string_values_with_each_special_character(data: TestClient) -> None:
    assert ids(data, "Patient", family="Smith\\, Jr") == {"pipe"}
    assert ids(data, "Patient", **{"family:exact": "Doe\\$"}) == {"comma"}
    assert ids(data, "Patient", **{"family:contains": "k\\\\s"}) == {"dollar"}
    # one value `smith, sr` (no name starts so) against `Smith` OR ` Sr` (starts "Smith, Jr")
    assert ids(data, "Patient", family="Smith\\, Sr") == set()
    assert ids(data, "Patient", family="Smith, Sr") == {"pipe"}
    assert ids(data, "Patient", _content="Smith\\, Jr") == {"pipe"}


def test_uri_and_reference_values(data: TestClient) -> None:
    assert ids(data, "ValueSet", url="http://example.org/vs/a\\,b\\|c") == {"vs"}
    assert ids(data, "Observation", subject="http://other.example/fhir/Group/a\\,b") == {"o-far"}


def test_quantity_code_with_a_pipe(data: TestClient) -> None:
    """`number|system|code`: the unit `mg|dL` is written `mg\\|dL`."""
    assert ids(data, "Observation", **{"value-quantity": f"5|{UNITS}|mg\\|dL"}) == {"o-dollar"}
    assert ids(data, "Observation", **{"value-quantity": f"5|{UNITS}|mg"}) == {"o-pipe", "o-far"}


def test_composite_components_with_escapes(data: TestClient) -> None:
    """`code-value-quantity=token$quantity`: an escaped `$` or `|` belongs to the token."""
    found = ids(data, "Observation", **{"code-value-quantity": f"{CODES}|x\\$y$5"})
    assert found == {"o-dollar"}
    found = ids(data, "Observation", **{"code-value-quantity": f"{CODES}|x\\|y$5||mg"})
    assert found == {"o-pipe"}
    found = ids(data, "Observation", **{"code-value-quantity": f"{CODES}|x\\$y$5|{UNITS}|mg\\|dL"})
    assert found == {"o-dollar"}


def test_chains_and_has_unescape_the_inner_value(data: TestClient) -> None:
    assert ids(data, "Observation", **{"subject:Patient.identifier": "a\\|b"}) == {"o-dollar"}
    assert ids(data, "Patient", **{"_has:Observation:subject:code": f"{CODES}|x\\|y"}) == {"comma"}


@pytest.mark.parametrize(
    ("param", "value"),
    [("family", "a\\b"), ("identifier", "a\\"), ("code-value-quantity", "x\\y$5")],
)
def test_a_backslash_that_escapes_nothing_is_400(
    data: TestClient, param: str, value: str
) -> None:
    """'The parameter value xx\\xx is illegal': 400 naming the parameter."""
    rtype = "Patient" if param != "code-value-quantity" else "Observation"
    r = data.get(f"/fhir/{rtype}", params={param: value})
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "invalid" and issue["expression"] == [param]
