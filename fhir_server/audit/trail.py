"""Writing the audit trail: write interactions are audited inside their own transaction (an
audit is never lost when the change commits); read interactions are queued and written in
small batches by a background thread, so reads stay fast (a crash may lose the reads of the
last flush interval, ~200 ms)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..context import RequestContext
from ..interactions.hooks import Access, Commit, SecurityEvent, transaction
from ..interactions.write import new_id
from ..model.resource import now
from ..search.index import index_rows
from ..services import Services
from ..storage.sqlite import Session, Stored, Version
from . import chain
from .event import (
    Patients,
    Target,
    bundle_events,
    classify,
    rest_events,
    security_event,
    written_entity,
)

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

    def before_lock(self, ctx: RequestContext, bundle: str, written: list[Stored]) -> Prepared:
        """The AuditEvents of a bulk transaction's creates, built before the write lock."""
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for stored in written:
            resource = orjson.loads(stored.json) if stored.json is not None else None
            self._group(groups, stored, "create", resource)
        events = bundle_events(ctx, bundle, now(), groups)
        return Prepared([_key(s) for s in written], versions(self.services, events, now()))

    def before_commit(self, session: Session, commit: Commit) -> None:
        """Audit the versions this REST transaction wrote (ctx None: the server's own writes,
        not REST), with what before_lock prepared when it covers them, then chain every
        AuditEvent the transaction stored."""
        if commit.ctx is not None:
            writes = [s for s in session.written if s.type != "AuditEvent"]
            prepared = commit.prepared.get("audit")
            if isinstance(prepared, Prepared) and prepared.covers == [_key(s) for s in writes]:
                made = prepared.versions
            else:  # the bundle was redone under the lock, or no bulk write
                events = self._write_events(session, commit.ctx, commit.bundle, writes)
                made = versions(self.services, events, now())
            session.save_many([(None, v) for v in made])
        chain.append(session, session.written)

    def _write_events(
        self, session: Session, ctx: RequestContext, bundle: str | None, writes: list[Stored]
    ) -> list[dict[str, Any]]:
        """A single REST write: one event per version (and patient); a bundle's writes: one
        event per patient compartment touched (bundle_events)."""
        events: list[dict[str, Any]] = []
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for stored in writes:
            interaction, resource = _written(session, stored)
            if bundle is not None:
                self._group(groups, stored, interaction, resource)
                continue
            patients = self.patients(stored.type, resource)
            target = Target(_what(stored))
            events += rest_events(ctx, interaction, stored.last_updated, [target], patients)
        if groups and bundle is not None:
            events += bundle_events(ctx, bundle, now(), groups)
        return events

    def _group(
        self,
        groups: dict[str | None, list[dict[str, Any]]],
        stored: Stored,
        interaction: str,
        resource: dict[str, Any] | None,
    ) -> None:
        entity = written_entity(_what(stored), interaction)
        owners: list[str | None] = [*self.patients(stored.type, resource)] or [None]
        for owner in owners:
            groups.setdefault(owner, []).append(entity)

    # --- the authorization server's security events: at once -----------------------------

    def on_security(self, event: SecurityEvent) -> None:
        """Store a security event in the chain before the authorization server answers (a
        sign-in is slow anyway: the password hash). Best effort (BALP): a failure to audit is
        logged and does not fail the sign-in."""
        try:
            with transaction(self.services) as session:
                store(self.services, session, [security_event(event, now())])
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("audit: the security event %s could not be written", event.kind)

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
        """Build the events outside the write lock, yielding the GIL after each access (a
        request thread then waits for one access's work, not a 5 ms switch interval), then
        store them in one transaction (sqlite releases the GIL while it writes)."""
        try:
            made: list[Version] = []
            for access in accesses:
                made += versions(self.services, self.access_events(access), now())
                time.sleep(0)
            with transaction(self.services) as session:
                session.save_many([(None, v) for v in made])
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


@dataclass(frozen=True)
class Prepared:
    """AuditEvents built before the write lock, and the writes (type, id, version) they cover."""

    covers: list[tuple[str, str, int]]
    versions: list[Version]


def _key(stored: Stored) -> tuple[str, str, int]:
    return stored.type, stored.id, stored.version


def _what(stored: Stored) -> str:
    return f"{stored.type}/{stored.id}/_history/{stored.version}"


def _written(session: Session, stored: Stored) -> tuple[str, dict[str, Any] | None]:
    """The interaction that wrote a version, and the resource whose patients it touched (for
    a deletion, the version it deleted)."""
    if stored.deleted:
        prev = session.version(stored.type, stored.id, stored.version - 1)
        json = prev.json if prev is not None else None
        interaction = "delete"
    else:
        json, interaction = stored.json, "create" if stored.version == 1 else "update"
    return interaction, orjson.loads(json) if json is not None else None


#: what auditors search AuditEvents by: only these are indexed (no full text either); the
#: parameters read from the parts every event of one interaction shares, and from `entity`
_SHARED_CODES = frozenset(
    {"date", "agent", "type", "subtype", "action", "outcome", "source", "patient"}
)
_ENTITY_CODES = frozenset({"entity", "patient"})


def versions(services: Services, events: list[dict[str, Any]], stamp: str) -> list[Version]:
    """AuditEvents built by this server (event.py), ready to store. They are not run through
    the validator (its cost would double a bulk ingest; the tests validate every kind). The
    stored JSON is canonical (RFC 8785: sorted keys; only strings, booleans and ASCII keys,
    see chain.canonical), so the chain hashes the stored bytes as they are; `verify`
    recomputes the canonical form, so a non-canonical event could not pass unnoticed.
    Index rows: the shared parts are indexed once per interaction (events of one interaction
    share their agent list), the entities per event."""
    registry = services.registry
    shared: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
    out: list[Version] = []
    for event in events:
        rows = shared.get(id(event["agent"]))
        if rows is None:
            common = {k: v for k, v in event.items() if k != "entity"}
            rows = index_rows("AuditEvent", common, registry, _SHARED_CODES)
            shared[id(event["agent"])] = rows
        own = index_rows("AuditEvent", event, registry, _ENTITY_CODES)
        rid = new_id()
        body = {**event, "id": rid, "meta": {"versionId": "1", "lastUpdated": stamp}}
        json = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        index = {t: list(dict.fromkeys(rows[t] + own[t])) for t in rows}
        out.append(Version(Stored("AuditEvent", rid, 1, stamp, False, json, "POST"), index,
                           None, {}))  # fmt: skip
    return out


def store(services: Services, session: Session, events: list[dict[str, Any]]) -> None:
    """Save AuditEvents built by this server in one batch."""
    if events:
        session.save_many([(None, v) for v in versions(services, events, now())])
