"""The mapper: takes the received messages from the inbox in arrival order (so an A08 never
overtakes its A01, nor an ORU the A40 before it) and maps them off the ACK path. Messages are
mapped (decoded, parsed, planned, validated) before the write lock; several are then written in
one transaction, each in a savepoint of its own, with its inbox record settled beside it: one
commit for many messages, and still no message half applied. The listener's inbox commits go
first (see BUDGET). A message not yet mapped when the process stops is mapped after the
restart."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.interactions.hooks import transaction
from fhir_server.interactions.search import Criteria, criteria
from fhir_server.model.resource import now
from fhir_server.search.early import Early, early_rows
from fhir_server.services import Services

from .ack import Err
from .apply import apply, mapping_error, provenance
from .charset import decode
from .er7 import Message
from .mapping import MappingError, Plan, map_message
from .mapping.plan import Op
from .receipt import header

if TYPE_CHECKING:
    from fhir_server.storage.contract import Message as Record
    from fhir_server.storage.contract import Session

CHANNEL = "hl7v2"
#: seconds one write transaction of the mapper may last (then it commits, and goes on in a
#: new one); an arrival waiting for the write lock ends it sooner (`urgent`), so an ACK waits
#: for one message's writing at most; a REST write (another process) waits for the rest.
#: Commits are what cost (the index pages each one writes): a whole BATCH fits in one, and
#: writes 35 pages a message where 32 messages write 53 (128 rather than 64 messages a
#: transaction: 4.5% more mapped a second in `bench.hl7`, 3 interleaved pairs)
BUDGET = 0.3
#: seconds the mapper pauses between its transactions: the listener's inbox commits take the
#: write lock then (a lock has no queue: without the pause the mapper would take it again)
PAUSE = 0.002
#: seconds the mapper waits at most, after a commit, for the arrivals' commit it made way for
URGENT_WAIT = 0.05
#: messages mapped (not yet written) ahead of one transaction
BATCH = 128
log = logging.getLogger("integrations.hl7v2")


@dataclass(frozen=True)
class Outcome:
    """How mapping one inbox message ended: `mapped` (with the versions it wrote) or `error`
    (with where and why)."""

    seq: int
    status: str
    err: Err | None = None
    written: tuple[str, ...] = ()
    #: the sender waits to hear of it (`hl7_ack_mode` mapped, an enhanced application ACK)
    awaited: bool = False


def context(services: Services, seq: int) -> RequestContext:
    """Whose writes these are: the server's own (no token), one request id per message."""
    settings = services.settings
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}/fhir"
    return RequestContext(base_url=base, request_id=f"hl7v2-{seq}")


def awaited(meta: dict[str, Any]) -> bool:
    """Whether an ACK waits for this message's mapping."""
    return meta.get("ack_mode") == "mapped" or meta.get("application_ack") in ("AL", "ER", "SU")


def tells_sender(meta: dict[str, Any]) -> bool:
    """Whether the sender learns of a mapping error (an AE after mapping, or an enhanced-mode
    application ACK): then the message leaves the idempotency key, so a corrected resend with
    the same MSH-10 counts as new."""
    return meta.get("ack_mode") == "mapped" or meta.get("application_ack") in ("AL", "ER")


class Seen:
    """What planning found for the resources and identity lookups of recent messages, by
    their JSON text and query: the sending facility comes in every message, a patient in each
    of theirs, a header in each of its event's. The same resource, valid once, is valid again
    and has the same rows, while the conformance resources (`services.parts.current`: the
    validator and the registry) stay the same."""

    MAX = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a replay plans beside the mapper
        #: (type, text) or ("?", type, query) -> (the conformance parts, what was found)
        self._found: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()

    def early(self, services: Services, rtype: str, resource: dict[str, Any], text: bytes
              ) -> Early:  # fmt: skip
        found: Early | None = self._get(services, (rtype, text))
        if found is None:
            services.validator(resource)
            found = early_rows(rtype, resource, services.registry)
            self._put(services, (rtype, text), found)
        return found

    def criteria(self, services: Services, rtype: str, match: str) -> Criteria:
        found: Criteria | None = self._get(services, ("?", rtype, match))
        if found is None:
            found = criteria(services, rtype, match)
            self._put(services, ("?", rtype, match), found)
        return found

    def _get(self, services: Services, key: Any) -> Any:
        with self._lock:
            found = self._found.get(key)
            if found is None or found[0] is not services.parts.current:
                return None
            self._found.move_to_end(key)
            return found[1]

    def _put(self, services: Services, key: Any, value: object) -> None:
        with self._lock:
            self._found[key] = (services.parts.current, value)
            if len(self._found) > self.MAX:
                self._found.popitem(last=False)


_SEEN = Seen()


def _provenance_early(services: Services, template: dict[str, Any], target: Op) -> Early:
    template["recorded"] = now()  # the mapping's time: planned a moment before the write
    _, _, resource = provenance(services, template, [target.ref], {}, True)
    return early_rows("Provenance", resource, services.registry)


def plan_of(services: Services, record: Record) -> Plan | Err:
    """The message's plan, its resources validated and their early index rows computed (no
    database, no lock), or why there is none."""
    try:
        decoded = decode(record.raw, services.settings.hl7_charset)
        message = Message.parse(decoded.text, decoded.codec)
        plan = map_message(message, header(message, decoded.declared), services.settings)
        for op in plan.ops:
            op.text = orjson.dumps(op.resource)
            op.early = _SEEN.early(services, op.rtype, op.resource, op.text)
            if op.match is not None:
                op.criteria = _SEEN.criteria(services, op.rtype, op.match)
        if plan.ops:  # as apply writes them, a stand-in their target; recorded now
            plan.provenance_early = _provenance_early(services, plan.provenance, plan.ops[0])
            if plan.activity is not None:
                plan.activity_early = _provenance_early(services, plan.activity, plan.ops[0])
        plan.validated = True
        return plan
    except MappingError as exc:
        return exc.err
    except FhirError as exc:  # a resource the message makes is not valid FHIR
        return mapping_error(exc).err
    except Exception as exc:  # a bug of ours must not stop the mapper: recorded, replayable
        log.exception("hl7v2 message %s: mapping failed", record.seq)
        return Err(207, f"internal error while mapping: {type(exc).__name__}: {exc}")


def write_batch(services: Services, planned: Sequence[tuple[Record, Plan | Err]],
                budget: float = BUDGET,
                urgent: threading.Event | None = None) -> list[Outcome]:  # fmt: skip
    """Write planned messages in one transaction, in order, for `budget` seconds at most, or
    until `urgent` is set (the listener waits to commit an arrival: it goes first); the
    outcomes of those written (the others stay received). [] when the database is busy. A
    transaction the database refuses as a whole is tried again with the first message alone;
    refused alone, that message is settled as an error."""
    outcomes: list[Outcome] = []
    try:
        with transaction(services, None) as session:  # the server's own writes, not REST
            started = time.monotonic()
            for record, plan in planned:
                outcomes.append(_write_one(session, services, record, plan))
                if time.monotonic() - started > budget or (urgent and urgent.is_set()):
                    break
    except FhirError as exc:  # 503: the lock stayed taken (by another process)
        log.warning("hl7v2 mapper: database busy, mapping later (%s)", exc)
        return []
    except Exception as exc:  # the database undid the whole transaction (MongoDB aborts one
        # on a server error; a savepoint cannot keep the others): the messages one by one
        # then, so one the database refuses is recorded and the others go on
        if len(planned) > 1:
            log.warning("hl7v2 mapper: a batch failed (%s); writing its messages one by one",
                        exc)  # fmt: skip
            return write_batch(services, planned[:1], budget, urgent)
        log.exception("hl7v2 message %s: the database refused its write", planned[0][0].seq)
        record, err = planned[0][0], Err(207, f"database error while writing: "
                                              f"{type(exc).__name__}: {exc}")  # fmt: skip
        return [_failed(services, record, err, None)]
    for outcome in outcomes:
        if outcome.err is not None:
            log.warning("hl7v2 message %s not mapped: %s", outcome.seq, outcome.err)
    return outcomes


def _write_one(session: Session, services: Services, record: Record, plan: Plan | Err
               ) -> Outcome:  # fmt: skip
    inbox = services.store.inbox
    seq = record.seq
    if isinstance(plan, Plan):
        try:
            applied = apply(session, services, context(services, seq), plan)
            summary = {"resources": sorted(set(applied.resources.values())),
                       "written": len(applied.written)}  # fmt: skip
            inbox.settle(seq, "mapped", None, summary, session=session)
            return Outcome(seq, "mapped", written=tuple(applied.written),
                           awaited=awaited(record.meta))
        except MappingError as exc:
            plan = exc.err
        except Exception as exc:  # rolled back by its savepoint; recorded, replayable
            log.exception("hl7v2 message %s: writing failed", seq)
            plan = Err(207, f"internal error while writing: {type(exc).__name__}: {exc}")
    return _failed(services, record, plan, session)


def _failed(services: Services, record: Record, err: Err, session: Session | None) -> Outcome:
    """Settle a message as not mapped (in `session`, or in a write of its own): kept, with
    where and why, for a replay."""
    where = {"location": err.location, "code": err.code} if err.location else {"code": err.code}
    services.store.inbox.settle(record.seq, "error", str(err), {"err": where},
                                release=tells_sender(record.meta), session=session)  # fmt: skip
    return Outcome(record.seq, "error", err, awaited=awaited(record.meta))


def process(services: Services, record: Record) -> Outcome | None:
    """Map one message now (`hl7 replay`, the operations view); None when the database was
    busy."""
    outcomes = write_batch(services, [(record, plan_of(services, record))], budget=1e9)
    return outcomes[0] if outcomes else None


def planned_after(services: Services, after: int) -> list[tuple[Record, Plan | Err]]:
    """The next received messages after seq `after`, each with its plan."""
    try:
        waiting = services.store.inbox.waiting(CHANNEL, "received", after=after, limit=BATCH)
    except Exception:
        log.exception("hl7v2 mapper: cannot read the inbox")
        return []
    return [(record, plan_of(services, record)) for record in waiting]


#: how the mapper gets the plans of the messages after a seq (planned_after, here or in a
#: process of its own)
Planner = Callable[[int], list[tuple["Record", Plan | Err]]]


class Mapper:
    """The mapping thread. `wake()` after a commit; it also looks every second (messages a
    `hl7 listen --receive-only` process received, or that waited for a busy database). In a
    process of its own (mapper_process.py) `wake` and `urgent` are the listener's, shared
    between the processes, and `plan` asks the planning process."""

    def __init__(self, services: Services, on_outcome: Callable[[Outcome], None] | None = None,
                 wake: Any = None, urgent: Any = None, plan: Planner | None = None
                 ) -> None:  # fmt: skip
        self.services = services
        self._plan = plan or partial(planned_after, services)
        self.on_outcome = on_outcome
        self._wake = wake or threading.Event()
        self._stop = threading.Event()
        #: set by the listener while an inbox commit waits for the write lock
        self.urgent = urgent or threading.Event()
        self._thread = threading.Thread(target=self._run, name="hl7v2-mapper", daemon=True)
        self._planner = ThreadPoolExecutor(1, thread_name_prefix="hl7v2-planner")

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._planner.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._map()
            except Exception:  # the thread must outlive any surprise; the inbox keeps all
                log.exception("hl7v2 mapper: unexpected error; going on in a second")
                self._stop.wait(1.0)

    def _map(self) -> None:
        """Write batches in arrival order; the next batch is planned meanwhile, by the
        planning thread (which waits for the planning process, where there is one: the
        planning's Python work then runs on a second core, not under this interpreter's
        lock)."""
        after = 0  # the last message planned
        planned: list[tuple[Record, Plan | Err]] = []
        ahead: Future[list[tuple[Record, Plan | Err]]] | None = None
        while not self._stop.is_set():
            if not planned:
                if ahead is None:
                    self._wake.clear()
                    ahead = self._planner.submit(self._plan, after)
                planned, ahead = ahead.result(), None
                if not planned:
                    self._wake.wait(1.0)
                    continue
                after = planned[-1][0].seq
                self._wake.clear()
                ahead = self._planner.submit(self._plan, after)
            outcomes = write_batch(self.services, planned, urgent=self.urgent)
            if not outcomes:  # busy: wait, then try the same messages again
                self._stop.wait(0.5)
                continue
            planned = planned[len(outcomes):]
            if self.on_outcome is not None:
                for outcome in outcomes:
                    self.on_outcome(outcome)
            if self.urgent.is_set():  # the arrivals' commit goes before our next transaction (a
                # lock has no queue; a listener in another process polls for it)
                deadline = time.monotonic() + URGENT_WAIT
                while self.urgent.is_set() and time.monotonic() < deadline:
                    self._stop.wait(PAUSE)
            else:
                self._stop.wait(PAUSE)
