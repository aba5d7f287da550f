"""The background side of subscriptions: writes are handed over after they commit (an
after-commit hook that only queues), and one thread per worker process matches them against
the active Subscriptions, checks what each owner may see, and hands notifications to the
channels. Nothing here runs inside a write transaction or on a request's time.

Every process keeps the list of active Subscriptions current with one read per batch
(the store's `subscriptions.generation`), and websocket events reach sockets bound in other
processes (serve's workers; the HL7 v2 and DICOM listeners write too) through a small table
each process polls while it has sockets bound."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import Principal, RequestContext
from ..interactions.hooks import transaction
from ..interactions.write import save
from ..model import literal
from ..model.resource import now
from ..operations.export import principal_of
from ..policy.enforce import keep_visible
from ..search.index import index_rows
from ..storage.contract import Session, Stored, SubscriptionTables
from .accept import end_instant
from .criteria import Criteria, compile_criteria, matches
from .payload import content_of
from .resthook import RestHooks
from .watch import Watch
from .websocket import Hub

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("fhir_server.subscriptions")

#: seconds between polls of the event table while websockets are bound here (several workers)
POLL_SECONDS = 0.02
#: seconds websocket events for other workers are gathered before they are written (under a
#: write load, one transaction for many instead of one per write)
EVENT_BATCH_SECONDS = 0.01
#: seconds between checks of Subscription.end when nothing else wakes the thread
IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class Active:
    """A Subscription that receives notifications (status active or error, before its end,
    a UTC instant)."""

    id: str
    resource: dict[str, Any]
    criteria: Criteria
    channel: str
    content: str
    owner: Principal | None
    end: str | None

    def ended(self, at: str) -> bool:
        return self.end is not None and self.end <= at


class Notifier:
    """One per Services (services.features["subscriptions"])."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.origin = uuid.uuid4().hex
        self.hub = Hub()
        self.rest_hooks = RestHooks(self)
        self._queue: deque[list[Stored]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._generation: float | None = None
        self._by_type: dict[str, list[Active]] = {}
        self._watch: dict[str, Watch] = {}
        self._last_event = 0
        #: websocket events not yet written for the other workers, since when
        self._events: list[str] = []
        self._events_since = 0.0
        self._next_end_check = 0.0
        self._thread = threading.Thread(target=self._run, name="subscriptions", daemon=True)
        self._thread.start()

    # --- the write path's side: cheap --------------------------------------------------

    def after_commit(self, written: list[Stored]) -> None:
        """The after-commit hook: queue the versions, wake the thread."""
        if written:
            self._queue.append(written)
            self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self._events:  # gathered for the other processes: theirs to deliver still
            self._publish()
        self.rest_hooks.stop()

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            polling = self.hub.bound()
            wait = POLL_SECONDS if polling else IDLE_SECONDS
            if self._events:
                wait = min(wait, max(0.0, self._events_since + EVENT_BATCH_SECONDS - time.time()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                reader = self._reader()
                self._refresh(reader)
                batch: list[Stored] = []
                while self._queue:
                    batch.extend(self._queue.popleft())
                if batch and self._by_type:
                    self._dispatch(reader, batch)
                if self._events and time.time() >= self._events_since + EVENT_BATCH_SECONDS:
                    self._publish()
                if polling:
                    self._poll(reader)
                if time.time() >= self._next_end_check:
                    self._next_end_check = time.time() + IDLE_SECONDS
                    self._turn_off_ended()
            except Exception:  # one bad batch must not end notifications for good
                log.exception("subscription dispatch failed")

    def _reader(self) -> Session:
        return self.services.store.reader()

    @property
    def tables(self) -> SubscriptionTables:
        return self.services.store.subscriptions

    def _refresh(self, reader: Session) -> None:
        """Reload the active Subscriptions when some version of one was written since."""
        generation = self.tables.generation(reader)
        if generation == self._generation:
            return
        by_type: dict[str, list[Active]] = {}
        for raw, owner in self.tables.current(reader):
            active = self._active(literal.loads(raw), owner)
            if active is not None:
                by_type.setdefault(active.criteria.rtype, []).append(active)
        tables = self.tables
        self._watch = {t: Watch.build(subs, self.base_url, tables) for t, subs in by_type.items()}
        self._by_type, self._generation = by_type, generation

    def _active(self, sub: dict[str, Any], owner: dict[str, Any] | None) -> Active | None:
        if sub.get("status") not in ("active", "error"):
            return None
        try:
            criteria = compile_criteria(self.services.registry, str(sub.get("criteria", "")),
                                        self.tables)
            channel = sub["channel"]
            content = content_of(channel)
        except Exception:  # stored before a rule tightened: not served, said in the log
            log.warning("Subscription/%s cannot be served and is skipped", sub.get("id"))
            return None
        return Active(
            str(sub["id"]), sub, criteria, str(channel.get("type")), content,
            principal_of(owner) if owner else None, end_instant(sub),
        )  # fmt: skip

    def _dispatch(self, reader: Session, batch: list[Stored]) -> None:
        at = now()
        registry = self.services.registry
        sockets: list[str] = []
        for stored in batch:
            watch = self._watch.get(stored.type)
            if watch is None or stored.deleted or stored.json is None:
                continue
            rows = index_rows(stored.type, literal.loads(stored.json), registry, watch.codes)
            candidates = watch.candidates(stored.id, rows)
            asked = {s.id: watch.compiled[s.id] for s in candidates if s.id in watch.compiled}
            by_sql = self.tables.matching(reader, stored.type, stored.id, asked) if asked else set()
            for sub in candidates:
                if sub.ended(at):
                    continue
                if sub.criteria.in_memory:
                    if not matches(sub.criteria, stored.id, rows, self.base_url):
                        continue
                elif sub.id not in by_sql:
                    continue
                if not self._may_see(sub, stored):
                    continue
                if sub.channel == "websocket":
                    self.hub.ping(sub.id)
                    sockets.append(sub.id)
                else:
                    self.rest_hooks.submit(sub, stored)
        if sockets:  # other processes: serve's workers, the HL7 v2 and DICOM listeners
            if not self._events:
                self._events_since = time.time()
            self._events += sockets

    def _publish(self) -> None:
        """The websocket events of the last EVENT_BATCH_SECONDS, for the other workers: one
        short write transaction however many there are."""
        events, self._events = self._events, []
        with self.services.store.write() as session:
            self.tables.add_events(session, events, self.origin)

    def _may_see(self, sub: Active, stored: Stored) -> bool:
        """The owner's read permission on the resource now (security.md §3): a notification,
        even an empty one, tells that something they may not see exists or changed."""
        if sub.owner is None or sub.owner.kind == "anonymous":
            return True
        ctx = RequestContext(self.base_url, sub.owner)
        assert stored.json is not None
        item = (stored.type, stored.id, stored.json)
        reader = self.services.store.reader()
        return bool(keep_visible(reader, ctx, self.services, [item]))

    def _poll(self, reader: Session) -> None:
        """Websocket events other workers wrote since the last poll."""
        for seq, sub_id in self.tables.events_after(reader, self._last_event, self.origin):
            self._last_event = seq
            if sub_id:
                self.hub.ping(sub_id)

    def _turn_off_ended(self) -> None:
        """R4 Subscription.end: "the time for the server to turn the subscription off"."""
        at = now()
        for subs in list(self._by_type.values()):
            for sub in subs:
                if sub.ended(at):
                    self.set_status(sub.id, "off", None)

    # --- shared with the channels --------------------------------------------------------

    @property
    def base_url(self) -> str:
        return (self.services.settings.public_base_url or "").rstrip("/")

    def bindable(self, sub_id: str, who: Principal) -> str | None:
        """Why `who`'s websocket may not bind this Subscription, or None when it may: only
        its owner may (a ping tells that something the owner may see changed; the anonymous
        caller of a server with `auth` off binds any)."""
        reader = self._reader()
        stored = reader.current("Subscription", sub_id)
        if stored is None or stored[1].deleted or stored[1].json is None:
            return "no such Subscription"
        if who.kind != "anonymous" and not owns(self.tables.owner(reader, sub_id), who):
            return "not a Subscription of this user"
        sub = literal.loads(stored[1].json)
        if (sub.get("channel") or {}).get("type") != "websocket":
            return "not a websocket Subscription"
        if sub.get("status") not in ("active", "error"):
            return f"the Subscription is {sub.get('status')}"
        if not self.hub.bound():
            self._last_event = self.tables.last_event(reader)
        return None

    def set_status(self, sub_id: str, status: str, error_text: str | None) -> None:
        """Write the Subscription's status (and R4 Subscription.error) as the server: a new
        version, through the write path's hooks (audit), only when it changes."""
        services = self.services
        with transaction(services) as session:
            current = session.current("Subscription", sub_id)
            if current is None or current[1].deleted or current[1].json is None:
                return
            sub = literal.loads(current[1].json)
            if sub.get("status") == status and sub.get("error") == error_text:
                return
            if status == "active" and sub.get("status") != "error":
                return  # recovery only: a client may have turned it off meanwhile
            sub["status"] = status
            if error_text is None:
                sub.pop("error", None)
            else:
                sub["error"] = error_text
            save(session, services, "Subscription", sub_id, services.validator(sub), current,
                 "PUT")  # fmt: skip


def owns(owner: dict[str, Any] | None, who: Principal) -> bool:
    """Whether `who` is the Subscription's owner: the same user or patient (through any of
    their apps), or the same system client."""
    if owner is None or owner.get("kind") != who.kind:
        return False
    if who.kind == "system":
        return owner.get("client_id") == who.client_id
    return owner.get("user") is not None and owner.get("user") == who.user
