"""The MLLP listener: asyncio, many connections, many messages per connection, TCP_NODELAY.

Every message is committed to the inbox (raw bytes, sender, MSH-10, arrival time) before it is
acknowledged: commits of messages arriving together share one transaction (in a thread, off
the event loop). Original mode answers AA once committed (`hl7_ack_mode` commit, Mirth's
"Source Queue ON") or once mapped (`mapped`: AA, or AE naming the field); enhanced mode (MSH-15/
16) answers CA once committed and sends the application ACK when MSH-16 asks. A message sent
again (same sending facility/application and MSH-10) is answered AA and writes nothing. Bad
input gets AR/AE and a stored record where there was a message, or, for bytes outside any
frame, a closed connection; each gets a log line, and other connections go on."""

from __future__ import annotations

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from fhir_server.model.resource import now
from fhir_server.plugins import Opener
from fhir_server.services import Services

from . import ack as acks
from . import mllp
from .ack import Addressing, Err
from .charset import CharsetError, codec_for, decode, encode
from .er7 import Message, ParseError
from .inbox import Arrival
from .mapper_process import MapperProcess
from .receipt import Header, content_errors, header, refusal
from .worker import CHANNEL, Mapper, Outcome

log = logging.getLogger("integrations.hl7v2")

#: frames queued on one connection before it stops reading (a sender that does not wait for
#: its ACKs)
_BACKLOG = 64


@dataclass
class Pending:
    """A message whose ACK waits for its mapping: original mode with `hl7_ack_mode` mapped, or
    an enhanced-mode application ACK."""

    connection: Connection
    to: Addressing
    enhanced: bool
    when: str  # enhanced MSH-16: AL, ER or SU; original mode: "AL"
    future: asyncio.Future[Outcome] | None = None


class Listener:
    """`opener` (how the console script opens Services) runs the mapper in a process of its
    own (mapper_process.py); without one it is a thread of this process (the tests)."""

    def __init__(self, services: Services, map_messages: bool = True,
                 opener: Opener | None = None) -> None:  # fmt: skip
        self.services = services
        self.settings = services.settings
        self.inbox = services.store.inbox
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hl7v2-inbox")
        self.connections: set[Connection] = set()
        self._batch: list[tuple[Arrival, asyncio.Future[tuple[int, bool]]]] = []
        self._committing = False
        self.pending: dict[int, Pending] = {}
        #: outcomes awaited by an ACK that arrived before the ACK started waiting
        self.early: dict[int, Outcome] = {}
        self.mapper: Mapper | MapperProcess | None = None
        if map_messages and opener is not None:
            self.mapper = MapperProcess(services.settings, opener, self._from_mapper)
        elif map_messages:
            self.mapper = Mapper(services, self._from_mapper)
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        if self.mapper is not None:
            self.mapper.start()
        self.server = await self.loop.create_server(
            lambda: Connection(self), host, port, backlog=max(self.settings.hl7_max_connections,
                                                             128), reuse_address=True,
        )  # fmt: skip
        for sock in self.server.sockets:  # accepted connections inherit it on Linux
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.server

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.transport.close()
        if self.mapper is not None:
            await self.loop.run_in_executor(None, self.mapper.stop)
        self.executor.shutdown(wait=True)

    # --- the inbox: group commit ------------------------------------------------------------

    async def commit(self, arrival: Arrival) -> tuple[int, bool]:
        """(seq, duplicate) once the arrival is durable; arrivals waiting together share a
        transaction."""
        future: asyncio.Future[tuple[int, bool]] = self.loop.create_future()
        self._batch.append((arrival, future))
        if not self._committing:
            self._committing = True
            self.loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._batch:
                batch, self._batch = self._batch, []
                arrivals = [a for a, _ in batch]
                if self.mapper is not None:  # the mapper commits what it has and lets us in
                    self.mapper.urgent.set()
                try:
                    results = await self.loop.run_in_executor(
                        self.executor, partial(self.inbox.receive, arrivals))
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    if self.mapper is not None:
                        self.mapper.urgent.clear()
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                if self.mapper is not None and any(a.status == "received" for a in arrivals):
                    self.mapper.wake()
        finally:
            self._committing = False

    # --- one message ------------------------------------------------------------------------

    async def receive(self, raw: bytes, connection: Connection, note: str = "") -> bytes | None:
        """Take one frame's message; the ACK to send (in the message's charset), or None."""
        peer = connection.peer
        received_at = now()
        declared = ""
        try:
            decoded = decode(raw, self.settings.hl7_charset)
            codec, declared, text = decoded.codec, decoded.declared, decoded.text
            charset_error = None
        except CharsetError as exc:  # read the (ASCII) MSH anyway, to answer it
            codec, text, charset_error = "ascii", raw.decode("latin-1"), exc
        try:
            message = Message.parse(text, codec)
        except ParseError as exc:
            log.warning("hl7v2 from %s: not an HL7 message (%s); %d bytes", peer, exc, len(raw))
            await self._store_rejected(raw, peer, received_at, None, f"not parseable: {exc}")
            return self._ack(Addressing(), "AR", [Err(100, f"not an HL7 v2 message: {exc}")])
        h = header(message, declared)
        if h.kind == "ACK":  # never acknowledge an ACK (an answer to our application ACK)
            log.info("hl7v2 from %s: ACK %s for %s", peer, message.msh.value(10),
                     (message.first("MSA") or message.msh).value(2))  # fmt: skip
            return None
        code, errors = "AA", []
        if note:  # an incomplete or oversize frame: refused whatever it holds
            code, errors = "AR", [Err(100, note)]
        elif charset_error is not None:
            code = "AE"
            errors = [Err(103 if charset_error.table else 102, str(charset_error), "MSH", 1, 18)]
        else:
            problem = refusal(h)
            if problem is not None:
                code, errors = problem[0], [problem[1]]
            else:
                errors = content_errors(message, h)
                code = "AE" if errors else "AA"
        if code != "AA":
            log.warning("hl7v2 from %s: %s %s %s refused %s: %s", peer, h.sender, h.type,
                        h.control_id, code, "; ".join(map(str, errors)))  # fmt: skip
            await self._store_rejected(raw, peer, received_at, h, str(errors[0]), codec, code)
            return self._answer(h, code, errors)
        mode = "enhanced" if h.enhanced else self.settings.hl7_ack_mode
        meta = {"charset": codec, "declared": declared, "structure": h.structure,
                "ack_mode": mode, "application_ack": h.application_ack if h.enhanced else ""}
        arrival = Arrival(CHANNEL, h.sender, h.control_id, received_at, peer, h.type, raw, meta)
        try:
            seq, duplicate = await self.commit(arrival)
        except Exception as exc:  # storage down or locked: the sender keeps the message
            log.error("hl7v2 from %s: %s %s not stored: %s", peer, h.type, h.control_id, exc)
            err = Err(207, f"the message could not be stored now, send it again later: {exc}")
            return self._answer(h, "AR", [err])
        if duplicate:
            log.info("hl7v2 from %s: %s %s again (inbox %s): acknowledged, nothing new", peer,
                     h.type, h.control_id, seq)  # fmt: skip
            return self._answer(h, "AA", [])
        return await self._after_commit(h, seq, connection)

    async def _after_commit(self, h: Header, seq: int, connection: Connection) -> bytes | None:
        to = h.addressing
        if h.enhanced:
            accept = self._ack(to, "CA", [], enhanced=True) if h.accept_ack in (
                "", "AL", "SU") else None
            if h.application_ack in ("AL", "ER", "SU") and self.mapper is not None:
                self.pending[seq] = Pending(connection, to, True, h.application_ack)
                if seq in self.early:  # mapped already: the accept ACK goes first
                    self.loop.call_soon(self._mapped, self.early.pop(seq))
            return accept
        if self.settings.hl7_ack_mode != "mapped" or self.mapper is None:
            return self._ack(to, "AA", [])
        future: asyncio.Future[Outcome] = self.loop.create_future()
        self.pending[seq] = Pending(connection, to, False, "AL", future)
        if seq in self.early:
            self._mapped(self.early.pop(seq))
        try:
            outcome = await asyncio.wait_for(future, self.settings.hl7_read_timeout_seconds)
        except TimeoutError:  # committed: it will be mapped; the sender must not resend it
            self.pending.pop(seq, None)
            return self._ack(to, "AA", [], text="accepted; mapping takes longer than usual")
        if outcome.status == "mapped":
            return self._ack(to, "AA", [])
        assert outcome.err is not None
        return self._ack(to, "AE", [outcome.err])

    def _from_mapper(self, outcome: Outcome) -> None:
        """Called in the mapper's thread (or the thread reading the mapper process's pipe)."""
        if outcome.awaited:
            self.loop.call_soon_threadsafe(self._mapped, outcome)

    def _mapped(self, outcome: Outcome) -> None:
        waiting = self.pending.pop(outcome.seq, None)
        if waiting is None:  # its ACK is not waiting yet (or no longer: the sender left)
            if len(self.early) < 10_000:
                self.early[outcome.seq] = outcome
            return
        if waiting.future is not None:
            if not waiting.future.done():
                waiting.future.set_result(outcome)
            return
        ok = outcome.status == "mapped"  # an enhanced-mode application ACK
        if (waiting.when == "ER" and ok) or (waiting.when == "SU" and not ok):
            return
        errors = [] if ok else [outcome.err] if outcome.err else []
        reply = self._ack(waiting.to, "AA" if ok else "AE", errors, enhanced=True)
        if waiting.connection.open:
            waiting.connection.transport.write(mllp.frame(reply))
        else:  # recorded: the sender may query it; there is no connection to send it on
            log.warning("hl7v2: application ACK for inbox %s not sent: the connection closed",
                        outcome.seq)  # fmt: skip

    # --- ACKs and rejected records ---------------------------------------------------------

    def _answer(self, h: Header, code: str, errors: list[Err]) -> bytes | None:
        """Original mode: the code as it is; enhanced mode: as a commit ACK (CE for AE, CR for
        AR), sent when MSH-15 asks for it."""
        if not h.enhanced:
            return self._ack(h.addressing, code, errors)
        commit = {"AA": "CA", "AE": "CE", "AR": "CR"}[code]
        wanted = h.accept_ack or "AL"
        if wanted == "NE" or (wanted == "SU" and commit != "CA") or (
                wanted == "ER" and commit == "CA"):
            return None
        return self._ack(h.addressing, commit, errors, enhanced=True)

    def _ack(self, to: Addressing, code: str, errors: list[Err], text: str = "",
             enhanced: bool = False) -> bytes:  # fmt: skip
        message = acks.build(to, code, errors, text, enhanced=enhanced)
        codec = (codec_for(to.charset) or "ascii") if to.charset else "utf-8"
        return encode(message, codec)

    async def _store_rejected(
        self, raw: bytes, peer: str, received_at: str, h: Header | None, error: str,
        codec: str = "", code: str = "AR",
    ) -> int | None:  # fmt: skip
        arrival = Arrival(
            CHANNEL, (h.sender if h else "") or peer, (h.control_id if h else None) or None,
            received_at, peer, h.type if h else None, raw,
            {"charset": codec, "ack": code}, status="rejected", error=error,
        )  # fmt: skip
        try:
            return (await self.commit(arrival))[0]
        except Exception as exc:
            log.error("hl7v2 from %s: a refused message could not be stored: %s", peer, exc)
            return None


class Connection(asyncio.Protocol):
    """One MLLP connection: frames in order, an ACK for each, in order."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        settings = listener.settings
        self.framer = mllp.Framer(settings.hl7_max_message_bytes)
        self.timeout = settings.hl7_read_timeout_seconds
        self.queue: asyncio.Queue[mllp.Event | str] = asyncio.Queue()
        self.open = False
        self.paused = False
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        name = transport.get_extra_info("peername")
        self.peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
        listener = self.listener
        if len(listener.connections) >= listener.settings.hl7_max_connections:
            log.warning("hl7v2: connection from %s refused: %d connections open (the most "
                        "hl7_max_connections allows)", self.peer, len(listener.connections))
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open = True
        listener.connections.add(self)
        self.task = listener.loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            self.queue.put_nowait(event)
        self._arm()
        if self.queue.qsize() > _BACKLOG and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        """The sender closed its side: its messages still get their ACKs (half close)."""
        self.queue.put_nowait("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.listener.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.queue.put_nowait("lost")

    def _arm(self) -> None:
        """A started frame must go on arriving within the read timeout."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.framer.in_frame:
            self._timer = self.listener.loop.call_later(self.timeout, self.queue.put_nowait,
                                                        "timeout")  # fmt: skip

    async def _run(self) -> None:
        try:
            while True:
                event = await self.queue.get()
                if self.paused and self.queue.qsize() < _BACKLOG // 4:
                    self.paused = False
                    self.transport.resume_reading()
                if isinstance(event, str):
                    if event in ("eof", "timeout") and self.framer.in_frame:
                        why = ("no end of frame within the read timeout" if event == "timeout"
                               else "the connection closed inside a frame")  # fmt: skip
                        await self._reply(self.framer.partial, f"incomplete message: {why}")
                    if event != "lost":
                        self.transport.close()
                    return
                if isinstance(event, mllp.Frame):
                    await self._reply(event.data)
                elif isinstance(event, mllp.Oversize):
                    limit = self.listener.settings.hl7_max_message_bytes
                    await self._reply(event.head, f"the message has {event.size} bytes, more "
                                                  f"than the {limit} allowed")  # fmt: skip
                elif isinstance(event, mllp.Cut):
                    await self._reply(event.data, "incomplete message: a new frame began "
                                                  "before its end")  # fmt: skip
                else:  # bytes outside any frame: the framing is lost, the sender reconnects
                    log.warning("hl7v2 from %s: %d bytes outside any MLLP frame (%r...): "
                                "closing the connection", self.peer, len(event.data),
                                event.data[:40])  # fmt: skip
                    self.transport.close()
                    return
        except Exception:  # never let one connection's surprise reach the others
            log.exception("hl7v2 from %s: connection failed", self.peer)
            self.transport.abort()

    async def _reply(self, data: bytes, note: str = "") -> None:
        if note:
            log.warning("hl7v2 from %s: %s", self.peer, note)
        reply = await self.listener.receive(data, self, note)
        if reply is not None and not self.transport.is_closing():
            self.transport.write(mllp.frame(reply))
