"""The mapper: takes the received messages from the inbox in arrival order (so an A08 never
overtakes its A01, nor an ORU the A40 before it) and maps each in a transaction of its own,
which settles its inbox record too. It runs beside the listener, off the ACK path; a message
it has not mapped when the process stops is mapped after the restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.context import RequestContext
from fhir_server.services import Services

from .ack import Err
from .apply import Applied, Transient, apply
from .charset import decode
from .er7 import Message
from .mapping import MappingError, map_message
from .receipt import header

if TYPE_CHECKING:
    from fhir_server.storage.sqlite import Session
    from fhir_server.storage.sqlite.inbox import Message as Record

CHANNEL = "hl7v2"
log = logging.getLogger("integrations.hl7v2")


@dataclass(frozen=True)
class Outcome:
    """How mapping one inbox message ended: `mapped` (with the resources it wrote) or `error`
    (with where and why)."""

    seq: int
    status: str
    err: Err | None = None
    written: tuple[str, ...] = ()


def context(services: Services, seq: int) -> RequestContext:
    """Whose writes these are: the server's own (no token), one request id per message."""
    settings = services.settings
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}/fhir"
    return RequestContext(base_url=base, request_id=f"hl7v2-{seq}")


def tells_sender(meta: dict[str, Any]) -> bool:
    """Whether the sender learns of a mapping error (an AE after mapping, or an enhanced-mode
    application ACK): then the message leaves the idempotency key, so a corrected resend with
    the same MSH-10 counts as new."""
    return meta.get("ack_mode") == "mapped" or meta.get("application_ack") in ("AL", "ER")


def process(services: Services, record: Record) -> Outcome | None:
    """Map one inbox message and settle it; None when the database was busy (it stays
    received and is tried again)."""
    seq, meta = record.seq, record.meta
    try:
        decoded = decode(record.raw, services.settings.hl7_charset)
        message = Message.parse(decoded.text, decoded.codec)
        plan = map_message(message, header(message, decoded.declared), services.settings)

        def settle(session: Session, applied: Applied) -> None:
            summary = {"resources": sorted(set(applied.resources.values())),
                       "written": len(applied.written)}  # fmt: skip
            services.store.inbox.settle(seq, "mapped", None, summary, session=session)

        applied = apply(services, context(services, seq), plan, settle)
        return Outcome(seq, "mapped", written=tuple(applied.written))
    except Transient as exc:
        log.warning("hl7v2 message %s: database busy, mapping later (%s)", seq, exc)
        return None
    except MappingError as exc:
        err = exc.err
    except Exception as exc:  # a bug of ours must not stop the mapper: recorded, replayable
        log.exception("hl7v2 message %s: mapping failed", seq)
        err = Err(207, f"internal error while mapping: {type(exc).__name__}: {exc}")
    location = {"location": err.location, "code": err.code} if err.location else {"code": err.code}
    try:
        services.store.inbox.settle(seq, "error", str(err), {"err": location},
                                    release=tells_sender(meta))  # fmt: skip
    except Exception as exc:  # the database is busy: the message stays received
        log.warning("hl7v2 message %s: cannot record its error now (%s)", seq, exc)
        return None
    log.warning("hl7v2 message %s (%s %s) not mapped: %s", seq, record.kind,
                record.message_id, err)  # fmt: skip
    return Outcome(seq, "error", err)


class Mapper:
    """The mapping thread. `wake()` after a commit; it also looks every second (messages a
    `hl7 listen --receive-only` process received, or that waited for a busy database)."""

    def __init__(self, services: Services,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:  # fmt: skip
        self.services = services
        self.on_outcome = on_outcome
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hl7v2-mapper", daemon=True)
        #: messages mapped (or failed) since start, for the operations view
        self.done = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        inbox = self.services.store.inbox
        while not self._stop.is_set():
            self._wake.clear()
            try:
                batch = inbox.waiting(CHANNEL, "received", limit=200)
            except Exception:
                log.exception("hl7v2 mapper: cannot read the inbox")
                batch = []
            for record in batch:
                if self._stop.is_set():
                    return
                outcome = process(self.services, record)
                if outcome is None:  # busy: wait, then start again from the oldest
                    self._stop.wait(0.5)
                    break
                self.done += 1
                if self.on_outcome is not None:
                    self.on_outcome(outcome)
            else:
                if not batch:
                    self._wake.wait(1.0)
