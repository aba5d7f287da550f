"""pynetdicom with TCP_NODELAY on every association socket. pynetdicom sends a DIMSE command and
its dataset as separate P-DATA PDUs and then waits for the answer (write, write, read): with
Nagle's algorithm on, the second write waits for the peer's delayed ACK, about 40 ms per
C-STORE on Linux (integrations.md §2.2: 20 -> 120 instances/s). pynetdicom 3.0 sets only
SO_REUSEADDR, so both of its sockets are subclassed here."""

from __future__ import annotations

import socket
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.transport import (
    AddressInformation,
    AssociationSocket,
    ThreadedAssociationServer,
)


class NoDelaySocket(AssociationSocket):
    """The requestor's socket (our SCU side, and C-MOVE sub-associations)."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class NoDelayServer(ThreadedAssociationServer):
    """The acceptor: set on the listening socket, Linux passes TCP_NODELAY on to every
    accepted connection; set again per connection for systems that do not."""

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
