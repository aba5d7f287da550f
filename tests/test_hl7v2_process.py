"""The HL7 v2 listener as users run it: `fhir-server hl7 listen` (killed after the ACK and before
the mapping, then restarted), `fhir-server serve --hl7` beside the HTTP API, and the console
commands `hl7 send`, `hl7 replay` and `hl7 check`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import _TEMPLATE

from fhir_server.app import open_services
from fhir_server.cli import main
from fhir_server.interactions.reindex import reindex
from fhir_server.services import Parts
from fhir_server.settings import Settings
from integrations.hl7v2 import mllp
from integrations.hl7v2.inbox import Arrival
from integrations.hl7v2.mapper_process import MapperProcess
from integrations.hl7v2.mapping import Plan
from integrations.hl7v2.worker import CHANNEL, planned_after

SAMPLES = Path(__file__).resolve().parent.parent / "integrations" / "hl7v2" / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def database(tmp_path: Path, parts: Parts) -> Path:
    """A fresh database holding the guide already (a copy of the tests' template)."""
    path = tmp_path / "fhir.db"
    shutil.copyfile(_TEMPLATE[0], path)
    return path


def start(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FHIR_SERVER_DEMO_ON_EMPTY": "false", "FHIR_SERVER_AUTH": "off"}
    return subprocess.Popen([sys.executable, "-m", "fhir_server.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database, timeout=30) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for proc in running:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow  # three processes, one killed: `make test-slow`
def test_a_message_acknowledged_before_a_crash_is_mapped_after_the_restart(
    database: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    # receive only: the ACK is sent once the message is committed, mapping waits
    listener = start("hl7", "listen", "--port", str(port), "--database", str(database),
                     "--receive-only")  # fmt: skip
    processes.append(listener)
    wait_port(port, listener)
    sent = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "hl7", "send", "--port", str(port),
         str(SAMPLES / "adt_a01_admit.hl7"), str(SAMPLES / "oru_r01_cbc.hl7")],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    printed = sent.stdout.decode()
    assert "# adt_a01_admit.hl7: AA" in printed and "MSA|AA|LIS20240302-000123" in printed
    listener.send_signal(signal.SIGKILL)  # the crash: after the ACK, before any mapping
    listener.wait(10)
    assert query(database, "SELECT status FROM inbox ORDER BY seq") == [("received",)] * 2
    assert query(database, "SELECT count(*) FROM resource WHERE type = 'Patient'") == [(0,)]

    restarted = start("hl7", "listen", "--port", str(port), "--database", str(database))
    processes.append(restarted)
    deadline = time.time() + 60
    while query(database, "SELECT count(*) FROM inbox WHERE status = 'mapped'") != [(2,)]:
        assert time.time() < deadline, "not mapped after the restart"
        time.sleep(0.1)
    assert query(database, "SELECT count(*) FROM resource WHERE type IN ('Patient', "
                           "'DiagnosticReport', 'Observation')") == [(1 + 1 + 5,)]  # fmt: skip
    restarted.terminate()
    assert restarted.wait(20) == 0
    assert b"HL7 v2 listener stopped" in (restarted.stderr.read() if restarted.stderr else b"")


@pytest.mark.slow  # a `serve --hl7` process started and stopped: `make test-slow`
def test_serve_runs_the_listener_beside_the_http_api(
    database: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    http, mllp_port = free_port(), free_port()
    server = start("serve", "--port", str(http), "--database", str(database), "--hl7",
                   "--hl7-port", str(mllp_port))  # fmt: skip
    processes.append(server)
    wait_port(mllp_port, server)
    with mllp.Client("127.0.0.1", mllp_port) as client:
        reply = client.exchange((SAMPLES / "adt_a28_add_person.hl7").read_bytes()
                                .replace(b"\n", b"\r"))  # fmt: skip
    assert b"MSA|AA|ADT20240306-0040" in reply
    wait_port(http, server)
    deadline = time.time() + 60
    found: list[object] = []
    while not found:
        assert time.time() < deadline, "the patient never appeared over HTTP"
        bundle = httpx.get(f"http://127.0.0.1:{http}/fhir/Patient",
                           params={"identifier": "0009990001"}).json()  # fmt: skip
        found = bundle.get("entry", [])
        time.sleep(0.1)
    server.terminate()  # SIGTERM, as a service manager stops it
    server.wait(30)
    deadline = time.time() + 10
    while time.time() < deadline:  # the listener goes with the server
        try:
            socket.create_connection(("127.0.0.1", mllp_port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the MLLP listener outlived `serve`")


@pytest.mark.slow  # a listener process and its mapper process: `make test-slow`
def test_the_mapper_process_answers_the_acks_that_wait_for_the_mapping(
    database: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """`--ack-mode mapped`: the ACK waits for the mapper, which runs in a process of its own;
    its outcome crosses back to the listener (AA once mapped, AE naming the field)."""
    port = free_port()
    listener = start("hl7", "listen", "--port", str(port), "--database", str(database),
                     "--ack-mode", "mapped")  # fmt: skip
    processes.append(listener)
    wait_port(port, listener)
    good = (SAMPLES / "adt_a28_add_person.hl7").read_bytes().replace(b"\n", b"\r")
    bad = good.replace(b"|20010203|", b"|2001020|").replace(b"ADT20240306-0040",
                                                            b"ADT20240306-0041")  # fmt: skip
    with mllp.Client("127.0.0.1", port, timeout=60) as client:
        started = time.time()
        ok = client.exchange(good).decode()
        refused = client.exchange(bad).decode()
    # long before hl7_read_timeout_seconds (30), which would answer "mapping takes longer"
    assert time.time() - started < 25
    assert "MSA|AA|ADT20240306-0040" in ok and "takes longer" not in ok
    assert "MSA|AE|ADT20240306-0041" in refused
    assert "'2001020' is not a date/time" in refused
    assert query(database, "SELECT status FROM inbox ORDER BY seq") == [("mapped",), ("error",)]
    listener.terminate()
    assert listener.wait(20) == 0
    stderr = listener.stderr.read() if listener.stderr else b""
    assert b"HL7 v2 mapper ready" in stderr and b"HL7 v2 listener stopped" in stderr


def test_replay_maps_what_a_receive_only_listener_kept(
    database: Path, processes: list[subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    listener = start("hl7", "listen", "--port", str(port), "--database", str(database),
                     "--receive-only")  # fmt: skip
    processes.append(listener)
    wait_port(port, listener)
    bad = (SAMPLES / "adt_a28_add_person.hl7").read_bytes().replace(b"|20010203|", b"|2001020|")
    with mllp.Client("127.0.0.1", port) as client:
        client.exchange(bad.replace(b"\n", b"\r"))
        client.exchange((SAMPLES / "siu_s12_appointment.hl7").read_bytes().replace(b"\n", b"\r"))
    listener.terminate()
    listener.wait(20)
    assert main(["hl7", "replay", "--status", "received", "--database", str(database)]) == 1
    out = capsys.readouterr()
    assert "ADT^A28 ADT20240306-0040: error: PID-7: '2001020' is not a date/time" in out.out
    assert "SIU^S12 SCH20240304-0007: mapped" in out.out
    assert "replayed 2: 1 mapped, 1 failed" in out.err
    assert query(database, "SELECT status FROM inbox ORDER BY seq") == [("error",), ("mapped",)]


def test_check_validates_with_hl7apy_and_keeps_z_segments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["hl7", "check", str(SAMPLES / "oru_r01_cbc.hl7")]) == 0
    out = capsys.readouterr().out
    assert "ZLB|1|迈瑞BC-6800|急诊 kept as sent" in out and "oru_r01_cbc.hl7: valid" in out
    assert main(["hl7", "check", str(SAMPLES / "malformed.hl7")]) == 1
    assert "does not start with an MSH segment" in capsys.readouterr().out


def stored_rows(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every index and text row, by the resource it belongs to (type, id), not its row id."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for table in ("string", "token", "reference", "date", "number", "quantity", "uri"):
        rows = query(database, f"SELECT r.type, r.id, i.* FROM idx_{table} i "
                               "JOIN resource r ON r.rid = i.rid")  # fmt: skip
        out[table] = sorted(((t, i, *rest[1:]) for t, i, *rest in rows), key=repr)
    out["text"] = sorted(query(database, "SELECT r.type, r.id, f.narrative, f.content FROM "
                                         "fulltext f JOIN resource r ON r.rid = f.rowid"),
                         key=repr)  # fmt: skip
    return out


def test_the_rows_planned_before_the_ids_are_those_a_reindex_makes(
    database: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The planning process indexes a new resource before its references have ids (all but
    the parameters that follow references); the rows stored must be exactly those the write
    path makes from the stored resource, which `reindex` does."""
    port = free_port()
    listener = start("hl7", "listen", "--port", str(port), "--database", str(database))
    processes.append(listener)
    wait_port(port, listener)
    files = sorted(str(f) for f in SAMPLES.glob("*.hl7"))
    sent = subprocess.run([sys.executable, "-m", "fhir_server.cli", "hl7", "send", "--port",
                           str(port), *files], capture_output=True, timeout=120)  # fmt: skip
    assert sent.returncode in (0, 1), sent.stderr  # malformed.hl7 is refused (AR)
    deadline = time.time() + 60
    while query(database, "SELECT count(*) FROM inbox WHERE status = 'received'") != [(0,)]:
        assert time.time() < deadline, "not mapped in a minute"
        time.sleep(0.1)
    listener.terminate()
    assert listener.wait(20) == 0
    mapped = stored_rows(database)
    # not a comparison of nothing: the ORU's Observations, by their references and values
    observation = [r for r in mapped["reference"] if r[0] == "Observation"]
    assert {r[3] for r in observation} >= {"patient", "subject", "encounter"}
    assert any(r[0] == "Observation" and r[3] == "value-quantity" for r in mapped["quantity"])

    services = open_services(Settings(database=database))
    try:
        for (rtype,) in query(database, "SELECT DISTINCT type FROM resource"):
            reindex(services, str(rtype))
    finally:
        services.close()
    assert stored_rows(database) == mapped


def test_a_resource_planned_again_is_indexed_by_the_parameters_in_use(database: Path) -> None:
    """The planner remembers the rows of a resource it has seen (the same patient in each of
    their messages); a SearchParameter added since (conformance resources over REST) must
    still get its rows: PID-8 `F` is Patient.gender `female`."""
    settings = Settings(database=database)
    services = open_services(settings)
    try:
        raw = (SAMPLES / "adt_a28_add_person.hl7").read_bytes().replace(b"\n", b"\r")
        services.store.inbox.receive([Arrival(CHANNEL, "HIS/HZFIRST", "ADT20240306-0040",
                                              "2024-03-06T10:00:00Z", None, "ADT^A28", raw)])

        def patient_tokens() -> set[tuple[object, ...]]:
            ((_, plan),) = planned_after(services, 0)
            assert isinstance(plan, Plan)
            (op,) = [op for op in plan.ops if op.rtype == "Patient"]
            assert op.early is not None
            return set(op.early.rows()[0]["token"])

        before = patient_tokens()
        assert not any(r[0] == "sex-at-desk" for r in before)
        assert patient_tokens() == before  # planned again: remembered
        param = {"resourceType": "SearchParameter", "id": "sex-at-desk", "status": "active",
                 "url": "https://yilian.health/fhir/SearchParameter/sex-at-desk",
                 "name": "sex-at-desk", "code": "sex-at-desk", "base": ["Patient"],
                 "type": "token", "expression": "Patient.gender",
                 "description": "gender, by another name"}  # fmt: skip
        services.parts.current = Parts.load(settings, [param])
        after = patient_tokens()
        assert ("sex-at-desk", None, "female", None) in after  # a code: no system (as gender)
        assert after - before == {r for r in after if r[0] == "sex-at-desk"}
    finally:
        services.close()


def test_the_mapper_plans_for_itself_once_the_planning_process_is_gone(database: Path) -> None:
    """The planning process killed (out of memory, say): the messages are still mapped, the
    mapper's own planning thread taking over."""
    settings = Settings(database=database)
    services = open_services(settings)
    mapper = MapperProcess(settings, open_services)
    mapper.start()
    try:
        mapper._planner.kill()
        mapper._planner.join(10)
        assert not mapper._planner.is_alive()
        raw = (SAMPLES / "adt_a28_add_person.hl7").read_bytes().replace(b"\n", b"\r")
        services.store.inbox.receive([Arrival(CHANNEL, "HIS/HZFIRST", "ADT20240306-0040",
                                              "2024-03-06T10:00:00Z", None, "ADT^A28", raw)])
        mapper.wake()
        deadline = time.time() + 60
        while query(database, "SELECT status FROM inbox") != [("mapped",)]:
            assert time.time() < deadline, "not mapped without the planning process"
            time.sleep(0.1)
        found = query(database, "SELECT count(*) FROM idx_token WHERE type = 'Patient' AND "
                                "param = 'identifier' AND code = '0009990001'")  # fmt: skip
        assert found == [(1,)]
    finally:
        mapper.stop()
        services.close()
