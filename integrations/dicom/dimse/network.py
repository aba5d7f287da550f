"""pynetdicom with TCP_NODELAY on every association socket. pynetdicom sends a DIMSE command and
its dataset as separate P-DATA PDUs and then waits for the answer (write, write, read): with
Nagle's algorithm on, the second write waits for the peer's delayed ACK, about 40 ms per
C-STORE on Linux (integrations.md §2.2: 20 -> 120 instances/s). pynetdicom 3.0 sets only
SO_REUSEADDR, so both of its sockets are subclassed here."""

from __future__ import annotations

import socket
import time
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import (
    AddressInformation,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

#: the DUL reactor's pause between polls while PDUs flow, and for how long after the last
#: one; pynetdicom's own pause (1 ms, kept when idle) is paid once for the dataset and once
#: for the response of every C-STORE: 360 -> 600 instances/s with an empty handler, measured
BUSY_DELAY, IDLE_DELAY, BUSY_FOR = 0.0001, 0.001, 0.05


class NoDelaySocket(AssociationSocket):
    """The requestor's socket (our SCU side, and C-MOVE sub-associations)."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class EagerDUL(DULServiceProvider):
    """The upper layer of an accepted association, polling socket and send queue every
    0.1 ms while PDUs arrive and every 1 ms (pynetdicom's pace) once the peer has been quiet
    for 50 ms, so an idle association costs what it did."""

    _last_pdu = 0.0

    @property  # type: ignore[override]
    def _run_loop_delay(self) -> float:
        busy = time.monotonic() - self._last_pdu < BUSY_FOR
        return BUSY_DELAY if busy else IDLE_DELAY

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        pass  # pynetdicom sets its constant in __init__

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            self._last_pdu = time.monotonic()
            return True
        return False


class EagerRequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.dul.__class__ = EagerDUL  # not started yet; same state, faster polling
        return assoc


class NoDelayServer(ThreadedAssociationServer):
    """The acceptor: set on the listening socket, Linux passes TCP_NODELAY on to every
    accepted connection; set again per connection for systems that do not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = EagerRequestHandler

    def server_bind(self) -> None:
        super().server_bind()
        assert self.socket is not None
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


class NoDelayAE(AE):
    """An application entity whose associations all run with TCP_NODELAY."""

    def _create_socket(self, assoc: Any, address: AddressInformation, tls_args: Any) -> Any:
        sock = NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock

    def serve(self, address: tuple[str, int], handlers: list[Any]) -> NoDelayServer:
        """Start the acceptor in a thread (pynetdicom's non-blocking start_server, with our
        server class); `shutdown()` stops it."""
        import threading

        server = cast(
            NoDelayServer,
            self.make_server(address, evt_handlers=handlers, server_class=NoDelayServer),
        )
        thread = threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True)
        thread.start()
        self._servers.append(server)
        return server
