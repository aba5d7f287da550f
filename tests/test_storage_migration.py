"""Migration 9 (each version stored once) over a database written by schema 8, where the
current version of every resource was also a history row: history, vread, `_at` and the
conformance generation must read the same after it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts
from fhir_server.storage.sqlite.schema import MIGRATIONS

T1, T2, T3 = "2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z", "2024-03-01T00:00:00.000Z"


def _patient(pid: str, version: int, when: str, gender: str) -> bytes:
    meta = {"versionId": str(version), "lastUpdated": when}
    return orjson.dumps({"resourceType": "Patient", "id": pid, "meta": meta, "gender": gender})


def _schema_8(path: Path) -> None:
    """Patient/a created (T1), updated (T2), deleted (T3); Patient/b created (T2): rows as the
    schema-8 writer stored them, every version in history and the current one in resource."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, script in enumerate(MIGRATIONS[:8], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        a1, a2 = _patient("a", 1, T1, "male"), _patient("a", 2, T2, "female")
        b1 = _patient("b", 1, T2, "other")
        conn.executemany(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, json, "
            "superseded_at) VALUES ('Patient', ?, ?, ?, ?, ?, ?, ?)",
            [("a", 1, T1, 0, "POST", a1, T2), ("a", 2, T2, 0, "PUT", a2, T3),
             ("a", 3, T3, 1, "DELETE", None, None), ("b", 1, T2, 0, "POST", b1, None)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO resource (rid, type, id, version, last_updated, deleted, json) "
            "VALUES (?, 'Patient', ?, ?, ?, ?, ?)",
            [(1, "a", 3, T3, 1, None), (2, "b", 1, T2, 0, b1)],
        )


@pytest.fixture
def migrated(tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    path = tmp_path / "old.db"
    _schema_8(path)
    services = make_services(path, parts)  # opening the store migrates
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c


def test_migration_9_keeps_every_version_once(migrated: TestClient) -> None:
    db: Path = migrated.app.state.services.store.path  # type: ignore[attr-defined]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        # the superseded versions only in history; the current ones, with their method, only
        # in resource
        assert conn.execute(
            "SELECT id, version FROM history ORDER BY id, version"
        ).fetchall() == [("a", 1), ("a", 2)]
        assert conn.execute(
            "SELECT id, version, method FROM resource WHERE type = 'Patient' ORDER BY id"
        ).fetchall() == [("a", 3, "DELETE"), ("b", 1, "POST")]

    history = migrated.get("/fhir/Patient/a/_history").json()
    assert history["total"] == 3
    # newest first; the deletion has no resource, its request says DELETE (http.html#history)
    methods = [(e["request"]["method"], "resource" in e) for e in history["entry"]]
    assert methods == [("DELETE", False), ("PUT", True), ("POST", True)]
    assert migrated.get("/fhir/Patient/a/_history/1").json()["gender"] == "male"
    assert migrated.get("/fhir/Patient/a/_history/2").json()["gender"] == "female"
    assert migrated.get("/fhir/Patient/a").status_code == 410
    # at T2 + 1 s: a's version 2 and b's version 1 were current (a's 1 superseded at T2)
    at = migrated.get("/fhir/Patient/_history", params={"_at": "2024-02-01T00:00:01Z"}).json()
    assert sorted(e["fullUrl"].rsplit("/", 1)[1] for e in at["entry"]) == ["a", "b"]
    assert migrated.get("/fhir/Patient/_history").json()["total"] == 4
    with closing(sqlite3.connect(db)) as conn:  # the guide the server stored when it opened
        (guide,) = conn.execute("SELECT count(*) FROM resource WHERE type != 'Patient'").fetchone()
    assert migrated.get("/fhir/_history").json()["total"] == 4 + guide


def test_versions_written_after_migration_9_move_to_history(migrated: TestClient) -> None:
    r = migrated.put("/fhir/Patient/b", json={"resourceType": "Patient", "id": "b"})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    history = migrated.get("/fhir/Patient/b/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]
    assert migrated.get("/fhir/Patient/b/_history/1").json()["gender"] == "other"
    # re-created after its deletion: version 4, a create again (its history says POST/PUT)
    r = migrated.put("/fhir/Patient/a", json={"resourceType": "Patient", "id": "a"})
    assert r.status_code == 201 and r.json()["meta"]["versionId"] == "4"
    assert migrated.get("/fhir/Patient/a/_history").json()["total"] == 4


def test_conformance_generation_moves_with_each_version(migrated: TestClient) -> None:
    db: Path = migrated.app.state.services.store.path  # type: ignore[attr-defined]

    def generation() -> int:
        with closing(sqlite3.connect(db)) as conn:
            return int(conn.execute("SELECT n FROM conformance_generation").fetchone()[0])

    before = generation()
    vs = {"resourceType": "ValueSet", "id": "v", "status": "draft", "url": "http://x.org/vs"}
    assert migrated.put("/fhir/ValueSet/v", json=vs).status_code == 201  # created
    assert generation() == before + 1
    assert migrated.put("/fhir/ValueSet/v", json={**vs, "status": "active"}).status_code == 200
    assert generation() == before + 2  # updated
    assert migrated.delete("/fhir/ValueSet/v").status_code in (200, 204)
    assert generation() == before + 3  # deleted: a version too
    migrated.put("/fhir/Patient/c", json={"resourceType": "Patient", "id": "c"})
    assert generation() == before + 3  # not a conformance resource


def test_dump_streams_every_version_once_in_order(migrated: TestClient) -> None:
    """`fhir-server migrate` reads versions through dump.versions: the superseded ones from
    history and the current ones from resource, each once, oldest first per resource."""
    from fhir_server.storage.sqlite.dump import versions

    migrated.put("/fhir/Patient/b", json={"resourceType": "Patient", "id": "b"})
    store = migrated.app.state.services.store  # type: ignore[attr-defined]
    dumped = [(s.id, s.version, s.method) for _, s in versions(store.reader(), batch=2)
              if s.type == "Patient"]  # fmt: skip
    assert dumped == [("a", 1, "POST"), ("a", 2, "PUT"), ("a", 3, "DELETE"),
                      ("b", 1, "POST"), ("b", 2, "PUT")]  # fmt: skip


def test_migration_13_drops_the_rows_of_union_parameters(tmp_path: Path, parts: Parts) -> None:
    """Rows the combo-* parameters had before they were read through their parts go; the
    parts' rows stay, and combo-code still finds the Observation through them."""
    path = tmp_path / "old.db"
    obs = orjson.dumps({"resourceType": "Observation", "id": "o", "status": "final",
                        "meta": {"versionId": "1", "lastUpdated": T1},
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, script in enumerate(MIGRATIONS[:12], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        conn.execute("INSERT INTO resource (rid, type, id, version, last_updated, deleted, json, "
                     "method) VALUES (1, 'Observation', 'o', 1, ?, 0, ?, 'PUT')", (T1, obs))
        conn.executemany("INSERT INTO idx_token (rid, type, param, system, code) VALUES "
                         "(1, 'Observation', ?, 'http://loinc.org', '8867-4')",
                         [("code",), ("combo-code",), ("combo-code-value-quantity$0",)])
        conn.execute("INSERT INTO idx_quantity (rid, type, param, value) VALUES "
                     "(1, 'Observation', 'combo-value-quantity', 44)")
    services = make_services(path, parts)  # opening the store migrates
    with TestClient(build_app(services.settings, services)) as client:
        found = client.get("/fhir/Observation?combo-code=http://loinc.org|8867-4").json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["o"]
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT param FROM idx_token WHERE rid = 1 UNION ALL "
                            "SELECT param FROM idx_quantity WHERE rid = 1").fetchall()
    assert rows == [("code",)]
