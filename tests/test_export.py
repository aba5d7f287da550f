"""Bulk Data export (Bulk Data Access IG 2.0.0, export.html): kick-off, status polling,
manifest, NDJSON files, deletion, retention, access, and a job that survives a restart.

Expectations come from the IG (status codes, manifest fields) and from the server's own reads
of the same resources (an exported resource must equal its read, byte for byte), with counts
taken from the raw Synthea bundles."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_services, wait_serving
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of, code_flow
from test_synthea import SAMPLE, ordered, read_bundle

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.cli import main
from fhir_server.services import Parts

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def load_sample(post: Any) -> Counter[str]:
    """POST the Synthea sample; the resource types it holds, counted from the raw bundles."""
    counts: Counter[str] = Counter()
    for path in ordered(SAMPLE):
        bundle = read_bundle(path)
        counts.update(e["resource"]["resourceType"] for e in bundle["entry"])
        r = post("/fhir", content=orjson.dumps(bundle),
                 headers={"Content-Type": "application/fhir+json"})  # fmt: skip
        assert r.status_code == 200, r.text[:300]
    return counts


def finish(c: Any, location: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the status URL until the manifest (200); every interim answer is 202 with an
    X-Progress text of under 100 characters (export.html "Response - In-Progress Status")."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = c.get(location)
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("application/json")
            assert "expires" in r.headers
            manifest: dict[str, Any] = r.json()
            return manifest
        assert r.status_code == 202, r.text
        assert 0 < len(r.headers["x-progress"]) < 100 and r.headers["retry-after"]
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def kick_off(c: Any, url: str, **params: str) -> str:
    r = c.get(url, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return str(r.headers["content-location"])


def lines(c: Any, url: str) -> list[bytes]:
    r = c.get(url, headers={"Accept": "application/fhir+ndjson"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/fhir+ndjson"
    assert r.content.endswith(b"\n")
    return r.content.splitlines()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[Any]:
    # no audit trail: its AuditEvents name the patients (R4 puts them in the Patient
    # compartment), and these expectations are the clinical records
    services = make_services(tmp_path_factory.mktemp("export") / "fhir.db", parts, audit=False)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        counts = load_sample(c.post)
        yield c, counts


def test_system_export_round_trip(loaded: Any) -> None:
    """Every exported resource equals its read; every Synthea resource is there once."""
    c, counts = loaded
    manifest = finish(c, kick_off(c, "/fhir/$export"))
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    exported: Counter[str] = Counter()
    for item in manifest["output"]:
        got = lines(c, item["url"])
        assert len(got) == item["count"]
        for line in got:
            resource = orjson.loads(line)
            assert resource["resourceType"] == item["type"]  # one type per file
            read = c.get(f"/fhir/{item['type']}/{resource['id']}")
            assert read.content.rstrip(b"\n") == line
        exported[item["type"]] += len(got)
    for rtype, n in counts.items():
        assert exported[rtype] == n, rtype
    # the server's own guide (StructureDefinitions, CodeSystems, ...) is exported too
    assert exported["StructureDefinition"] > 0


def test_patient_and_group_level(loaded: Any) -> None:
    c, counts = loaded
    compartment = {t: n for t, n in counts.items()
                   if t not in ("Organization", "Practitioner", "Location", "PractitionerRole")}
    manifest = finish(c, kick_off(c, "/fhir/Patient/$export"))
    assert {i["type"]: i["count"] for i in manifest["output"]} == compartment
    # a Group of one Synthea patient: that patient's bundle, no more
    path = ordered(SAMPLE)[2]
    bundle = read_bundle(path)
    theirs = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    patient = c.get("/fhir/Patient", params={"_count": "10"}).json()["entry"]
    names = {e["resource"]["name"][0]["family"]: e["resource"]["id"] for e in patient}
    raw_patient = next(e["resource"] for e in bundle["entry"]
                       if e["resource"]["resourceType"] == "Patient")  # fmt: skip
    pid = names[raw_patient["name"][0]["family"]]
    group = {"resourceType": "Group", "id": "one", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{pid}"}}]}  # fmt: skip
    assert c.put("/fhir/Group/one", json=group).status_code in (200, 201)
    manifest = finish(c, kick_off(c, "/fhir/Group/one/$export"))
    # and the Group itself: R4's Patient compartment holds the Groups a patient is member of
    assert {i["type"]: i["count"] for i in manifest["output"]} == {**theirs, "Group": 1}
    manifest = finish(c, kick_off(c, "/fhir/Group/one/$export", _type="Patient,Encounter"))
    assert {i["type"]: i["count"] for i in manifest["output"]} == {
        "Patient": 1, "Encounter": theirs["Encounter"]}


def test_type_filter_and_since(loaded: Any) -> None:
    c, _ = loaded
    heights = c.get("/fhir/Observation", params={"code": "http://loinc.org|8302-2",
                                                 "_summary": "count"}).json()["total"]  # fmt: skip
    query = "Observation?code=http%3A%2F%2Floinc.org%7C8302-2"
    manifest = finish(c, kick_off(c, "/fhir/$export", _type="Observation,Patient",
                                  _typeFilter=query))  # fmt: skip
    assert {i["type"]: i["count"] for i in manifest["output"]} == {"Observation": heights,
                                                                   "Patient": 3}  # fmt: skip
    # _since: a changed Patient and a deleted Condition are all that happened after the mark
    time.sleep(0.01)
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    patient = c.get("/fhir/Patient", params={"_count": "1"}).json()["entry"][0]["resource"]
    patient.pop("meta")
    patient["active"] = False
    assert c.put(f"/fhir/Patient/{patient['id']}", json=patient).status_code == 200
    condition = c.get("/fhir/Condition", params={"_count": "1"}).json()["entry"][0]["resource"]
    assert c.delete(f"/fhir/Condition/{condition['id']}").status_code == 200
    manifest = finish(c, kick_off(c, "/fhir/$export", _since=stamp))
    assert [(i["type"], i["count"]) for i in manifest["output"]] == [("Patient", 1)]
    (deleted,) = manifest["deleted"]
    (line,) = lines(c, deleted["url"])
    bundle = orjson.loads(line)
    assert bundle["type"] == "transaction"
    assert bundle["entry"] == [{"request": {"method": "DELETE",
                                            "url": f"Condition/{condition['id']}"}}]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "params", "expression"),
    [
        ("/fhir/$export", {"_type": "Patient,Nonsense"}, "_type"),
        ("/fhir/$export", {"_outputFormat": "application/fhir+json"}, "_outputFormat"),
        ("/fhir/$export", {"_since": "yesterday"}, "_since"),
        ("/fhir/$export", {"_elements": "id"}, "_elements"),
        ("/fhir/$export", {"_typeFilter": "Observation?colour=blue"}, "_typeFilter"),
        ("/fhir/$export", {"_typeFilter": "Observation?_include=Observation:subject"},
         "_typeFilter"),
        ("/fhir/Patient/$export", {"_type": "Organization"}, "_type"),
    ],
)  # fmt: skip
def test_bad_kick_offs_are_400(
    loaded: Any, url: str, params: dict[str, str], expression: str
) -> None:
    c, _ = loaded
    r = c.get(url, params=params, headers=ASYNC)
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == [expression]
    assert c.get("/fhir/Group/nobody/$export", headers=ASYNC).status_code == 404


def test_delete_cancels_and_removes(loaded: Any) -> None:
    c, _ = loaded
    location = kick_off(c, "/fhir/$export", _type="Patient")
    manifest = finish(c, location)
    url = manifest["output"][0]["url"]
    r = c.delete(location)
    assert r.status_code == 202 and r.json()["resourceType"] == "OperationOutcome"
    assert c.get(location).status_code == 404
    assert c.get(url).status_code == 404
    assert c.delete(location).status_code == 404


def test_two_exports_of_the_same_scope_are_independent(loaded: Any) -> None:
    c, _ = loaded
    first = kick_off(c, "/fhir/$export", _type="Encounter")
    second = kick_off(c, "/fhir/$export", _type="Encounter")
    assert first != second
    assert c.delete(first).status_code == 202
    manifest = finish(c, second)
    assert [i["type"] for i in manifest["output"]] == ["Encounter"]
    assert len(lines(c, manifest["output"][0]["url"])) == manifest["output"][0]["count"]


def test_files_expire_after_the_retention(tmp_path: Path, parts: Parts) -> None:
    services = make_services(tmp_path / "fhir.db", parts, export_retention_hours=0.0)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        location = kick_off(c, "/fhir/$export", _type="StructureDefinition")
        deadline = time.time() + 30
        while c.get(location).status_code == 202 and time.time() < deadline:
            time.sleep(0.05)
        assert c.get(location).status_code == 404  # complete, and expired at once


# --- access: the caller's data only, the caller's job only --------------------------------------


def _p(pid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid,
            "managingOrganization": {"reference": f"Organization/{org}"}}  # fmt: skip


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    # no audit trail: its AuditEvents name the patients (R4 puts them in the Patient
    # compartment), and these expectations are the clinical records
    services = make_services(tmp_path_factory.mktemp("hospitals") / "fhir.db", parts, audit=False)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        data = [
            {"resourceType": "Organization", "id": "ha", "name": "HA"},
            {"resourceType": "Organization", "id": "hb", "name": "HB"},
            {"resourceType": "PractitionerRole", "id": "dra",
             "organization": {"reference": "Organization/ha"}},
            {"resourceType": "PractitionerRole", "id": "drb",
             "organization": {"reference": "Organization/hb"}},
            _p("pa", "ha"), _p("pb", "hb"),
            {"resourceType": "Observation", "id": "oa", "status": "final", "code": {"text": "x"},
             "subject": {"reference": "Patient/pa"}},
            {"resourceType": "Observation", "id": "ob", "status": "final", "code": {"text": "x"},
             "subject": {"reference": "Patient/pb"}},
        ]  # fmt: skip
        for r in data:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, "app", [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "dra", PASSWORD, "PractitionerRole/dra")
        admin.add_user(store, "drb", PASSWORD, "PractitionerRole/drb")
        yield c


def bearer(c: TestClient, user: str, scope: str = "openid fhirUser user/*.rs") -> TestClient:
    token = code_flow(c, "app", scope, user)
    assert token.status_code == 200, token.text
    client = TestClient(c.app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def exported_ids(c: TestClient, manifest: dict[str, Any]) -> set[str]:
    return {f"{i['type']}/{orjson.loads(line)['id']}" for i in manifest["output"]
            for line in lines(c, i["url"])}  # fmt: skip


def test_an_export_holds_what_the_caller_may_see(hospitals: TestClient) -> None:
    a = bearer(hospitals, "dra")
    manifest = finish(a, kick_off(a, "/fhir/Patient/$export"))
    assert exported_ids(a, manifest) == {"Patient/pa", "Observation/oa"}
    system = finish(a, kick_off(a, "/fhir/$export", _type="Patient,Observation,Organization"))
    assert exported_ids(a, system) == {"Patient/pa", "Observation/oa", "Organization/ha",
                                       "Organization/hb"}  # fmt: skip
    # a type no scope permits: 403 when asked for, left out otherwise
    only_patients = bearer(hospitals, "dra", "openid fhirUser user/Patient.rs")
    r = only_patients.get("/fhir/$export", params={"_type": "Observation"}, headers=ASYNC)
    assert r.status_code == 403, r.text
    manifest = finish(only_patients, kick_off(only_patients, "/fhir/Patient/$export"))
    assert exported_ids(only_patients, manifest) == {"Patient/pa"}


def test_a_status_url_or_file_of_another_caller_is_404(hospitals: TestClient) -> None:
    a, b = bearer(hospitals, "dra"), bearer(hospitals, "drb")
    location = kick_off(a, "/fhir/Patient/$export")
    manifest = finish(a, location)
    url = manifest["output"][0]["url"]
    for other in (b, hospitals):  # another user; an anonymous request (auth is off here)
        assert other.get(location).status_code == 404
        assert other.get(url).status_code == 404
        assert other.delete(location).status_code == 404
    assert a.get(url).status_code == 200  # still there for its owner
    # the same user with a new token (another sign-in) is the same caller
    assert bearer(hospitals, "dra").get(url).status_code == 200


# --- a job survives a restart of the server --------------------------------------------------


def _serve(database: Path, port: int, exports: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_DEMO_ON_EMPTY": "false",
           "FHIR_SERVER_EXPORT_BATCH": "1", "FHIR_SERVER_EXPORT_DIR": str(exports),
           "FHIR_SERVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/fhir"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port), "--database",
         str(database)], env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_serving(f"http://127.0.0.1:{port}/health")
    except AssertionError:
        proc.kill()
        raise
    return proc


@pytest.mark.slow  # two server processes, one killed: `make test-slow`
def test_an_export_survives_a_restart_mid_job(tmp_path: Path) -> None:
    """Checkpoints after every resource (export_batch=1) make the job long enough to kill the
    server while it runs; a new server process resumes it from its last checkpoint, and the
    files hold every resource exactly once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    database, exports = tmp_path / "fhir.db", tmp_path / "exports"
    base = f"http://127.0.0.1:{port}"
    proc = _serve(database, port, exports)
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            counts = load_sample(c.post)
            location = kick_off(c, "/fhir/$export", _type=",".join(sorted(counts)))
            progress = ""
            deadline = time.time() + 60
            while time.time() < deadline:
                r = c.get(location)
                assert r.status_code == 202, "the job finished before it could be interrupted"
                progress = r.headers["x-progress"]
                if progress[:1].isdigit() and not progress.startswith("0%"):
                    break
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # mid-job, no chance to clean up
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(database) as db:
        status, checkpoint = db.execute("SELECT status, progress FROM export_job").fetchone()
    assert status == "running" and 0 < orjson.loads(checkpoint)["done"] < sum(counts.values())
    proc = _serve(database, port, exports)
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            manifest = finish(c, location)
            exported: Counter[str] = Counter()
            for item in manifest["output"]:
                got = lines(c, item["url"])
                ids = [orjson.loads(line)["id"] for line in got]
                assert len(ids) == len(set(ids)) == item["count"]  # each once, none torn
                for line in got[:20]:
                    read = c.get(f"/fhir/{item['type']}/{orjson.loads(line)['id']}")
                    assert read.content.rstrip(b"\n") == line
                exported[item["type"]] += len(got)
            assert exported == counts
            # the console script against the same job's server: kick off, poll, download
            out = tmp_path / "downloaded"
            assert main(["export", "--url", f"{base}/fhir", "--type", "Patient",
                         "--out", str(out)]) == 0  # fmt: skip
            (patients,) = [p for p in out.iterdir() if p.name == "Patient.ndjson"]
            assert len(patients.read_bytes().splitlines()) == counts["Patient"]
            assert orjson.loads((out / "manifest.json").read_bytes())["output"][0]["count"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
