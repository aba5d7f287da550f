"""Decimals keep their written form (datatypes.html#decimal: the precision is part of the value;
json.html: "decimal values SHALL be represented as written") on every way a resource comes
back, while searches still compare them as numbers (search.html#number, #quantity).

Expectations are the literals the client sent, read from the response bytes (never re-parsed
by a JSON library, which would itself turn `80.00` into `80.0`).
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from fhir_server.model.literal import Number, dumps, loads

JSON = {"Content-Type": "application/fhir+json"}
#: the value as written, one of each kind a float would change: trailing zeros, an exponent,
#: 21 significant digits, negative zero (a decimal) and negative zero (an integer)
LITERALS = ("80.00", "1.0e2", "0.123456789012345678901", "-0.0", "1E-7", "12345678901234567890")


def observation(rid: str = "dec", value: str = "80.00") -> bytes:
    """An Observation written by hand, so the literals are exactly these bytes."""
    components = ",".join(
        f'{{"code":{{"text":"c{i}"}},"valueQuantity":{{"value":{lit},"unit":"mg"}}}}'
        for i, lit in enumerate(LITERALS[1:])
    )
    return (
        f'{{"resourceType":"Observation","id":"{rid}","status":"final",'
        f'"code":{{"text":"weight"}},'
        f'"valueQuantity":{{"value":{value},"unit":"kg","system":"http://unitsofmeasure.org",'
        f'"code":"kg"}},"component":[{components}]}}'
    ).encode()


def numbers(text: str) -> list[str]:
    """The number literals after "value": in a response, as the server wrote them."""
    return re.findall(r'"value":\s*(-?[0-9][0-9.eE+-]*)', text)


def put(client: TestClient, body: bytes, rid: str = "dec") -> None:
    r = client.put(f"/fhir/Observation/{rid}", content=body, headers=JSON)
    assert r.status_code in (200, 201), r.text


def test_the_parser_keeps_only_what_a_float_would_change() -> None:
    value = loads(b'{"a":80.00,"b":80.0,"c":7,"d":-0,"e":1e2,"f":0.1}')
    assert [type(value[k]) for k in "abcdef"] == [Number, float, int, Number, Number, float]
    assert value["a"] == 80.0 and value["d"] == 0 and value["e"] == 100.0
    assert dumps(value) == b'{"a":80.00,"b":80.0,"c":7,"d":-0,"e":1e2,"f":0.1}'


@pytest.mark.parametrize("path", ["", "/_history/1"])
def test_read_and_vread_return_the_literals(client: TestClient, path: str) -> None:
    put(client, observation())
    r = client.get(f"/fhir/Observation/dec{path}")
    assert r.status_code == 200
    assert numbers(r.text) == list(LITERALS)


@pytest.mark.parametrize(
    "query",
    ["_pretty=true", "_elements=valueQuantity,component", "_summary=data", "_format=json"],
)
def test_shaped_reads_return_the_literals(client: TestClient, query: str) -> None:
    """_elements/_summary and _pretty re-parse the stored JSON: the numbers survive that."""
    put(client, observation())
    r = client.get(f"/fhir/Observation/dec?{query}")
    assert r.status_code == 200
    assert numbers(r.text) == list(LITERALS)


def test_history_and_search_bundles_carry_the_literals(client: TestClient) -> None:
    put(client, observation())
    for url in (
        "/fhir/Observation/dec/_history",
        "/fhir/Observation/_history",
        "/fhir/Observation?_id=dec",
        "/fhir/Observation?_id=dec&_elements=component",
        "/fhir/Observation?_id=dec&_pretty=true",
    ):
        r = client.get(url)
        assert r.status_code == 200, url
        assert numbers(r.text)[-5:] == list(LITERALS[1:]), url


def test_transaction_response_with_representation_carries_the_literals(
    client: TestClient,
) -> None:
    entry = observation("tx").decode()
    bundle = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + entry
        + ',"request":{"method":"PUT","url":"Observation/tx"}}]}'
    )
    headers = {**JSON, "Prefer": "return=representation"}
    r = client.post("/fhir", content=bundle, headers=headers)
    assert r.status_code == 200, r.text
    assert numbers(r.text) == list(LITERALS)
    assert numbers(client.get("/fhir/Observation/tx").text) == list(LITERALS)


def test_search_by_quantity_compares_numbers(client: TestClient) -> None:
    """80.00 kg is found by 80 (range 79.5..80.5), by 80.00 and by gt79.999, and not by
    80.01 (range 80.005..80.015 leaves 80 out); 1.0e2 mg by 100 and by 1e2."""
    put(client, observation())

    def found(q: str) -> int:
        r = client.get(f"/fhir/Observation?{q}")
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    assert found("value-quantity=80") == 1
    assert found("value-quantity=80.00|http://unitsofmeasure.org|kg") == 1
    assert found("value-quantity=gt79.999") == 1
    assert found("value-quantity=80.01") == 0
    assert found("component-value-quantity=100") == 1
    assert found("component-value-quantity=1e2||mg") == 1
    assert found("component-value-quantity=1e-7") == 1


def test_a_change_of_precision_is_a_new_version(client: TestClient) -> None:
    """80.00 and 80.0 are the same float but not the same decimal: PUTting 80.0 over 80.00
    makes version 2; PUTting 80.0 again changes nothing (http.html#update: no-op kept)."""
    put(client, observation(value="80.00"))
    put(client, observation(value="80.0"))
    r = client.get("/fhir/Observation/dec")
    assert r.json()["meta"]["versionId"] == "2"
    assert numbers(r.text)[0] == "80.0"
    put(client, observation(value="80.0"))
    assert client.get("/fhir/Observation/dec").json()["meta"]["versionId"] == "2"


def test_patch_keeps_the_other_literals(client: TestClient) -> None:
    put(client, observation())
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    r = client.patch(
        "/fhir/Observation/dec",
        content=json.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert numbers(r.text) == list(LITERALS)
    add = b'[{"op":"replace","path":"/valueQuantity/value","value":72.50}]'
    r = client.patch(
        "/fhir/Observation/dec", content=add,
        headers={"Content-Type": "application/json-patch+json"},
    )  # fmt: skip
    assert numbers(r.text)[0] == "72.50"


def test_validate_parses_the_literals_like_every_write(client: TestClient) -> None:
    """$validate parses like every write: a valid body with these numbers is valid."""
    r = client.post("/fhir/Observation/$validate", content=observation(), headers=JSON)
    assert r.status_code == 200
    # valid: no error (dom-6's warning, no narrative, is all $validate may say of it)
    assert {i["severity"] for i in r.json()["issue"]} <= {"information", "warning"}, r.text


@pytest.mark.parametrize("number", ["1e400", "NaN", "-Infinity", "1" * 400])
def test_numbers_beyond_a_double_are_refused(client: TestClient, number: str) -> None:
    """Not JSON (NaN, Infinity) or not a value any peer could compare: 400, nothing stored."""
    r = client.put("/fhir/Observation/dec", content=observation(value=number), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["code"] == "structure"
    assert client.get("/fhir/Observation/dec").status_code == 404
