"""Transport and operations (issue 10): HTTPS from uvicorn with TLS 1.2 at least, online backup
and restore, /health and /ready, request ids in responses, interactions and the access log."""

from __future__ import annotations

import json
import logging
import re
import socket
import sqlite3
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn.config
from conftest import _serve_live, make_services
from fastapi.testclient import TestClient

from fhir_server.cli import main
from fhir_server.interactions.hooks import Change
from fhir_server.serve import uvicorn_config
from fhir_server.services import Parts
from fhir_server.settings import Settings
from fhir_server.storage.sqlite import SqliteStore


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


# --- HTTPS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1 issued by a test CA: (cert chain, key, CA cert)."""
    cert = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    with chain.open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    return chain, key, ca_file


@pytest.fixture
def permissive_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSL as some systems configure it: TLS 1.1 and its ciphers allowed (this machine's
    openssl.cnf already refuses them, which would hide a server that does not)."""
    original = uvicorn.config.create_ssl_context

    def permissive(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = original(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1_1
        return context

    monkeypatch.setattr(uvicorn.config, "create_ssl_context", permissive)


def _handshake(port: int, ca: trustme.CA, version: str = "TLSv1_1") -> str:
    """Handshake as a client that speaks this TLS version only (and allows old ciphers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version]
    ca.configure_trust(ctx)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def _permissive_tls_server(ca: trustme.CA) -> int:
    """A server that still accepts TLS 1.1: proves the client above really offers it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_one() -> None:
        conn, _ = listener.accept()
        with closing(listener), suppress(OSError):  # the client may hang up
            ctx.wrap_socket(conn, server_side=True).close()

    threading.Thread(target=accept_one, daemon=True).start()
    return int(listener.getsockname()[1])


def test_serve_speaks_https_with_the_given_certificate(
    live_server_with: Callable[..., str], tls_files: tuple[Path, Path, Path]
) -> None:
    chain, key, ca_file = tls_files
    base = live_server_with(tls_cert=chain, tls_key=key).replace("http://", "https://")
    trusted = ssl.create_default_context(cafile=ca_file)
    r = httpx.get(f"{base}/metadata", verify=trusted)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"
    # links are built for the scheme the request came in on (http.public_base)
    r = httpx.post(f"{base}/Patient", json=_patient("Secure"), verify=trusted)
    assert r.headers["Location"].startswith(f"{base}/Patient/")
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(f"{base}/metadata")


@pytest.mark.usefixtures("permissive_openssl")
def test_tls_below_1_2_is_refused(
    live_server_with: Callable[..., str],
    tls_files: tuple[Path, Path, Path],
    ca: trustme.CA,
) -> None:
    chain, key, _ = tls_files
    assert _handshake(_permissive_tls_server(ca), ca) == "TLSv1.1"  # the client can
    port = int(live_server_with(tls_cert=chain, tls_key=key).split(":")[2].split("/")[0])
    with pytest.raises(ssl.SSLError):  # uvicorn hangs up on the hello (EOF, no alert)
        _handshake(port, ca)
    # the same client at TLS 1.2 gets through: the version was refused, not the ciphers
    assert _handshake(port, ca, "TLSv1_2") == "TLSv1.2"


@pytest.mark.usefixtures("permissive_openssl")
def test_tls_context_sets_tls_1_2_as_the_minimum(tls_files: tuple[Path, Path, Path]) -> None:
    """Whatever OpenSSL's system configuration allows, the context itself refuses 1.0/1.1."""
    chain, key, _ = tls_files
    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...

    config = uvicorn_config(asgi, Settings(tls_cert=chain, tls_key=key))
    config.load()
    assert config.ssl is not None
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2


def test_serve_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--database", str(tmp_path / "x.db"), "--tls-cert", "c.pem"])
    assert exit_.value.code == 2
    assert not (tmp_path / "x.db").exists()


# --- backup and restore ---------------------------------------------------------------------


def _count(db: Path, rtype: str = "Patient") -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM resource WHERE type = ? AND deleted = 0", (rtype,)
            ).fetchone()[0]
        )


@pytest.fixture
def live_db(tmp_path: Path, parts: Parts) -> Iterator[tuple[str, Path]]:
    """A live server and the path of its database."""
    db = tmp_path / "serving.db"
    server = _serve_live(make_services(db, parts))
    yield next(server), db
    next(server, None)


def _write_load(base: str, stop: threading.Event, failures: list[str]) -> None:
    """Creates Patients and updates each once (two versions each) until told to stop."""
    with httpx.Client(timeout=30) as c:
        n = 0
        while not stop.is_set():
            n += 1
            r = c.post(f"{base}/Patient", json=_patient(f"Load{n}"))
            if r.status_code != 201:
                failures.append(f"POST {r.status_code}")
                continue
            created = r.json()
            r = c.put(f"{base}/Patient/{created['id']}", json={**created, "gender": "other"})
            if r.status_code != 200:
                failures.append(f"PUT {r.status_code}")


def test_backup_while_serving_and_writing_is_a_consistent_snapshot(
    live_db: tuple[str, Path], tmp_path: Path, parts: Parts
) -> None:
    base, db = live_db
    stop, failures = threading.Event(), []
    load = threading.Thread(target=_write_load, args=(base, stop, failures))
    start_count = _count(db)
    load.start()
    try:
        time.sleep(1.0)
        before = _count(db)
        assert main(["backup", str(tmp_path / "b.db"), "--database", str(db)]) == 0
        after = _count(db)
        time.sleep(1.0)
    finally:
        stop.set()
        load.join(timeout=30)
    assert not failures
    assert _count(db) > after >= before > start_count  # the server wrote throughout

    backup = tmp_path / "b.db"
    assert not Path(f"{backup}-wal").exists()  # one self-contained file
    with closing(sqlite3.connect(backup)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # every current row has its whole history: versions 1..current, the last one current
        incomplete = conn.execute(
            "SELECT r.type, r.id, r.version, max(h.version), count(h.version) FROM resource r "
            "LEFT JOIN versions h ON h.type = r.type AND h.id = r.id GROUP BY r.rid "
            "HAVING max(h.version) IS NOT r.version OR count(h.version) != r.version"
        ).fetchall()
        assert incomplete == []
        # and no history row without its resource row
        orphans = conn.execute(
            "SELECT count(*) FROM history h WHERE NOT EXISTS "
            "(SELECT 1 FROM resource r WHERE r.type = h.type AND r.id = h.id)"
        ).fetchone()[0]
        assert orphans == 0
    backed_up = _count(backup)
    assert before <= backed_up <= after

    # restore into a new path and serve it: the data reads back
    restored = tmp_path / "restored.db"
    assert main(["restore", str(backup), "--database", str(restored)]) == 0
    with closing(sqlite3.connect(backup)) as conn:
        rid, version, stored = conn.execute(
            "SELECT id, version, json FROM resource WHERE type = 'Patient' AND deleted = 0 "
            "ORDER BY rid DESC LIMIT 1"
        ).fetchone()
    server = _serve_live(make_services(restored, parts))
    other = next(server)
    try:
        r = httpx.get(f"{other}/Patient/{rid}")
        assert r.status_code == 200
        assert r.json() == json.loads(stored)
        assert r.headers["ETag"] == f'W/"{version}"'
        total = httpx.get(f"{other}/Patient?_summary=count").json()["total"]
        assert total == backed_up
    finally:
        next(server, None)


def test_backup_never_overwrites_a_file(live_db: tuple[str, Path], tmp_path: Path) -> None:
    _, db = live_db
    target = tmp_path / "exists.db"
    target.write_bytes(b"precious")
    assert main(["backup", str(target), "--database", str(db)]) == 1
    assert target.read_bytes() == b"precious"


def test_backup_of_a_missing_database_is_refused(tmp_path: Path) -> None:
    assert main(["backup", str(tmp_path / "b.db"), "--database", str(tmp_path / "no.db")]) == 1
    assert not (tmp_path / "no.db").exists()
    assert not (tmp_path / "b.db").exists()


def test_restore_is_refused_while_a_server_has_the_database_open(
    live_db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, db = live_db
    backup = tmp_path / "b.db"
    assert main(["backup", str(backup), "--database", str(db)]) == 0
    r = httpx.post(f"{base}/Patient", json=_patient("AfterBackup"))
    assert r.status_code == 201
    assert main(["restore", str(backup), "--database", str(db)]) == 1
    assert "in use" in capsys.readouterr().err
    # the server's data is untouched and it still serves and writes
    assert httpx.get(f"{base}/Patient/{r.json()['id']}").status_code == 200
    assert httpx.post(f"{base}/Patient", json=_patient("Later")).status_code == 201


def _not_ours(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()


def _newer_schema(path: Path) -> None:
    SqliteStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 999")


def _corrupt(path: Path) -> None:
    SqliteStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert pages > 4
    with path.open("r+b") as f:  # scribble over every page after the first two
        f.seek(2 * size)
        f.write(b"\x5a" * (pages - 2) * size)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_text("not a database " * 100), "not a readable SQLite database"),
        (_not_ours, "not a FHIR server database"),
        (_newer_schema, "newer than this server"),
        (_corrupt, "integrity|malformed|not a readable"),
    ],
    ids=["text-file", "foreign-sqlite", "newer-schema", "corrupt"],
)
def test_restore_refuses_what_is_not_an_intact_backup_of_ours(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], None],
    reason: str,
) -> None:
    bad, target = tmp_path / "bad.db", tmp_path / "target.db"
    make(bad)
    assert main(["restore", str(bad), "--database", str(target)]) == 1
    assert re.search(reason, capsys.readouterr().err)
    assert not target.exists()


# --- /health and /ready ---------------------------------------------------------------------


def test_health_is_json_ok_without_the_database(client: TestClient, tmp_path: Path) -> None:
    db = client.app.state.services.store.path  # type: ignore[attr-defined]
    db.rename(tmp_path / "away.db")  # the database is gone: liveness does not care
    r = client.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ok"}
    assert client.get("/ready").status_code == 503


def test_probes_answer_whatever_the_host_header(client: TestClient) -> None:
    """Orchestrators probe by pod address, a Host the FHIR API does not serve."""
    headers = {"Host": "10.1.2.3:8080"}
    assert client.get("/fhir/metadata", headers=headers).status_code == 400
    assert client.get("/health", headers=headers).status_code == 200
    assert client.get("/ready", headers=headers).status_code == 200


def test_ready_is_200_while_the_database_answers(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["status"] == "ready"


def test_ready_is_503_with_a_reason_when_the_database_is_gone(
    client: TestClient, tmp_path: Path
) -> None:
    db: Path = client.app.state.services.store.path  # type: ignore[attr-defined]
    db.rename(tmp_path / "away.db")
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert "does not answer" in r.json()["reason"]
    assert not db.exists()  # the probe never creates an empty database
    (tmp_path / "away.db").rename(db)
    assert client.get("/ready").status_code == 200


def test_ready_is_503_when_the_schema_is_not_this_servers(client: TestClient) -> None:
    db: Path = client.app.state.services.store.path  # type: ignore[attr-defined]
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.execute("PRAGMA user_version = 1")
    r = client.get("/ready")
    assert r.status_code == 503
    assert "schema version 1" in r.json()["reason"]
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    assert client.get("/ready").status_code == 200


def test_ready_is_503_while_another_process_locks_the_database(client: TestClient) -> None:
    """A restore (or any exclusive locker) holds the file: not ready, answered within ~1 s."""
    db: Path = client.app.state.services.store.path  # type: ignore[attr-defined]
    moved = db.with_name("locked.db")
    db.rename(moved)  # the server's connections keep the old file; the probe meets a new one
    with closing(sqlite3.connect(moved)) as src, closing(sqlite3.connect(db)) as locker:
        src.backup(locker)
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        r = client.get("/ready")
        assert r.status_code == 503
        assert "locked" in r.json()["reason"]
        assert time.perf_counter() - started < 5


# --- request ids -----------------------------------------------------------------------------


def test_a_sane_request_id_is_echoed(client: TestClient) -> None:
    for given in ("abc-123.X_y", "a" * 64):
        r = client.get("/fhir/metadata", headers={"X-Request-ID": given})
        assert r.headers["X-Request-ID"] == given


def test_a_request_id_is_made_when_none_is_given(client: TestClient) -> None:
    first = client.get("/fhir/Patient/missing").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    for rid in (first, second):
        assert len(rid) == 32 and int(rid, 16) >= 0
    assert first != second


@pytest.mark.parametrize(
    "given", ["a" * 65, "two words", "id;drop", "x\tinjected", "ümlaut", ""], ids=repr
)
def test_an_insane_request_id_is_replaced(client: TestClient, given: str) -> None:
    r = client.get(
        "/fhir/metadata", headers=[("X-Request-ID", given.encode("utf-8"))]  # type: ignore[list-item]
    )
    rid = r.headers["X-Request-ID"]
    assert rid != given
    assert len(rid) == 32 and int(rid, 16) >= 0


def test_errors_carry_the_request_id(client: TestClient) -> None:
    headers = {"X-Request-ID": "err-1"}
    assert client.get("/fhir/Nope/1", headers=headers).headers["X-Request-ID"] == "err-1"
    assert client.get("/fhir/metadata", headers={**headers, "Host": "evil.example"}).headers[
        "X-Request-ID"
    ] == "err-1"


def test_the_interaction_sees_the_request_id(client: TestClient) -> None:
    seen: list[str] = []

    def remember(change: Change) -> None:
        seen.append(change.ctx.request_id)

    services = client.app.state.services  # type: ignore[attr-defined]
    services.hooks.add_on_write(remember, ["Patient"], lambda r: True)
    r = client.post("/fhir/Patient", json=_patient("Traced"), headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 201
    assert seen == ["trace-42"]


def test_the_access_log_has_one_line_per_request_without_search_values(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fhir_server.access"):
        r = client.get(
            "/fhir/Patient?family=%E5%BC%A0&birthdate=1970-01-01&family=Li",
            headers={"X-Request-ID": "log-7"},
        )
        client.get("/fhir/Patient/nobody")
    assert r.status_code == 200
    lines = [rec for rec in caplog.records if rec.name == "fhir_server.access"]
    assert len(lines) == 2
    line = lines[0]
    assert line.request_id == "log-7"  # type: ignore[attr-defined]
    text = line.getMessage()
    assert text.startswith("GET /fhir/Patient 200 ")
    assert " ms request_id=log-7 params=family,birthdate" in text
    for value in ("%E5%BC%A0", "张", "1970", "Li"):
        assert value not in text
    assert lines[1].getMessage().startswith("GET /fhir/Patient/nobody 404 ")
    assert lines[1].request_id != "log-7"  # type: ignore[attr-defined]
