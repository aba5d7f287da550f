"""Running the server: uvicorn with one or several worker processes over one database."""

from __future__ import annotations

import os
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

from .settings import Settings
from .storage.sqlite import SqliteStore


class Config(uvicorn.Config):
    """Worker processes share a socket that uvicorn binds without a protocol number, so
    asyncio does not set TCP_NODELAY on their connections and each response waits out the
    client's delayed ACK (about 40 ms). Set it on the listening socket: Linux passes it on to
    the accepted connections."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def serve(settings: Settings) -> int:
    SqliteStore(settings.database).close()  # create and migrate once, before workers start
    if settings.demo_on_empty:
        from .app import open_services
        from .referral.demo import describe, load_if_empty

        services = open_services(settings)
        try:
            demo = load_if_empty(services)
        finally:
            services.close()
        if demo is not None:
            print(describe(demo), file=sys.stderr)
    os.environ.update(settings.to_env())  # workers build their app from the environment
    print(
        f"FHIR R4 server on http://{settings.host}:{settings.port}/fhir "
        f"(database {settings.database}, {settings.workers} worker(s))",
        file=sys.stderr,
    )
    config = Config(
        "fhir_server.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
    )
    if settings.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
    return 0
