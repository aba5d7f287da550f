"""Bulk Data export in SQLite: the job table (migration 5) and the rows an export writes out,
read in row-id order so that a job can stop after any batch and go on from there."""

from __future__ import annotations

from typing import Any

import orjson

from ..jobs import Job, Selection
from .search import Compiler
from .store import Session, SqliteStore

_COLUMNS = ("id, owner, principal, spec, status, transaction_time, created, worker, lease, "
            "progress, manifest, error, expires")  # fmt: skip


def _job(row: tuple[Any, ...]) -> Job:
    loads = orjson.loads
    return Job(
        row[0], row[1], loads(row[2]), loads(row[3]), row[4], row[5], row[6], row[7], row[8],
        loads(row[9]) if row[9] else None, loads(row[10]) if row[10] else None, row[11],
        row[12],
    )  # fmt: skip


def _dumps(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


class ExportJobs:
    """The export_job table (short write transactions under the store's write lock), and the
    resources an export reads (contract.ExportTables)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def create(self, job: Job) -> None:
        with self.store.write() as s:
            s.conn.execute(
                f"INSERT INTO export_job ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?)",
                (job.id, job.owner, _dumps(job.principal), _dumps(job.spec), job.status,
                 job.transaction_time, job.created, None, None, None, None, None, None),
            )  # fmt: skip

    def get(self, job_id: str) -> Job | None:
        rows = self.store.reader().query(
            f"SELECT {_COLUMNS} FROM export_job WHERE id = ?", [job_id]
        )
        return _job(rows[0]) if rows else None

    def runnable(self) -> list[Job]:
        """Queued jobs and running ones (whose worker may have died), oldest first."""
        rows = self.store.reader().query(
            f"SELECT {_COLUMNS} FROM export_job WHERE status IN ('queued', 'running') "
            "ORDER BY created"
        )
        return [_job(r) for r in rows]

    def claim(self, job: Job, worker: str, lease: float) -> bool:
        """Take `job` for `worker` unless someone else took it since it was read."""
        with self.store.write() as s:
            found = s.conn.execute(
                "UPDATE export_job SET status = 'running', worker = ?, lease = ? "
                "WHERE id = ? AND status = ? AND worker IS ?",
                (worker, lease, job.id, job.status, job.worker),
            )
            return found.rowcount == 1

    def checkpoint(self, job_id: str, worker: str, progress: dict[str, Any], lease: float) -> bool:
        """Record progress and renew the lease; False when the job is no longer this worker's
        (deleted by its owner, or taken over)."""
        with self.store.write() as s:
            found = s.conn.execute(
                "UPDATE export_job SET progress = ?, lease = ? WHERE id = ? AND worker = ? "
                "AND status = 'running'",
                (_dumps(progress), lease, job_id, worker),
            )
            return found.rowcount == 1

    def finish(self, job_id: str, worker: str, manifest: dict[str, Any], expires: float) -> bool:
        with self.store.write() as s:
            found = s.conn.execute(
                "UPDATE export_job SET status = 'complete', manifest = ?, expires = ?, "
                "lease = NULL WHERE id = ? AND worker = ? AND status = 'running'",
                (_dumps(manifest), expires, job_id, worker),
            )
            return found.rowcount == 1

    def fail(self, job_id: str, worker: str, reason: str, expires: float) -> None:
        with self.store.write() as s:
            s.conn.execute(
                "UPDATE export_job SET status = 'failed', error = ?, expires = ?, lease = NULL "
                "WHERE id = ? AND worker = ?",
                (reason, expires, job_id, worker),
            )

    def delete(self, job_id: str) -> bool:
        with self.store.write() as s:
            return s.conn.execute("DELETE FROM export_job WHERE id = ?", (job_id,)).rowcount == 1

    def expired(self, now: float) -> list[str]:
        rows = self.store.reader().query(
            "SELECT id FROM export_job WHERE status IN ('complete', 'failed') AND expires < ?",
            [now],
        )
        return [r[0] for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self.store.reader().query("SELECT id FROM export_job")}

    def count(self, base_url: str, sel: Selection) -> int:
        return count(self.store.reader(), base_url, sel)

    def batch(
        self, base_url: str, sel: Selection, after: int, limit: int, at: str
    ) -> tuple[list[bytes], int | None]:
        return batch(self.store.reader(), base_url, sel, after, limit, at)

    def deleted(self, rtype: str, since: str, at: str) -> list[tuple[str, str]]:
        return deleted(self.store.reader(), rtype, since, at)

    def types_present(self) -> list[str]:
        return types_present(self.store.reader())


def _where(base_url: str, sel: Selection) -> tuple[str, list[Any]]:
    compiler = Compiler(base_url)
    where, args = compiler.where(sel.rtype, list(sel.clauses))
    if sel.filters:
        ors = []
        for alternative in sel.filters:
            part, part_args = compiler.where(sel.rtype, list(alternative))
            ors.append(f"({part})")
            args += part_args
        where += " AND (" + " OR ".join(ors) + ")"
    patients = orjson.dumps(list(sel.patients or ())).decode()
    if sel.compartment is not None and sel.rtype == "Patient":
        if sel.patients is not None:
            where += " AND r.id IN (SELECT value FROM json_each(?))"
            args.append(patients)
    elif sel.compartment is not None:
        marks = ", ".join("?" * len(sel.compartment))
        where += (
            " AND EXISTS (SELECT 1 FROM idx_reference i WHERE i.rid = r.rid AND i.param IN "
            f"({marks}) AND i.target_type = 'Patient'"
        )
        args += list(sel.compartment)
        if sel.patients is not None:
            where += " AND i.target_id IN (SELECT value FROM json_each(?))"
            args.append(patients)
        where += ")"
    if sel.since is not None:
        where += " AND r.last_updated > ?"
        args.append(sel.since)
    return where, args


def count(session: Session, base_url: str, sel: Selection) -> int:
    where, args = _where(base_url, sel)
    found: int = session.query(f"SELECT count(*) FROM resource r WHERE {where}", args)[0][0]
    return found


def batch(
    session: Session, base_url: str, sel: Selection, after: int, limit: int, at: str
) -> tuple[list[bytes], int | None]:
    """Up to `limit` resources after row id `after`, as they were at instant `at` (the job's
    transactionTime: a resource changed since is written as its version then, one created
    since is left out); and the last row id read (None: nothing left)."""
    where, args = _where(base_url, sel)
    rows = session.query(
        f"SELECT r.rid, r.id, r.last_updated, r.json FROM resource r WHERE {where} "
        "AND r.rid > ? ORDER BY r.rid LIMIT ?",
        [*args, after, limit],
    )
    out: list[bytes] = []
    for _, rid, updated, raw in rows:
        if updated <= at:
            out.append(raw)
            continue
        then = session.query(
            "SELECT deleted, json FROM history WHERE type = ? AND id = ? AND last_updated <= ? "
            "ORDER BY version DESC LIMIT 1",
            [sel.rtype, rid, at],
        )
        if then and not then[0][0]:
            out.append(then[0][1])
    return out, (rows[-1][0] if rows else None)


def deleted(session: Session, rtype: str, since: str, at: str) -> list[tuple[str, str]]:
    """(id, when) of the resources of `rtype` deleted after `since` (up to `at`) and still
    deleted: the Bulk Data manifest's `deleted` files."""
    rows = session.query(
        "SELECT id, last_updated FROM resource WHERE type = ? AND deleted = 1 "
        "AND last_updated > ? AND last_updated <= ? ORDER BY id",
        [rtype, since, at],
    )
    return [(r[0], r[1]) for r in rows]


def types_present(session: Session) -> list[str]:
    """The resource types some current resource has, sorted."""
    return [r[0] for r in session.query(
        "SELECT DISTINCT type FROM resource WHERE deleted = 0 ORDER BY type")]  # fmt: skip
