"""Conformance resources written over REST are used from then on, in every worker process, with
no restart: a SearchParameter for search, a CodeSystem and ValueSet for the terminology
operations, a StructureDefinition for validation (services.LiveParts).

Two apps over one database file stand for two worker processes (each has its own Parts, as
each `serve --workers N` process does): what one stores, the other uses on its next request.
The last test runs the real thing, `fhir-server serve --workers 2`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_services, wait_serving
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts

BASE = "http://example.org/fhir"
JSON = {"Content-Type": "application/fhir+json"}

NICKNAME = {
    "resourceType": "SearchParameter", "id": "nickname", "url": f"{BASE}/SearchParameter/nickname",
    "name": "Nickname", "status": "active", "description": "A patient's nickname",
    "code": "nickname", "base": ["Patient"], "type": "string",
    "expression": "Patient.name.where(use = 'nickname').given",
}  # fmt: skip
COLOURS = {
    "resourceType": "CodeSystem", "id": "colours", "url": f"{BASE}/CodeSystem/colours",
    "status": "active", "content": "complete", "caseSensitive": True,
    "concept": [{"code": "red", "display": "Red"}, {"code": "blue", "display": "Blue"}],
}  # fmt: skip
COLOUR_SET = {
    "resourceType": "ValueSet", "id": "colours", "url": f"{BASE}/ValueSet/colours",
    "status": "active", "compose": {"include": [{"system": COLOURS["url"]}]},
}  # fmt: skip
#: a profile: Patient.birthDate required
DATED = {
    "resourceType": "StructureDefinition", "id": "dated-patient",
    "url": f"{BASE}/StructureDefinition/dated-patient", "name": "DatedPatient",
    "status": "active", "fhirVersion": "4.0.1", "kind": "resource", "abstract": False,
    "type": "Patient", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "derivation": "constraint",
    "differential": {"element": [
        {"id": "Patient", "path": "Patient"},
        {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
    ]},
}  # fmt: skip


def patient(rid: str, nickname: str | None = None, profile: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid,
                            "name": [{"use": "official", "family": "Wang"}]}  # fmt: skip
    if nickname:
        body["name"].append({"use": "nickname", "given": [nickname]})
    if profile:
        body["meta"] = {"profile": [profile]}
    return body


@pytest.fixture
def workers(tmp_path: Path, parts: Parts) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps, each with its own Parts, over one database file."""
    first = make_services(tmp_path / "fhir.db", parts)
    second = make_services(tmp_path / "fhir.db", parts)
    with (
        TestClient(build_app(first.settings, first), raise_server_exceptions=False) as a,
        TestClient(build_app(second.settings, second), raise_server_exceptions=False) as b,
    ):
        yield a, b


def ids(client: TestClient, query: str) -> set[str]:
    r = client.get(f"/fhir/Patient?{query}", headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


def put(client: TestClient, resource: dict[str, Any]) -> httpx.Response:
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)


def test_a_search_parameter_stored_by_one_worker_is_searchable_on_the_other(
    workers: tuple[TestClient, TestClient],
) -> None:
    a, b = workers
    assert put(b, patient("before", nickname="Xiaobao")).status_code == 201
    assert b.get("/fhir/Patient?nickname=x", headers={"Prefer": "handling=strict"}
                 ).status_code == 400  # fmt: skip
    assert put(a, NICKNAME).status_code == 201
    assert put(b, patient("after", nickname="Xiaoming")).status_code == 201
    # written after the parameter: indexed; written before: once reindexed (as HAPI)
    assert ids(b, "nickname=xiao") == {"after"}
    r = b.post("/fhir/Patient/$reindex")
    assert r.status_code == 200, r.text
    assert "Reindexed 2 Patient" in r.text
    assert ids(a, "nickname=xiao") == {"before", "after"}
    assert ids(b, "nickname:exact=Xiaobao") == {"before"}
    listed = b.get("/fhir/metadata").json()["rest"][0]["resource"]
    params = next(r["searchParam"] for r in listed if r["type"] == "Patient")
    assert "nickname" in {p["name"] for p in params}
    # deleted: the parameter is gone from both workers
    assert a.delete("/fhir/SearchParameter/nickname").status_code == 200
    assert b.get("/fhir/Patient?nickname=x", headers={"Prefer": "handling=strict"}
                 ).status_code == 400  # fmt: skip


def test_a_code_system_and_value_set_serve_the_terminology_operations(
    workers: tuple[TestClient, TestClient],
) -> None:
    a, b = workers
    lookup = f"/fhir/CodeSystem/$lookup?system={COLOURS['url']}&code=blue"
    assert b.get(lookup).status_code == 404
    assert put(a, COLOURS).status_code == 201 and put(a, COLOUR_SET).status_code == 201
    r = b.get(lookup)
    assert r.status_code == 200, r.text
    assert {"name": "display", "valueString": "Blue"} in r.json()["parameter"]
    check = f"/fhir/ValueSet/$validate-code?url={COLOUR_SET['url']}&system={COLOURS['url']}"
    result = b.get(f"{check}&code=green").json()["parameter"]
    assert {"name": "result", "valueBoolean": False} in result
    changed = {**COLOURS, "concept": [*COLOURS["concept"], {"code": "green", "display": "Green"}]}
    assert put(b, changed).status_code == 200
    result = a.get(f"{check}&code=green").json()["parameter"]
    assert {"name": "result", "valueBoolean": True} in result


def test_a_profile_stored_by_one_worker_validates_on_the_other(
    workers: tuple[TestClient, TestClient],
) -> None:
    a, b = workers
    undated = patient("p1", profile=DATED["url"])
    assert put(a, DATED).status_code == 201
    r = put(b, undated)
    assert r.status_code == 422, r.text
    assert "Patient.birthDate" in r.text
    assert put(b, {**undated, "birthDate": "1980-02-03"}).status_code == 201


@pytest.mark.parametrize(
    ("change", "where"),
    [({"base": ["Patients"]}, "SearchParameter.base"),
     ({"type": "colour"}, "SearchParameter.type")],
)  # fmt: skip
def test_a_search_parameter_the_indexer_cannot_run_is_refused(
    client: TestClient, change: dict[str, Any], where: str
) -> None:
    """Stored, it would break every write of its base type: 422 naming the element."""
    r = put(client, {**NICKNAME, **change})
    assert r.status_code in (400, 422), r.text
    assert where in r.text
    assert client.get("/fhir/SearchParameter/nickname").status_code == 404
    assert put(client, patient("still-writable")).status_code == 201


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # serve --workers 2: `make test-slow`
def test_every_process_of_a_multi_worker_server_uses_it(tmp_path: Path) -> None:
    """`serve --workers 2`: after one PUT, forty requests on fresh connections (the kernel
    hands them to both processes) all search by the new parameter."""
    port = _free_port()
    env = {**os.environ, "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_DEMO_ON_EMPTY": "false"}
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port),
               "--database", str(tmp_path / "w.db"), "--workers", "2"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_serving(f"{base}/metadata")
        for _ in range(10):  # both workers serve (and so have built their Parts) before
            httpx.get(f"{base}/Patient")
        assert httpx.put(f"{base}/SearchParameter/nickname", json=NICKNAME).status_code == 201
        assert httpx.put(f"{base}/Patient/p", json=patient("p", "Xiaobao")).status_code == 201
        for _ in range(40):
            r = httpx.get(f"{base}/Patient?nickname=xiao", headers={"Prefer": "handling=strict"})
            assert r.status_code == 200, r.text
            assert r.json()["total"] == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
