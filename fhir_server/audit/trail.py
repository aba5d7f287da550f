"""Writing the audit trail: write interactions are audited inside their own transaction (an
audit is never lost when the change commits); read interactions are queued and written in
small batches by a background thread, so reads stay fast (a crash may lose the reads of the
last flush interval, ~200 ms)."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import orjson

from ..context import RequestContext
from ..interactions.hooks import Access, transaction
from ..interactions.write import new_id, prepare
from ..model.resource import now
from ..model.validate import Validated
from ..services import Services
from ..storage.sqlite import Session, Stored, Version
from . import chain
from .event import Patients, Target, classify, rest_events

log = logging.getLogger("fhir_server.audit")


class Trail:
    """The audit feature's state: how to find a resource's patients, and the read queue."""

    def __init__(self, services: Services, interval: float = 0.2, batch: int = 500) -> None:
        self.services, self.interval, self.batch = services, interval, batch
        self.patients = Patients(services.registry)
        self._queue: queue.SimpleQueue[Access] = queue.SimpleQueue()
        self._flushing = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # --- writes: in the transaction -----------------------------------------------------

    def before_commit(self, session: Session, ctx: RequestContext | None) -> None:
        """Audit the versions this REST transaction wrote (ctx None: the server's own writes,
        not REST), then chain every AuditEvent the transaction stored."""
        if ctx is not None:
            events: list[dict[str, Any]] = []
            for stored in list(session.written):
                if stored.type != "AuditEvent":
                    events += self._write_events(session, ctx, stored)
            store(self.services, session, events)
        chain.append(session, session.written)

    def _write_events(
        self, session: Session, ctx: RequestContext, stored: Stored
    ) -> list[dict[str, Any]]:
        if stored.deleted:
            interaction = "delete"
            prev = session.version(stored.type, stored.id, stored.version - 1)
            json = prev.json if prev is not None else None
        else:
            interaction = "create" if stored.version == 1 else "update"
            json = stored.json
        resource = orjson.loads(json) if json is not None else None
        what = f"{stored.type}/{stored.id}/_history/{stored.version}"
        patients = self.patients(stored.type, resource)
        return rest_events(ctx, interaction, stored.last_updated, [Target(what)], patients)

    # --- reads: queued ------------------------------------------------------------------

    def on_access(self, access: Access) -> None:
        """Called on the request path: only queue (the work happens in the writer)."""
        self._queue.put(access)
        if self._queue.qsize() >= self.batch:
            self._wake.set()

    def flush(self) -> int:
        """Write every queued access now; returns how many were written."""
        with self._flushing:
            pending: list[Access] = []
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if pending:
                self._write(pending)
            return len(pending)

    def close(self) -> None:
        """Stop the writer and write what is queued (on shutdown)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        """Every `interval` seconds, or sooner when `batch` accesses wait: write them."""
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def _write(self, accesses: list[Access]) -> None:
        try:
            events = [e for a in accesses for e in self.access_events(a)]
            with transaction(self.services) as session:
                store(self.services, session, events)
        except Exception:  # noqa: BLE001 - the writer must survive a bad event or a lock
            log.exception("audit: %d read audit events could not be written", len(accesses))

    def access_events(self, access: Access) -> list[dict[str, Any]]:
        """The AuditEvents of one read, search, history, operation or failed request."""
        interaction, target = classify(access.method, access.path)
        interaction = access.interaction or interaction
        targets: list[Target] = []
        patients: list[str] = []
        for stored in access.resources:
            targets.append(Target(f"{stored.type}/{stored.id}/_history/{stored.version}"))
            resource = orjson.loads(stored.json) if stored.json is not None else None
            patients += self.patients(stored.type, resource)
        if access.bundle is not None:
            patients += self._bundle_patients(access.bundle)
        if interaction.startswith(("search", "history", "operation")):
            targets.append(Target(target.what, access.query))
        elif not targets and target.what:
            targets.append(target)
        if not access.resources and target.what and target.what.startswith("Patient/"):
            patients.append("/".join(target.what.split("/")[:2]))  # the patient asked about
        return rest_events(access.ctx, interaction, now(), targets, patients, access.failure)

    def _bundle_patients(self, bundle: bytes) -> list[str]:
        found: list[str] = []
        for entry in orjson.loads(bundle).get("entry") or ():
            resource = entry.get("resource")
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                found += self.patients(resource["resourceType"], resource)
        return found


def store(services: Services, session: Session, events: list[dict[str, Any]]) -> None:
    """Save AuditEvents built by this server (event.py) in one batch. They are not run
    through the validator on every write (its cost would double a bulk ingest); the tests
    validate the events of every interaction (tests/test_audit.py)."""
    if not events:
        return
    stamp = now()
    versions: list[tuple[int | None, Version]] = [
        (None, prepare(services, "AuditEvent", new_id(), Validated(e), 1, stamp, "POST"))
        for e in events
    ]
    session.save_many(versions)
