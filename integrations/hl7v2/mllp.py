"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, Release 1; HL7 v2.5 Appendix C):
`<VT 0x0B> message <FS 0x1C><CR 0x0D>`, no length and no checksum, so a reader works on bytes
and never trusts a frame until its end arrives. A client that sends files and prints the ACKs
(`fhir-server hl7 send`) is here too."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

VT, FS, CR = 0x0B, 0x1C, 0x0D
START = b"\x0b"
END = b"\x1c\x0d"
#: bytes tolerated between frames (senders add CR/LF after the end block)
_BETWEEN = b"\r\n\t \x00"
#: of a frame over the size limit, this much is kept: enough for its MSH (to ACK it) and to
#: show in the operations view
HEAD = 64 * 1024


def frame(message: bytes) -> bytes:
    return START + message + END


@dataclass(frozen=True)
class Frame:
    """A complete message."""

    data: bytes


@dataclass(frozen=True)
class Junk:
    """Bytes outside any frame that are not whitespace: the framing is lost."""

    data: bytes


@dataclass(frozen=True)
class Oversize:
    """A frame longer than the limit: its first HEAD bytes and its full size (the rest was
    read and dropped, never held)."""

    head: bytes
    size: int


@dataclass(frozen=True)
class Cut:
    """A frame without its end: a new start block arrived first."""

    data: bytes


Event = Frame | Junk | Oversize | Cut


class Framer:
    """Splits a byte stream into frames. Several frames per read and frames split over reads
    both work; a frame over `max_bytes` is measured, not kept; each byte is scanned once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.in_frame = False
        #: bytes of the current frame already searched for its end
        self.scanned = 0
        #: bytes of the current frame dropped for being over the limit
        self.dropped = 0

    @property
    def partial(self) -> bytes:
        """What a frame in progress holds so far (b'' between frames)."""
        return bytes(self.buf[:HEAD]) if self.in_frame else b""

    def feed(self, data: bytes) -> Iterator[Event]:
        buf = self.buf
        buf += data
        while buf:
            if not self.in_frame:
                start = buf.find(START)
                junk = (buf if start < 0 else buf[:start]).strip(_BETWEEN)
                if junk:
                    del buf[:]
                    yield Junk(bytes(junk[:HEAD]))
                    return
                if start < 0:
                    del buf[:]
                    return
                del buf[: start + 1]
                self.in_frame, self.scanned, self.dropped = True, 0, 0
            end = buf.find(FS, self.scanned)
            restart = buf.find(START, self.scanned, end if end >= 0 else len(buf))
            if restart >= 0:  # a new frame began before this one ended
                yield Cut(bytes(buf[: min(restart, HEAD)]))
                del buf[:restart]
                self.in_frame = False
                continue
            if end < 0:
                self.scanned = len(buf)
                if self.dropped or len(buf) > self.max_bytes:  # keep the head, drop the rest
                    keep = min(HEAD, len(buf))
                    self.dropped += len(buf) - keep
                    del buf[keep:]
                    self.scanned = keep
                return
            body = bytes(buf[:end])
            del buf[: end + 1]
            self.in_frame = False
            size = len(body) + self.dropped
            yield Oversize(body[:HEAD], size) if size > self.max_bytes else Frame(body)


# --- the client side ----------------------------------------------------------------------


class Client:
    """An MLLP connection that sends messages and reads one reply frame for each."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.framer = Framer(1 << 30)
        self.pending: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.sock.sendall(frame(message))

    def receive(self) -> bytes:
        """The next reply frame; ConnectionError when the peer closes first."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the peer closed the connection without a reply")
            for event in self.framer.feed(data):
                if isinstance(event, Frame):
                    self.pending.append(event.data)
        return self.pending.pop(0)

    def exchange(self, message: bytes) -> bytes:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
