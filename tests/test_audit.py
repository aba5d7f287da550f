"""The audit trail (issue 10; security.md §4): an AuditEvent after IHE BALP for every REST
interaction, one per patient touched, write audits in the write's transaction, a hash chain
that `fhir-server audit verify` checks, and AuditEvents only the server writes."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import audit_tables, make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.audit.chain import verify
from fhir_server.audit.event import INDEXED, versions
from fhir_server.audit.record import encode
from fhir_server.errors import FhirError, error
from fhir_server.search.index import index_rows
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
    """Every AuditEvent stored, in the order of the records they were expanded from, after
    the queued reads are recorded and every record expanded; read from the database, so that
    looking does not add audits."""
    client.app.state.services.features["audit"].flush()  # type: ignore[attr-defined]
    return stored_events(_db(client))


def stored_events(db: Path) -> list[dict[str, Any]]:
    """The AuditEvents in the database, in record order (`<record id>-<n>`, record.py)."""
    with sqlite3.connect(db) as conn:
        made = []
        for (data,) in conn.execute("SELECT record FROM audit_record ORDER BY seq"):
            rows = conn.execute(
                "SELECT json FROM versions WHERE type = 'AuditEvent' AND id LIKE ? "
                "ORDER BY length(id), id",
                (orjson.loads(data)["id"] + "-%",),
            ).fetchall()
            made += [orjson.loads(r[0]) for r in rows]
    return made


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


def records(client: TestClient) -> list[dict[str, Any]]:
    """The audit records stored, in chain order, as they are (no flush)."""
    with sqlite3.connect(_db(client)) as conn:
        rows = conn.execute("SELECT record FROM audit_record ORDER BY seq").fetchall()
    return [orjson.loads(r[0]) for r in rows]


def test_reads_whose_chaining_failed_are_chained_at_the_next_run(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's transaction fails (a lock timeout; on MongoDB another process moved the
    chain head): the reads it was chaining are kept and chained by the next run."""
    services = client.app.state.services  # type: ignore[attr-defined]
    trail = services.features["audit"]
    trail._stop.set()  # no background runs: this test runs the writer itself
    trail._wake.set()
    trail._thread.join()
    pid = patient(client)
    trail.flush()
    before = len(records(client))
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200

    def fail(*args: Any) -> None:
        raise error(503, "transient", "the chain head moved")

    with monkeypatch.context() as m:
        m.setattr(services.store.audit, "append", fail)
        with pytest.raises(FhirError):
            trail.flush()
    assert len(records(client)) == before
    trail.flush()
    [read] = records(client)[before:]
    assert read["do"] == "read" and read["targets"] == [{"what": f"Patient/{pid}/_history/1"}]


def test_writes_are_recorded_in_the_same_transaction(client: TestClient) -> None:
    """No flush: a write's record is stored with the change; its AuditEvent is expanded
    from the record afterwards. A write refused inside its transaction leaves no record of
    a change (only, once the reads are written, the failed request)."""
    pid = patient(client)
    [made] = records(client)
    assert (made["kind"], made["do"], made["outcome"]) == ("rest", "create", "0")
    assert made["targets"] == [{"what": f"Patient/{pid}/_history/1"}]
    assert made["patients"] == [f"Patient/{pid}"]
    [event] = events(client)
    assert (subtype(event), event["action"], whats(event, "4"), whats(event, "1")) == (
        "create", "C", [f"Patient/{pid}/_history/1"], [f"Patient/{pid}"]
    )  # fmt: skip
    stale = {"If-Match": 'W/"7"'}
    body = {"resourceType": "Patient", "id": pid}
    assert client.put(f"/fhir/Patient/{pid}", json=body, headers=stale).status_code == 412
    assert [r["do"] for r in records(client) if r["outcome"] == "0"] == ["create"]
    before = len(events(client))
    assert [subtype(e) for e in events(client)[-1:]] == ["update"]  # the 412, outcome 4
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
    found = verify(audit_tables(_db(client)))
    assert (found.events, found.broken) == (count, None)


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


def _record(db: Path, seq: int) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT record FROM audit_record WHERE seq = ?", (seq,)).fetchone()
    record: dict[str, Any] = orjson.loads(data)
    return record


def _rewrite(db: Path, rid: str, old: str, new: str) -> None:
    """Change an AuditEvent's stored JSON (its one version, stored in `resource`: migration
    9), as someone with write access to the file would."""
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE resource SET json = CAST(replace(CAST(json AS TEXT), ?, ?) AS BLOB) "
            "WHERE type = 'AuditEvent' AND id = ?", (old, new, rid)
        ).rowcount  # fmt: skip
        assert changed == 1


def test_chain_verifies_after_mixed_traffic_and_finds_an_edited_audit_event(
    client: TestClient,
) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:
        records = conn.execute("SELECT count(*) FROM audit_record").fetchone()[0]
    ok = _cli_verify(db)
    assert ok.returncode == 0
    assert ok.stdout.strip() == f"ok: {records} records, {len(events(client))} AuditEvents"
    # an auditor's nightmare: the failed read of Patient/nobody (outcome 4) made a success
    [failed] = [e for e in events(client) if e["outcome"] == "4"]
    _rewrite(db, failed["id"], '"outcome":"4"', '"outcome":"0"')
    broken = _cli_verify(db)
    assert broken.returncode == 1
    assert f"AuditEvent/{failed['id']} differs from its record" in broken.stdout


def test_chain_finds_an_edited_record(client: TestClient) -> None:
    """The record and its AuditEvent rewritten alike (the patient's reference): the record's
    hash no longer links."""
    _mixed_traffic(client)
    db = _db(client)
    record = _record(db, 2)  # the Observation's creation
    [pid] = record["patients"]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE audit_record SET record = CAST(replace(CAST(record AS TEXT), ?, ?) AS BLOB) "
            "WHERE seq = 2", (pid, "Patient/someone-else")
        )  # fmt: skip
    _rewrite(db, record["id"] + "-1", pid, "Patient/someone-else")
    found = verify(audit_tables(db))
    assert found.records == 1 and found.broken is not None
    assert found.broken.startswith("record seq 2: hash mismatch")


def test_chain_finds_a_deleted_audit_event_and_a_deleted_record(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    rid = _record(db, 3)["id"] + "-1"
    with sqlite3.connect(db) as conn:
        for table in ("history", "resource"):
            conn.execute(f"DELETE FROM {table} WHERE type = 'AuditEvent' AND id = ?", (rid,))
    assert verify(audit_tables(db)).broken == f"record seq 3: AuditEvent/{rid} is missing"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_record WHERE seq = 3")
    found = verify(audit_tables(db))
    assert found.records == 2 and found.broken is not None and "seq 4" in found.broken


def test_chain_finds_reordered_records(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:  # swap records 2 and 3 (and their hashes)
        two, three = (conn.execute("SELECT record, hash FROM audit_record WHERE seq = ?",
                                   (s,)).fetchone() for s in (2, 3))  # fmt: skip
        conn.execute("UPDATE audit_record SET record = ?, hash = ? WHERE seq = 2", three)
        conn.execute("UPDATE audit_record SET record = ?, hash = ? WHERE seq = 3", two)
    found = verify(audit_tables(db))
    assert found.records == 1 and found.broken is not None
    assert "seq 2" in found.broken and "hash mismatch" in found.broken


def test_chain_finds_an_inserted_audit_event(client: TestClient) -> None:
    _mixed_traffic(client)
    db = _db(client)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, json) "
            "VALUES ('AuditEvent', 'forged', 1, '2020-01-01T00:00:00Z', 0, 'POST', '{}')"
        )
    found = verify(audit_tables(db))
    assert found.broken == "AuditEvent/forged/_history/1 is stored but not in the chain"


def test_encoding_is_jcs_for_record_content() -> None:
    """RFC 8785 §3.2.3 sorts keys, §3.2.2.2 escapes strings; worked out by hand."""
    value = {"b": "\u00e9\n\u0001\"", "a": [True, None, 12], "A": {"z": "", "y": 0}}
    assert encode(value) == (
        b'{"A":{"y":0,"z":""},"a":[true,null,12],"b":"\xc3\xa9\\n\\u0001\\""}'
    )


def test_a_restart_expands_the_records_a_crash_left_pending(
    tmp_path: Path, parts: Parts
) -> None:
    """The writer dies before it expands a write's record, and the process with it (nothing
    written at shutdown): the record is in the chain, its AuditEvent is not. The next server
    on the file expands it by itself, and the trail verifies."""
    db = tmp_path / "fhir.db"
    services = make_services(db, parts)  # the defaults: audit on
    with TestClient(build_app(services.settings, services)) as c:
        trail = c.app.state.services.features["audit"]  # type: ignore[attr-defined]
        trail._stop.set()
        trail._wake.set()
        trail._thread.join()
        c.app.state.services.hooks.on_close.remove(trail.close)  # type: ignore[attr-defined]
        pid = patient(c)
    found = verify(audit_tables(db))
    assert (found.records, found.events, found.pending, found.broken) == (1, 0, 1, None)
    again = make_services(db, parts)
    with TestClient(build_app(again.settings, again)):
        deadline = time.monotonic() + 10
        while not stored_events(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        [event] = stored_events(db)
    assert subtype(event) == "create" and whats(event, "1") == [f"Patient/{pid}"]
    found = verify(audit_tables(db))
    assert (found.pending, found.broken) == (0, None) and found.events >= 1


def test_the_trail_continues_a_schema_4_chain(client: TestClient) -> None:
    """A database whose AuditEvents were chained one by one (schema 4, audit_chain): the
    records continue that chain, and verify checks both; a changed old event is found."""
    db = _db(client)
    old = {"resourceType": "AuditEvent", "id": "old-1", "recorded": "2026-01-01T00:00:00Z",
           "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
           "type": {"code": "rest"}, "outcome": "0", "agent": [{"requestor": True}],
           "source": {"observer": {"display": "x"}}}  # fmt: skip
    # RFC 8785 by hand: sorted keys, no whitespace (ASCII strings only)
    jcs = json.dumps(old, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(bytes(32) + jcs).hexdigest()
    with sqlite3.connect(db) as conn:
        conn.execute(  # the current version: stored in `resource` alone (migration 9)
            "INSERT INTO resource (type, id, version, last_updated, deleted, method, json) "
            "VALUES ('AuditEvent', 'old-1', 1, '2026-01-01T00:00:00Z', 0, 'POST', ?)", (jcs,)
        )
        conn.execute("INSERT INTO audit_chain VALUES (1, 'AuditEvent', 'old-1', 1, ?)", (digest,))
    patient(client)
    events(client)
    first = _record(db, 1)
    with sqlite3.connect(db) as conn:
        data, link = conn.execute("SELECT record, hash FROM audit_record WHERE seq = 1").fetchone()
    assert first["do"] == "create"
    assert link == hashlib.sha256(bytes.fromhex(digest) + data).hexdigest()
    found = verify(audit_tables(db))
    assert (found.events, found.broken) == (2, None)
    _rewrite(db, "old-1", '"outcome":"0"', '"outcome":"4"')
    broken = verify(audit_tables(db)).broken
    assert broken is not None and broken.startswith("seq 1 (AuditEvent/old-1/_history/1)")


def test_index_rows_are_those_the_search_parameters_extract(client: TestClient) -> None:
    """The AuditEvents' index rows are built from their known shape (event.py), not by the
    generic extractors: for every kind of event, both give the same rows."""
    pid = patient(client)
    client.get(f"/fhir/Patient/{pid}")
    client.get("/fhir/Observation?subject=Patient/" + pid)
    client.get("/fhir/Patient/nobody")
    client.delete(f"/fhir/Patient/{pid}")
    entry = {"resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}}  # fmt: skip
    client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    events(client)
    registry = client.app.state.services.registry  # type: ignore[attr-defined]
    with sqlite3.connect(_db(client)) as conn:
        made = [orjson.loads(r[0]) for r in conn.execute("SELECT record FROM audit_record")]
    assert {r["kind"] for r in made} == {"rest", "bundle"}
    glass = {**made[0], "by": {**made[0]["by"], "btg": "cardiac arrest"}}  # purpose rows too
    for record in [*made, glass]:
        for version in versions(record, "2026-01-02T03:04:05.678901Z"):
            assert version.stored.json is not None
            event = orjson.loads(version.stored.json)
            expected = index_rows("AuditEvent", event, registry, INDEXED)
            assert {t: sorted(r, key=repr) for t, r in version.index_rows.items()} == {
                t: sorted(r, key=repr) for t, r in expected.items()
            }
