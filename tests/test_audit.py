"""The audit trail (issue 10; security.md §4): an AuditEvent after IHE BALP for every REST
interaction, one per patient touched, write audits in the write's transaction, a hash chain
that `fhir-server audit verify` checks, and AuditEvents only the server writes."""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.audit.chain import canonical, verify
from fhir_server.services import Parts


@pytest.fixture
def client(tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """The app with the audit trail on (the `audit` setting)."""
    services = make_services(tmp_path / "fhir.db", parts, audit=True)
    app = build_app(services.settings, services)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


REST = ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest")
INTERACTION = "http://hl7.org/fhir/restful-interaction"
CONTENT = "secret-marker-in-content"


def _db(client: TestClient) -> Path:
    return Path(client.app.state.services.settings.database)  # type: ignore[attr-defined]


def events(client: TestClient) -> list[dict[str, Any]]:
    """Every AuditEvent stored, in write order, after the queued read audits are written;
    read from the database, so that looking does not add audits."""
    client.app.state.services.features["audit"].flush()  # type: ignore[attr-defined]
    with sqlite3.connect(_db(client)) as conn:
        rows = conn.execute(
            "SELECT h.json FROM audit_chain c JOIN history h ON h.type = c.type "
            "AND h.id = c.id AND h.version = c.version ORDER BY c.seq"
        ).fetchall()
    return [orjson.loads(r[0]) for r in rows]


def subtype(event: dict[str, Any]) -> str:
    coding = event["subtype"][0]
    assert coding["system"] == INTERACTION
    code: str = coding["code"]
    return code


def whats(event: dict[str, Any], role: str) -> list[str]:
    return [
        e["what"]["reference"]
        for e in event["entity"]
        if e.get("role", {}).get("code") == role and "reference" in e.get("what", {})
    ]


def patient(client: TestClient, family: str = "Li") -> str:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
    assert r.status_code == 201
    pid: str = r.json()["id"]
    return pid


def observation(client: TestClient, pid: str) -> str:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": CONTENT},
        "subject": {"reference": f"Patient/{pid}"},
    }
    r = client.post("/fhir/Observation", json=body)
    assert r.status_code == 201
    oid: str = r.json()["id"]
    return oid


def new_events(client: TestClient, before: int) -> list[dict[str, Any]]:
    return events(client)[before:]


def test_read_is_audited_with_the_version_read_and_its_patient(client: TestClient) -> None:
    pid = patient(client)
    oid = observation(client, pid)
    before = len(events(client))
    assert client.get(f"/fhir/Observation/{oid}").status_code == 200
    [event] = new_events(client, before)
    assert (event["type"]["system"], event["type"]["code"]) == REST
    assert subtype(event) == "read" and event["action"] == "R" and event["outcome"] == "0"
    # BALP Read: data entity = the version read (role 4), patient entity (type 1, role 1)
    assert whats(event, "4") == [f"Observation/{oid}/_history/1"]
    assert whats(event, "1") == [f"Patient/{pid}"]
    # agents: client (Destination of a read, with its address), server (Source), user
    roles = [a["type"]["coding"][0]["code"] for a in event["agent"] if "coding" in a["type"]]
    assert roles[:2] == ["110152", "110153"]
    assert event["agent"][0]["network"]["address"] == "testclient"
    assert event["agent"][1]["network"]["address"] == "http://testserver/fhir"
    assert [a["requestor"] for a in event["agent"]] == [False, False, True]
    assert event["agent"][2]["who"]["display"] == "anonymous"
    assert event["source"]["observer"]["type"] == "Device"
    assert CONTENT not in orjson.dumps(event).decode()  # never resource content


def test_writes_are_audited_in_the_same_transaction(client: TestClient) -> None:
    """No flush: write audits are stored with the change, not queued."""
    pid = patient(client)
    with sqlite3.connect(_db(client)) as conn:
        rows = conn.execute("SELECT json FROM resource WHERE type = 'AuditEvent'").fetchall()
    made = [orjson.loads(r[0]) for r in rows]
    assert [(subtype(e), e["action"], whats(e, "4")) for e in made] == [
        ("create", "C", [f"Patient/{pid}/_history/1"])
    ]
    assert whats(made[0], "1") == [f"Patient/{pid}"]
    before = len(events(client))
    oid = observation(client, pid)
    body = {"resourceType": "Patient", "id": pid, "active": True}
    assert client.put(f"/fhir/Patient/{pid}", json=body).status_code == 200
    patch = [{"op": "add", "path": "/gender", "value": "female"}]
    headers = {"Content-Type": "application/json-patch+json"}
    assert client.patch(f"/fhir/Patient/{pid}", json=patch, headers=headers).status_code == 200
    assert client.delete(f"/fhir/Observation/{oid}").status_code == 200
    got = [(subtype(e), e["action"], whats(e, "4"), whats(e, "1"))
           for e in new_events(client, before)]  # fmt: skip
    assert got == [
        ("create", "C", [f"Observation/{oid}/_history/1"], [f"Patient/{pid}"]),
        ("update", "U", [f"Patient/{pid}/_history/2"], [f"Patient/{pid}"]),
        ("update", "U", [f"Patient/{pid}/_history/3"], [f"Patient/{pid}"]),
        # a deletion's patient comes from the version it deleted
        ("delete", "D", [f"Observation/{oid}/_history/2"], [f"Patient/{pid}"]),
    ]


def test_transaction_audits_its_writes_once_per_patient_and_its_reads(
    client: TestClient,
) -> None:
    """BALP: one event per patient; for a bundle, one per patient compartment its writes
    touched (entities: every version written in it) and one for writes in no compartment."""
    pid = patient(client)
    before = len(events(client))
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "urn:uuid:1"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:2", "resource": obs,
             "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Organization", "name": "O"},
             "request": {"method": "POST", "url": "Organization"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
        ],
    }  # fmt: skip
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200
    made = [e["response"]["location"] for e in r.json()["entry"][:3]]
    new_patient = made[0].rsplit("/_history", 1)[0]
    got = new_events(client, before)
    assert [(subtype(e), e["action"], whats(e, "1")) for e in got] == [
        ("transaction", "E", [new_patient]),
        ("transaction", "E", []),
        ("read", "R", [f"Patient/{pid}"]),
        ("read", "R", ["Patient/missing"]),
    ]
    assert whats(got[0], "4") == made[:2] and whats(got[1], "4") == made[2:]
    lifecycle = {e["lifecycle"]["code"] for e in got[0]["entity"] if "lifecycle" in e}
    assert lifecycle == {"1"}  # dicom-audit-lifecycle: Origination / Creation
    assert [e["outcome"] for e in got] == ["0", "0", "0", "4"]


def test_transaction_redone_under_the_lock_is_audited_per_patient(client: TestClient) -> None:
    """A transaction with an update takes the general path: still one event per patient."""
    pid = patient(client)
    before = len(events(client))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": pid, "active": True},
         "request": {"method": "PUT", "url": f"Patient/{pid}"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                      "subject": {"reference": f"Patient/{pid}"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}  # fmt: skip
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200
    [event] = new_events(client, before)
    assert subtype(event) == "transaction" and whats(event, "1") == [f"Patient/{pid}"]
    assert sorted(whats(event, "4")) == sorted(e["response"]["location"]
                                               for e in r.json()["entry"])  # fmt: skip
    codes = sorted(e["lifecycle"]["code"] for e in event["entity"] if "lifecycle" in e)
    assert codes == ["1", "3"]  # a creation and an amendment


def test_search_records_the_raw_query_and_one_event_per_patient(client: TestClient) -> None:
    a, b = patient(client, "A"), patient(client, "B")
    observation(client, a)
    observation(client, b)
    before = len(events(client))
    query = "code:text=secret&_count=10"
    assert client.get(f"/fhir/Observation?{query}").json()["total"] == 2
    got = new_events(client, before)
    assert {whats(e, "1")[0] for e in got} == {f"Patient/{a}", f"Patient/{b}"}
    for event in got:
        assert subtype(event) == "search-type" and event["action"] == "E"
        [entity] = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
        assert base64.b64decode(entity["query"]).decode() == query
        assert CONTENT not in orjson.dumps(event).decode()


def test_failed_access_is_audited_with_the_outcome_diagnostics(client: TestClient) -> None:
    before = len(events(client))
    r = client.get("/fhir/Patient/nobody")
    assert r.status_code == 404
    [event] = new_events(client, before)
    assert subtype(event) == "read" and event["outcome"] == "4"
    assert r.json()["issue"][0]["diagnostics"] in event["outcomeDesc"]
    assert whats(event, "1") == ["Patient/nobody"]  # who was asked about (BOLA detection)
    bad = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": 7})
    assert bad.status_code == 400
    [failed] = new_events(client, before + 1)
    assert subtype(failed) == "create" and failed["action"] == "C" and failed["outcome"] == "4"


def test_history_and_operations_are_audited(client: TestClient) -> None:
    pid = patient(client)
    before = len(events(client))
    assert client.get(f"/fhir/Patient/{pid}/_history").status_code == 200
    body = {"resourceType": "Patient", "name": [{"family": "X"}]}
    assert client.post("/fhir/Patient/$validate", json=body).status_code == 200
    history, operation = new_events(client, before)
    assert subtype(history) == "history-instance" and whats(history, "1") == [f"Patient/{pid}"]
    assert subtype(operation) == "operation" and operation["action"] == "E"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_clients_cannot_write_audit_events(client: TestClient, method: str) -> None:
    patient(client)
    [event] = events(client)
    aid = event["id"]
    url = "/fhir/AuditEvent" if method == "POST" else f"/fhir/AuditEvent/{aid}"
    body: Any = {**event, "outcome": "8"} if method != "PATCH" else [
        {"op": "replace", "path": "/outcome", "value": "8"}
    ]
    if method == "POST":
        body.pop("id")
    headers = {"Content-Type": "application/json-patch+json"} if method == "PATCH" else {}
    r = client.request(method, url, json=None if method == "DELETE" else body, headers=headers)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/AuditEvent/{aid}").json()["meta"]["versionId"] == "1"
    made = events(client)
    count = len(made)  # the refusal was audited too (outcome 4)
    wanted = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    assert [subtype(e) for e in made if e["outcome"] == "4"] == [wanted]
    assert verify(sqlite3.connect(_db(client))) == (count, None)


def test_a_transaction_cannot_create_audit_events(client: TestClient) -> None:
    patient(client)
    forged = {k: v for k, v in events(client)[0].items() if k not in ("id", "meta")}
    entry = {"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}}
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                   "entry": [entry]})  # fmt: skip
    assert r.status_code == 405


def test_reading_the_audit_trail_is_audited_but_not_recursively(client: TestClient) -> None:
    patient(client)
    [created] = events(client)
    r = client.get("/fhir/AuditEvent?action=C")
    assert r.status_code == 200 and r.json()["total"] == 1  # searchable as a resource
    assert client.get(f"/fhir/AuditEvent/{created['id']}").status_code == 200
    search, read = events(client)[1:]
    assert subtype(search) == "search-type" and subtype(read) == "read"
    assert whats(read, "4") == [f"AuditEvent/{created['id']}/_history/1"]
    assert len(events(client)) == 3  # writing those two audits was not audited again


def test_every_audit_event_is_a_valid_r4_audit_event(client: TestClient) -> None:
    """The server stores its AuditEvents without running the validator on each (trail.py):
    every kind it writes must pass it."""
    pid = patient(client)
    oid = observation(client, pid)
    client.get(f"/fhir/Observation/{oid}")
    client.get("/fhir/Observation?subject=Patient/" + pid)
    client.get("/fhir/Patient/nobody")
    client.get(f"/fhir/Patient/{pid}/_history")
    client.delete(f"/fhir/Observation/{oid}")
    entry = {"resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}}  # fmt: skip
    client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    validator = client.app.state.services.validator  # type: ignore[attr-defined]
    made = events(client)
    assert len({subtype(e) for e in made}) == 6
    for event in made:
        validator(event)


def _mixed_traffic(client: TestClient) -> None:
    pid = patient(client)
    oid = observation(client, pid)
    client.get(f"/fhir/Observation/{oid}")
    client.get(f"/fhir/Patient?_id={pid}")
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True})
    client.get("/fhir/Patient/nobody")
    client.delete(f"/fhir/Observation/{oid}")
    assert len(events(client)) >= 7


def _cli_verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "audit", "verify", "--database", str(db)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_chain_verifies_after_mixed_traffic_and_finds_an_edit(client: TestClient) -> None:
    _mixed_traffic(client)
    db, count = _db(client), len(events(client))
    ok = _cli_verify(db)
    assert ok.returncode == 0 and ok.stdout.strip() == f"ok: {count} events"
    with sqlite3.connect(db) as conn:  # an auditor's nightmare: outcome 4 rewritten to 0
        [(rtype, rid, version)] = conn.execute(
            "SELECT type, id, version FROM audit_chain WHERE seq = 4"
        ).fetchall()
        for table in ("history", "resource"):
            conn.execute(
                f"UPDATE {table} SET json = CAST(replace(CAST(json AS TEXT), '\"outcome\":\"0\"',"
                f" '\"outcome\":\"4\"') AS BLOB) WHERE type = ? AND id = ?", (rtype, rid)
            )  # fmt: skip
    broken = _cli_verify(db)
    assert broken.returncode == 1
    assert f"seq 4 ({rtype}/{rid}/_history/{version})" in broken.stdout


def test_chain_finds_a_deleted_event(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:
        rid = conn.execute("SELECT id FROM audit_chain WHERE seq = 3").fetchone()[0]
        for table in ("history", "resource", "audit_chain"):
            conn.execute(f"DELETE FROM {table} WHERE type = 'AuditEvent' AND id = ?", (rid,))
    count, broken = verify(sqlite3.connect(db))
    assert count == 2 and broken is not None and "seq 4" in broken


def test_chain_finds_reordered_events(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:  # swap which events seq 2 and 3 name
        two, three = (conn.execute("SELECT type, id, version FROM audit_chain WHERE seq = ?",
                                   (s,)).fetchone() for s in (2, 3))  # fmt: skip
        conn.execute("UPDATE audit_chain SET id = ? WHERE seq = 2", (three[1],))
        conn.execute("UPDATE audit_chain SET id = ? WHERE seq = 3", (two[1],))
    count, broken = verify(sqlite3.connect(db))
    assert count == 1 and broken is not None and "seq 2" in broken and "hash mismatch" in broken


def test_chain_finds_an_inserted_event(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, json) "
            "VALUES ('AuditEvent', 'forged', 1, '2020-01-01T00:00:00Z', 0, 'POST', '{}')"
        )
    count, broken = verify(sqlite3.connect(db))
    assert broken == "AuditEvent/forged/_history/1 is stored but not in the chain"


def test_canonical_json_is_jcs_for_audit_content() -> None:
    """RFC 8785 §3.2.3 sorts keys, §3.2.2.2 escapes strings; worked out by hand."""
    value = {"b": "\u00e9\n\u0001\"", "a": [True, None, 12], "A": {"z": "", "y": 0}}
    assert canonical(value) == (
        b'{"A":{"y":0,"z":""},"a":[true,null,12],"b":"\xc3\xa9\\n\\u0001\\""}'
    )
    with pytest.raises(ValueError):
        canonical({"value": 1.5})  # ECMAScript number form: not what orjson writes
