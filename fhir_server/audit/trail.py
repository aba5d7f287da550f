"""Writing the audit trail. A write's record (record.py) is chained in the write's own
transaction, so it commits or rolls back with the change. Reads are queued and chained by a
background writer within `interval` (a crash may lose the reads of the last ~200 ms; never a
write's record). The writer also expands the records into AuditEvents, which is most of the
cost, so it does that when the server pauses (no request for `quiet` seconds), or for the
records that waited `max_lag` seconds: under continuous load the searchable view lags behind
the chain by up to `max_lag`, and the requests do not wait for it.

The writer builds everything outside the write lock, yielding the GIL between pieces, and
holds the lock only to chain and insert. Expansion is idempotent: a record's AuditEvents are
stored in the transaction that takes it off audit_pending, so a record is expanded once
whichever process or restart gets to it; records pending for `stale_after` seconds (their
process died) are taken from the database."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from ..context import RequestContext
from ..interactions.hooks import Access, Commit, SecurityEvent, transaction
from ..model.resource import now
from ..services import Services
from ..storage.contract import Session, Stored, Version
from . import record
from .chain import Appended, append
from .event import versions

log = logging.getLogger("fhir_server.audit")


class Trail:
    """The audit feature's state: how to find a resource's patients, the reads to record and
    the records to expand, and the background writer."""

    def __init__(
        self,
        services: Services,
        interval: float = 0.2,
        batch: int = 500,
        quiet: float = 0.05,
        max_lag: float = 30.0,
    ) -> None:
        #: seconds between writer runs; at most about `batch` AuditEvents per transaction
        self.services, self.interval, self.batch = services, interval, batch
        self.quiet, self.max_lag, self.stale_after = quiet, max_lag, 2 * max_lag
        self.patients = record.Patients(services.registry)
        #: (time.time() of the access, the access)
        self._accesses: deque[tuple[float, Access]] = deque()
        #: (time.time() when chained, the record): this process's records to expand
        self._records: deque[tuple[float, Appended]] = deque()
        #: time.monotonic() of the last request seen (reads and writes)
        self._active = 0.0
        self._flushing = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        #: the first sweep takes what was pending before this process started (a restart)
        self._swept, self._started = time.monotonic(), time.time()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # --- writes: a record in the transaction ---------------------------------------------

    def before_lock(self, ctx: RequestContext, bundle: str, written: list[Stored]) -> Prepared:
        """The record of a bulk transaction's creates, built before the write lock."""
        writes = [self._write_entry(s, "create", s.json) for s in written]
        return Prepared([_key(s) for s in written], record.bundle(ctx, bundle, now(), writes))

    def before_commit(self, session: Session, commit: Commit) -> None:
        """Chain the record of the versions this REST transaction wrote (ctx None: the
        server's own writes, not REST), with what before_lock prepared when it covers them."""
        if commit.ctx is None:
            return
        self._active = time.monotonic()
        writes = [s for s in session.written if s.type != "AuditEvent"]
        if not writes:
            return
        prepared = commit.prepared.get("audit")
        if isinstance(prepared, Prepared) and prepared.covers == [_key(s) for s in writes]:
            made = [prepared.record]
        else:  # the bundle was redone under the lock, or no bulk write
            made = self._write_records(session, commit.ctx, commit.bundle, writes)
        self._pending(append(self.services.store.audit, session, made, pending=True))

    def _write_records(
        self, session: Session, ctx: RequestContext, bundle: str | None, writes: list[Stored]
    ) -> list[record.Record]:
        """A single REST write: one record per version; a bundle's writes: one record."""
        if bundle is not None:
            entries = [self._write_entry(s, *_written(session, s)) for s in writes]
            return [record.bundle(ctx, bundle, now(), entries)]
        made = []
        for stored in writes:
            interaction, json = _written(session, stored)
            patients = self.patients.of_stored(stored.type, stored.id, json)
            targets = [{"what": _what(stored)}]
            made.append(record.rest(ctx, interaction, stored.last_updated, targets, patients))
        return made

    def _write_entry(self, stored: Stored, interaction: str, json: bytes | None) -> list[Any]:
        return [_what(stored), interaction, self.patients.of_stored(stored.type, stored.id, json)]

    # --- the authorization server's security events: at once -----------------------------

    def on_security(self, event: SecurityEvent) -> None:
        """Chain a security event's record before the authorization server answers. Best
        effort (BALP): a failure to audit is logged and does not fail the sign-in."""
        try:
            with transaction(self.services) as session:
                made = [record.security(event, now())]
                appended = append(self.services.store.audit, session, made, pending=True)
            self._pending(appended)
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("audit: the security event %s could not be written", event.kind)

    # --- reads: queued ------------------------------------------------------------------

    def on_access(self, access: Access) -> None:
        """Called on the request path: only queue (the writer does the work)."""
        self._active = time.monotonic()
        self._accesses.append((time.time(), access))
        if len(self._accesses) >= self.batch:
            self._wake.set()

    # --- the writer -----------------------------------------------------------------------

    def _pending(self, appended: list[Appended]) -> None:
        at = time.time()
        self._records.extend((at, a) for a in appended)

    def flush(self) -> int:
        """Chain every queued access and expand every pending record now, this process's and
        any other's (tests, shutdown); returns how many records were expanded."""
        with self._flushing:
            self._chain_accesses()
            done = self._expand(lambda: time.time() + 1)
            return done + self._expand_stale(time.time() + 1)

    def close(self) -> None:
        """Stop the writer and write what is queued (on shutdown)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - shutdown goes on: what is pending stays pending
            log.exception("audit: the trail could not be written at shutdown")

    def _run(self) -> None:
        """Every `interval` seconds, or sooner when `batch` accesses wait: chain them; then
        expand what may be expanded now; now and then, records left by another process."""
        stale_before: float | None = self._started
        while not self._stop.is_set():
            try:
                with self._flushing:
                    self._chain_accesses()
                    self._expand(self._due)
                    if stale_before is not None:
                        self._expand_stale(stale_before)
                        self._swept, stale_before = time.monotonic(), None
                    if time.monotonic() - self._swept >= self.stale_after / 2:
                        stale_before = time.time() - self.stale_after
            except Exception:  # noqa: BLE001 - the writer must survive a bad record or a lock
                log.exception("audit: the writer failed; it retries")
            self._wake.wait(self.interval)
            self._wake.clear()

    def _due(self) -> float:
        """Records chained before this instant may be expanded now: all of them while the
        server pauses, else those that waited `max_lag`."""
        if time.monotonic() - self._active >= self.quiet:
            return time.time() + 1
        return time.time() - self.max_lag

    def _chain_accesses(self) -> None:
        """Records of the queued accesses, built outside the lock, chained in one transaction
        per `batch`; a transaction that fails (a lock timeout, a concurrent writer moved the
        chain head) puts its accesses back for the next run."""
        while self._accesses:
            taken: list[tuple[float, Access]] = []
            made: list[record.Record] = []
            while self._accesses and len(made) < self.batch:
                at, access = self._accesses.popleft()
                taken.append((at, access))
                made.append(record.access(access, record.instant(at), self.patients))
                _pause(len(made))
            try:
                with transaction(self.services) as session:
                    appended = append(self.services.store.audit, session, made, pending=True)
            except BaseException:
                self._accesses.extendleft(reversed(taken))
                raise
            self._pending(appended)

    def _expand(self, due: Any) -> int:
        """Expand this process's pending records chained before `due()`, oldest first, about
        `batch` AuditEvents a transaction, asking `due` again between transactions (a burst of
        requests stops the expansion)."""
        done = 0
        while self._records and self._records[0][0] < due():
            chunk: list[Appended] = []
            weight = 0
            while self._records and weight < self.batch and self._records[0][0] < due():
                chunk.append(self._records.popleft()[1])
                weight += _weight(chunk[-1])
            done += self._store(chunk)
        return done

    def _expand_stale(self, before: float) -> int:
        """Expand the records pending in the database since before `before`: left by a
        process that died (or by another that is far behind)."""
        rows = self.services.store.audit.stale_pending(before, 100 * self.batch)
        pending = deque(Appended(seq, digest, orjson.loads(data)) for seq, data, digest in rows)
        done = 0
        while pending:
            chunk: list[Appended] = []
            weight = 0
            while pending and weight < self.batch:
                chunk.append(pending.popleft())
                weight += _weight(chunk[-1])
            done += self._store(chunk)
        return done

    def _store(self, pending: list[Appended]) -> int:
        """The AuditEvents of records, built outside the write lock (yielding the GIL now and
        then, so a request thread waits for one piece, not a 5 ms switch interval), stored in
        the transaction that takes the records off audit_pending. A record another process
        expanded meanwhile is left out; one that cannot be expanded (a bug) is logged and
        stays pending."""
        stamp = now()
        expanded: dict[int, list[Version]] = {}
        for n, appended in enumerate(pending, 1):
            try:
                expanded[appended.seq] = versions(appended.record, stamp)
            except Exception:  # noqa: BLE001 - see the docstring
                log.exception("audit: record seq %d cannot be expanded", appended.seq)
            _pause(n)
        wanted = {a.seq: a.hash for a in pending if a.seq in expanded}
        with transaction(self.services) as session:
            taken = self.services.store.audit.take_pending(session, wanted)
            session.save_many([(None, v) for seq in taken for v in expanded[seq]])
        return len(taken)


def _pause(n: int) -> None:
    """Let the request threads have the GIL every 8 pieces of the writer's work."""
    if n % 8 == 0:
        time.sleep(0)


@dataclass(frozen=True)
class Prepared:
    """A record built before the write lock, and the writes (type, id, version) it covers."""

    covers: list[tuple[str, str, int]]
    record: record.Record


def _weight(appended: Appended) -> int:
    """About how many AuditEvents a record expands to (a bundle: one per patient at most)."""
    r = appended.record
    return max(1, len(r.get("patients") or r.get("writes") or ()))


def _key(stored: Stored) -> tuple[str, str, int]:
    return stored.type, stored.id, stored.version


def _what(stored: Stored) -> str:
    return f"{stored.type}/{stored.id}/_history/{stored.version}"


def _written(session: Session, stored: Stored) -> tuple[str, bytes | None]:
    """The interaction that wrote a version, and the JSON whose patients it touched (for a
    deletion, the version it deleted)."""
    if stored.deleted:
        prev = session.version(stored.type, stored.id, stored.version - 1)
        return "delete", prev.json if prev is not None else None
    return "create" if stored.version == 1 else "update", stored.json
