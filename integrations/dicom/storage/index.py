"""The index of the instance store: one SQLite file beside the Part-10 files (all of this
integration's SQL lives here). Rows per study, series and instance carry the attributes that
C-FIND and QIDO-RS match on, the DICOM JSON they return, and each study's revision, so the
ImagingStudy syncer knows which studies changed since it last wrote them."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL, issuer TEXT NOT NULL,
    -- PatientName as matched: every component group, upper case ('ZHANG^SAN=张^三')
    patient_name TEXT NOT NULL,
    birth_date TEXT NOT NULL, sex TEXT NOT NULL, accession TEXT NOT NULL,
    study_date TEXT NOT NULL, study_time TEXT NOT NULL, study_id TEXT NOT NULL,
    description TEXT NOT NULL, referring TEXT NOT NULL,
    attrs BLOB NOT NULL,                     -- DICOM JSON of the study-level attributes
    revision INTEGER NOT NULL DEFAULT 1,     -- bumped by every instance stored
    synced INTEGER NOT NULL DEFAULT 0,       -- the revision the ImagingStudy was built from
    resource_id TEXT,                        -- that ImagingStudy's id
    updated TEXT NOT NULL
);
-- the study list, newest first; it covers the usual filters (a viewer's name, ID and
-- accession boxes: wildcards scan it without reading the rows)
CREATE INDEX IF NOT EXISTS study_list ON study
    (study_date DESC, study_time DESC, uid, patient_name, patient_id, accession);
CREATE INDEX IF NOT EXISTS study_patient ON study (patient_id, issuer);
CREATE INDEX IF NOT EXISTS study_accession ON study (accession);
CREATE INDEX IF NOT EXISTS study_unsynced ON study (synced) WHERE synced < revision;
CREATE TABLE IF NOT EXISTS series (
    uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL, number INTEGER, description TEXT NOT NULL,
    attrs BLOB NOT NULL                      -- DICOM JSON of the series-level attributes
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_uid, number);
CREATE INDEX IF NOT EXISTS series_modality ON series (modality, study_uid);
CREATE TABLE IF NOT EXISTS instance (
    uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL, transfer_syntax TEXT NOT NULL,
    number INTEGER, frames INTEGER NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL, received TEXT NOT NULL,
    attrs BLOB NOT NULL,                     -- DICOM JSON of the instance-level attributes
    metadata BLOB                            -- full DICOM JSON (WADO-RS metadata), made lazily
);
CREATE INDEX IF NOT EXISTS instance_series ON instance (series_uid, number, uid);
CREATE INDEX IF NOT EXISTS instance_study ON instance (study_uid);
"""


@dataclass(frozen=True)
class InstanceRow:
    """One instance as the store indexes it (integrations/dicom/dataset.py extracts it)."""

    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]


class Index:
    """WAL, one writer at a time (BEGIN IMMEDIATE, also across processes: the DIMSE listener
    and the HTTP workers share it), a read connection per thread."""

    def __init__(self, path: Path, lock_timeout: float = 10.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.lock_timeout
        )
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "temp_store = MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        self._connections.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
        return conn

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._reader().execute(sql, args).fetchall()

    # --- writes -----------------------------------------------------------------------

    def put(self, row: InstanceRow, received: str) -> str | None:
        """Index one stored instance (replacing an earlier one with its SOP Instance UID) and
        bump its study's revision, in one transaction. Returns the path of the file the
        instance had before when it differs from the new one (to delete), else None."""
        st, se, it = row.study, row.series, row.instance
        with self._write() as conn:
            old = conn.execute("SELECT path FROM instance WHERE uid = ?", (it["uid"],)).fetchone()
            # another instance of a known study: its attributes are the same nearly always,
            # and then only the revision changes (no index entry of the study rewritten)
            if not conn.execute(
                "UPDATE study SET revision = revision + 1, updated = ? WHERE uid = ?"
                " AND attrs = ?",
                (received, st["uid"], st["attrs"]),
            ).rowcount:
                conn.execute(
                    "INSERT INTO study (uid, patient_id, issuer, patient_name, birth_date, sex,"
                    " accession, study_date, study_time, study_id, description, referring,"
                    " attrs, updated) VALUES (:uid, :patient_id, :issuer, :patient_name,"
                    " :birth_date, :sex, :accession, :study_date, :study_time, :study_id,"
                    " :description, :referring, :attrs, :updated) ON CONFLICT (uid) DO UPDATE"
                    " SET patient_id = :patient_id, issuer = :issuer,"
                    " patient_name = :patient_name, birth_date = :birth_date, sex = :sex,"
                    " accession = :accession, study_date = :study_date,"
                    " study_time = :study_time, study_id = :study_id,"
                    " description = :description, referring = :referring, attrs = :attrs,"
                    " updated = :updated, revision = revision + 1",
                    {**st, "updated": received},
                )
            conn.execute(
                "INSERT INTO series VALUES (:uid, :study_uid, :modality, :number,"
                " :description, :attrs) ON CONFLICT (uid) DO UPDATE SET"
                " study_uid = :study_uid, modality = :modality, number = :number,"
                " description = :description, attrs = :attrs"
                " WHERE attrs != :attrs OR study_uid != :study_uid",
                se,
            )
            moved = conn.execute(
                "SELECT series_uid, study_uid FROM instance WHERE uid = ? AND series_uid != ?",
                (it["uid"], it["series_uid"]),
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO instance VALUES (:uid, :series_uid, :study_uid,"
                " :sop_class, :transfer_syntax, :number, :frames, :path, :size, :received,"
                " :attrs, NULL)",
                {**it, "received": received},
            )
            if moved is not None:  # re-sent into another series: the old one may be empty now
                conn.execute(
                    "DELETE FROM series WHERE uid = ? AND NOT EXISTS (SELECT 1 FROM instance"
                    " WHERE series_uid = ?)",
                    (moved[0], moved[0]),
                )
                conn.execute(
                    "UPDATE study SET revision = revision + 1 WHERE uid = ? AND uid != ?",
                    (moved[1], st["uid"]),
                )
        return old[0] if old is not None and old[0] != it["path"] else None

    def mark_synced(self, study_uid: str, revision: int, resource_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE study SET synced = MAX(synced, ?), resource_id = ? WHERE uid = ?",
                (revision, resource_id, study_uid),
            )

    def put_metadata(self, items: list[tuple[str, bytes]]) -> None:
        """Cache WADO-RS metadata: (SOP Instance UID, DICOM JSON bytes)."""
        with self._write() as conn:
            conn.executemany("UPDATE instance SET metadata = ? WHERE uid = ?",
                             [(m, u) for u, m in items])  # fmt: skip

    # --- reads ------------------------------------------------------------------------

    def unsynced(self, limit: int = 100) -> list[str]:
        """Studies whose ImagingStudy is older than their instances."""
        rows = self._rows("SELECT uid FROM study WHERE synced < revision LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def study(self, uid: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {_STUDY_COLUMNS} FROM study WHERE uid = ?", (uid,))
        return dict(zip(_STUDY_KEYS, rows[0], strict=True)) if rows else None

    def series_of(self, study_uid: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT uid, modality, number, description, attrs FROM series WHERE study_uid = ?"
            " ORDER BY number, uid",
            (study_uid,),
        )
        keys = ("uid", "modality", "number", "description", "attrs")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def instances(
        self, study_uid: str, series_uid: str | None = None, uid: str | None = None
    ) -> list[dict[str, Any]]:
        """Instances of a study (or one series, or one instance), by series and number."""
        where, args = "study_uid = ?", [study_uid]
        if series_uid is not None:
            where, args = where + " AND series_uid = ?", [*args, series_uid]
        if uid is not None:
            where, args = where + " AND uid = ?", [*args, uid]
        rows = self._rows(
            f"SELECT {_INSTANCE_COLUMNS} FROM instance WHERE {where}"
            " ORDER BY series_uid, number, uid",
            args,
        )
        return [dict(zip(_INSTANCE_KEYS, r, strict=True)) for r in rows]

    def instance(self, uid: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {_INSTANCE_COLUMNS} FROM instance WHERE uid = ?", (uid,))
        return dict(zip(_INSTANCE_KEYS, rows[0], strict=True)) if rows else None

    def without_metadata(self, limit: int) -> list[dict[str, Any]]:
        """Instances whose WADO-RS metadata is not made yet, newest studies first."""
        rows = self._rows(
            f"SELECT {_INSTANCE_COLUMNS} FROM instance WHERE metadata IS NULL"
            " ORDER BY received DESC LIMIT ?",
            (limit,),
        )
        return [dict(zip(_INSTANCE_KEYS, r, strict=True)) for r in rows]

    def find(self, query: Query) -> list[tuple[Any, ...]]:
        """Rows of a compiled query (integrations/dicom/query.py)."""
        return self._rows(query.sql, query.args)

    def counts(self, study_uids: list[str]) -> dict[str, tuple[int, int, str]]:
        """{study: (series, instances, modalities as 'CT\\MR')} for the given studies."""
        if not study_uids:
            return {}
        marks = ",".join("?" * len(study_uids))
        rows = self._rows(
            "SELECT se.study_uid, COUNT(DISTINCT se.uid), (SELECT COUNT(*) FROM instance i"
            " WHERE i.study_uid = se.study_uid), GROUP_CONCAT(DISTINCT se.modality)"
            f" FROM series se WHERE se.study_uid IN ({marks}) GROUP BY se.study_uid",
            study_uids,
        )
        return {r[0]: (r[1], r[2], "\\".join(sorted(set((r[3] or "").split(","))))) for r in rows}

    def series_counts(self, series_uids: list[str]) -> dict[str, int]:
        if not series_uids:
            return {}
        marks = ",".join("?" * len(series_uids))
        rows = self._rows(
            f"SELECT series_uid, COUNT(*) FROM instance WHERE series_uid IN ({marks})"
            " GROUP BY series_uid",
            series_uids,
        )
        return {r[0]: r[1] for r in rows}

    def resource_ids(self, study_uids: list[str]) -> dict[str, str]:
        """{study: ImagingStudy id} for the studies that have one."""
        if not study_uids:
            return {}
        marks = ",".join("?" * len(study_uids))
        rows = self._rows(
            f"SELECT uid, resource_id FROM study WHERE uid IN ({marks})"
            " AND resource_id IS NOT NULL",
            study_uids,
        )
        return {r[0]: r[1] for r in rows}


@dataclass(frozen=True)
class Query:
    """SQL over the index tables with its arguments (built by query.py)."""

    sql: str
    args: tuple[Any, ...]


_STUDY_KEYS = (
    "uid", "patient_id", "issuer", "patient_name", "birth_date", "sex", "accession",
    "study_date", "study_time", "study_id", "description", "referring", "attrs", "revision",
    "synced", "resource_id", "updated",
)
_STUDY_COLUMNS = ", ".join(_STUDY_KEYS)
_INSTANCE_KEYS = (
    "uid", "series_uid", "study_uid", "sop_class", "transfer_syntax", "number", "frames",
    "path", "size", "received", "attrs", "metadata",
)
_INSTANCE_COLUMNS = ", ".join(_INSTANCE_KEYS)
