"""The export worker: a thread in each server process that takes queued export jobs, writes
their NDJSON files (one per resource type) and records a checkpoint after every batch, so a
job interrupted by a restart goes on from its last checkpoint in whichever process takes it
next. Finished jobs' files are removed after `export_retention_hours`."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..context import RequestContext
from ..errors import FhirError, Issue, operation_outcome
from ..policy import enforce
from ..storage.contract import ExportTables, Job, Selection
from . import export

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("fhir_server.export")
#: seconds a running job stays its worker's without a checkpoint (then another may take it)
LEASE = 60.0
#: seconds between looks for queued jobs
POLL = 0.2


class Worker:
    """One per process (app.py starts and stops it)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        #: names this worker in the job table: the process, this run of it, the machine (a
        #: MongoDB job collection is shared by the servers of several)
        self.name = f"{os.getpid()}:{uuid.uuid4().hex}@{socket.gethostname()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _run_id(self) -> str:
        return self.name.partition("@")[0].partition(":")[2]

    @property
    def jobs(self) -> ExportTables:
        return self.services.store.exports

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="export-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        purged = 0.0
        while not self._stop.is_set():
            worked = False
            try:
                worked = self.run_next()
                if time.time() - purged > 60:
                    self.purge()
                    purged = time.time()
            except Exception:  # noqa: BLE001 - the worker outlives a bad job or a locked database
                log.exception("export worker")
            if not worked:
                self._stop.wait(POLL)

    def run_next(self) -> bool:
        """Take and run one job, if one is waiting (or was abandoned); whether one ran."""
        for job in self.jobs.runnable():
            if job.status == "running" and not self._abandoned(job):
                continue
            if self.jobs.claim(job, self.name, time.time() + LEASE):
                self.run(job)
                return True
        return False

    def _abandoned(self, job: Job) -> bool:
        """A running job whose worker is gone: its lease ran out, or its process on this
        machine ended (it was this process's pid in an earlier run, or no process has that pid
        now); another machine's worker only by its lease."""
        if job.lease is None or job.lease < time.time():
            return True
        who, _, host = (job.worker or "").partition("@")
        pid, _, run = who.partition(":")
        if host != socket.gethostname() or not pid.isdigit() or run == self._run_id:
            return False
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def purge(self) -> None:
        """Remove expired jobs, and the folders of jobs no longer in the table."""
        settings = self.services.settings
        for job_id in self.jobs.expired(time.time()):
            self.jobs.delete(job_id)
        root = export.job_dir(settings, "x").parent
        if root.is_dir():
            known = self.jobs.ids()
            for folder in root.iterdir():
                if folder.is_dir() and folder.name not in known:
                    shutil.rmtree(folder, ignore_errors=True)

    def run(self, job: Job) -> None:
        """Write the job's files from its checkpoint on; a failure is recorded on the job."""
        settings = self.services.settings
        expires = time.time() + settings.export_retention_hours * 3600
        try:
            manifest = _Run(self, job).run()
        except _Gone:
            shutil.rmtree(export.job_dir(settings, job.id), ignore_errors=True)
            return
        except Exception as exc:  # noqa: BLE001 - recorded on the job, answered on its status
            log.exception("export %s failed", job.id)
            self.jobs.fail(job.id, self.name, f"The export failed: {exc}", expires)
            return
        if not self.jobs.finish(job.id, self.name, manifest, expires):
            shutil.rmtree(export.job_dir(settings, job.id), ignore_errors=True)


class _Gone(Exception):
    """The job was deleted by its owner (or taken over) while it ran."""


class _Run:
    """One run of one job."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker, self.job = worker, job
        self.services = worker.services
        spec = job.spec
        self.base: str = spec["base"]
        self.ctx = RequestContext(self.base, export.principal_of(job.principal))
        self.folder = export.job_dir(self.services.settings, job.id)
        self.progress: dict[str, Any] = job.progress or {}
        self.jobs = worker.jobs

    def run(self) -> dict[str, Any]:
        progress, jobs = self.progress, self.jobs
        if progress and self._resume(progress):
            plan = self._plan(progress["types"])
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            plan = self._plan(None)
            progress = self.progress = {
                "types": [sel.rtype for sel in plan], "step": 0, "after": 0, "files": {},
                "counts": {}, "done": 0,
                "total": sum(jobs.count(self.base, sel) for sel in plan),
            }  # fmt: skip
            self._checkpoint()
        self.folder.mkdir(parents=True, exist_ok=True)
        batch = max(1, self.services.settings.export_batch)
        at = self.job.transaction_time
        while progress["step"] < len(plan):
            sel = plan[progress["step"]]
            name = f"{sel.rtype}.ndjson"
            with open(self.folder / name, "ab") as out:
                while True:
                    rows, last = jobs.batch(self.base, sel, progress["after"], batch, at)
                    if last is None:
                        break
                    if rows:
                        out.write(b"\n".join(rows) + b"\n")
                        out.flush()
                    progress["after"] = last
                    progress["counts"][sel.rtype] = progress["counts"].get(sel.rtype, 0) + len(rows)
                    progress["done"] += len(rows)
                    progress["files"][name] = out.tell()
                    self._checkpoint()
            progress["step"] += 1
            progress["after"] = 0
            self._checkpoint()
        return self._manifest(plan)

    def _plan(self, planned: list[str] | None) -> list[Selection]:
        """One Selection per type to export, narrowed as the caller's search of it would be
        (types no scope permits are left out: the export holds what they may see). A resumed
        job keeps the types its first run planned (`planned`)."""
        spec, services, ctx = self.job.spec, self.services, self.ctx
        level = spec["level"]
        types = planned or spec["types"] or (
            [t for t in self.jobs.types_present()
             if level == "system" or t in export.compartment_types()]  # fmt: skip
        )
        out = []
        for rtype in sorted(types):
            try:
                access = enforce.authorize(ctx, services, "search-type", rtype)
            except FhirError:
                if planned:
                    raise
                continue
            clauses = tuple(access.clauses) if access is not None else ()
            filters = tuple(
                tuple(enforce.narrow(ctx, services, "search-type", rtype,
                                     export.filter_clauses(services.registry, rtype, query)))
                for query in spec["filters"].get(rtype, [])
            )  # fmt: skip
            compartment = export.compartment_params(rtype) if level != "system" else None
            patients = tuple(spec["patients"]) if spec["patients"] is not None else None
            out.append(Selection(rtype, clauses, filters, compartment, patients, spec["since"]))
        return out

    def _resume(self, progress: dict[str, Any]) -> bool:
        """Cut each file back to its size at the checkpoint (a crash may have written part
        of a batch after it) and drop files begun since; False when a file is shorter than
        recorded (then the job starts over)."""
        sizes: dict[str, int] = progress.get("files", {})
        if not self.folder.is_dir():
            return not sizes
        for path in self.folder.iterdir():
            size = sizes.get(path.name)
            if size is None:
                path.unlink()
            elif path.stat().st_size < size:
                return False
            else:
                with open(path, "r+b") as f:
                    f.truncate(size)
        return all((self.folder / name).exists() for name in sizes)

    def _checkpoint(self) -> None:
        if not self.jobs.checkpoint(self.job.id, self.worker.name, self.progress,
                                    time.time() + LEASE):  # fmt: skip
            raise _Gone()

    def _manifest(self, plan: list[Selection]) -> dict[str, Any]:
        """export.html "Response - Complete Status": one output item per file with its count,
        deleted resources since _since (system level, for types the caller sees whole), and
        the error file."""
        job, base = self.job, self.base
        output = [
            {"type": sel.rtype, "url": export.file_url(base, job.id, f"{sel.rtype}.ndjson"),
             "count": self.progress["counts"][sel.rtype]}
            for sel in plan if self.progress["counts"].get(sel.rtype)
        ]  # fmt: skip
        manifest: dict[str, Any] = {
            "transactionTime": job.transaction_time,
            "request": job.spec["request"],
            "requiresAccessToken": True,
            "output": output,
            "error": [],
        }
        since = job.spec["since"]
        if since is not None:
            manifest["deleted"] = self._deleted(plan, since)
        skipped = sorted(set(job.spec["types"] or []) - {s.rtype for s in plan})
        if skipped:
            issues = [Issue("forbidden", f"{t} is not exported: no granted scope permits it",
                            "warning", "_type") for t in skipped]  # fmt: skip
            path = self.folder / "errors.ndjson"
            path.write_bytes(orjson.dumps(operation_outcome(issues)) + b"\n")
            manifest["error"] = [{"type": "OperationOutcome", "count": 1,
                                  "url": export.file_url(base, job.id, path.name)}]  # fmt: skip
        return manifest

    def _deleted(self, plan: list[Selection], since: str) -> list[dict[str, Any]]:
        """Transaction Bundles of DELETE entries, one per line (export.html `deleted`), for a
        system-level export and the types the caller sees whole: the deleted version of a
        narrowed type no longer tells whose it was."""
        if self.job.spec["level"] != "system":
            return []
        lines = []
        for sel in plan:
            if sel.clauses or sel.filters:
                continue
            for rid, when in self.jobs.deleted(sel.rtype, since, self.job.transaction_time):
                bundle = {"resourceType": "Bundle", "type": "transaction",
                          "meta": {"lastUpdated": when},
                          "entry": [{"request": {"method": "DELETE",
                                                 "url": f"{sel.rtype}/{rid}"}}]}  # fmt: skip
                lines.append(orjson.dumps(bundle))
        if not lines:
            return []
        path: Path = self.folder / "deleted.ndjson"
        path.write_bytes(b"\n".join(lines) + b"\n")
        url = export.file_url(self.base, self.job.id, path.name)
        return [{"type": "Bundle", "url": url, "count": len(lines)}]
