"""The SQLite write-ahead log is copied back by a thread of the store (storage/sqlite/store.py,
Checkpointer), not by the commits: it must still stay bounded while a writer never pauses,
and a process must be able to close the store while a checkpoint is due. Server-assigned ids
are UUIDs of version 7 (RFC 9562 §5.7: time first, so ids written later sort later)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite.store import WAL_BOUND
from integrations.hl7v2.inbox import Arrival

PAGE = 4096
FRAME = 24 + PAGE  # sqlite.org/fileformat.html#the_write_ahead_log: frame header + page


def test_the_log_stays_bounded_while_a_writer_never_pauses(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "w.db")
    raw = bytes(100 * PAGE)  # each transaction: ~100 pages of log
    try:
        for n in range(200):  # 20,000 pages in all, back to back, no pause between commits
            store.inbox.receive(
                [Arrival("hl7v2", "S/A", f"M{n}", "2024-01-01T00:00:00Z", None, "ADT^A01", raw)]
            )
        pages = (tmp_path / "w.db-wal").stat().st_size // FRAME
        # past the bound a commit copies the rest back itself and the log starts anew (the
        # first commit that finds no checkpoint of the thread under way: on a loaded machine
        # some transactions later), far from the 20,000 pages written
        assert pages < 2 * WAL_BOUND, pages
        assert len(store.inbox.waiting("hl7v2", "received", after=0, limit=500)) == 200
    finally:
        store.close()
    assert not (tmp_path / "w.db-wal").exists()  # the last connection closed: all copied back


def test_close_right_after_a_commit_returns(tmp_path: Path) -> None:
    """A checkpoint is due (the commit poked the thread) when the store closes: close waits
    for it at most one checkpoint, and the data is in the database file."""
    store = SqliteStore(tmp_path / "c.db")
    store.inbox.receive([Arrival("hl7v2", "S/A", "M1", "2024-01-01T00:00:00Z", None, "ADT^A01",
                                 b"MSH|^~\\&|")])  # fmt: skip
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 5
    again = SqliteStore(tmp_path / "c.db")
    try:
        assert [m.message_id for m in again.inbox.waiting("hl7v2", "received", after=0,
                                                           limit=5)] == ["M1"]  # fmt: skip
    finally:
        again.close()


def test_server_ids_are_uuid7_in_creation_order(client: TestClient) -> None:
    ids = []
    for family in ("One", "Two", "Three"):
        r = client.post("/fhir/Patient", json={"resourceType": "Patient",
                                               "name": [{"family": family}]})  # fmt: skip
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        time.sleep(0.002)  # the time field counts milliseconds
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid  # the canonical lower-case 8-4-4-4-12 form
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        # unix_ts_ms: the first 48 bits, within a minute of now
        assert abs((parsed.int >> 80) - time.time() * 1000) < 60_000
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
