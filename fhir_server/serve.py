"""Running the server: uvicorn with one or several worker processes over one database."""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from .errors import Issue, operation_outcome
from .plugins import plugins
from .settings import Settings
from .storage.select import open_store


class Config(uvicorn.Config):
    """Worker processes share a socket that uvicorn binds without a protocol number, so
    asyncio does not set TCP_NODELAY on their connections and each response waits out the
    client's delayed ACK (about 40 ms). Set it on the listening socket: Linux passes it on to
    the accepted connections."""

    #: seconds for a request head to arrive (read by FhirH11Protocol)
    read_timeout: float = 30.0

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> Config:
    """The one uvicorn configuration, used by `serve` and by the tests' live servers. Proxy
    headers are left to the app (api/http.py public_base), which checks them against
    allowed_hosts; connections beyond max_connections get 503. With tls_cert and tls_key
    uvicorn speaks HTTPS itself (TLS 1.2 or newer, see tls_context). uvicorn's own access log
    stays off: it would log query strings, whose search values are PHI (api/access.py logs)."""
    tls: dict[str, Any] = {}
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ValueError("HTTPS needs both tls_cert and tls_key")
        tls = {
            "ssl_certfile": str(settings.tls_cert),
            "ssl_keyfile": str(settings.tls_key),
            "ssl_context_factory": tls_context,
        }
    config = Config(
        app,
        **{
            "host": settings.host,
            "port": settings.port,
            "http": FhirH11Protocol,
            "limit_concurrency": settings.max_connections,
            "proxy_headers": False,
            "log_level": "warning",
            "access_log": False,
            **tls,
            **options,
        },
    )
    config.read_timeout = settings.read_timeout_seconds
    return config


def tls_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's context from the certificate and key, refusing TLS 1.0 and 1.1 (RFC 8996
    deprecates them; SMART App Launch requires TLS 1.2 or newer) whatever OpenSSL's system
    configuration allows."""
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up, plus our loggers (the access log among them) at INFO on
    stderr, so that `serve` prints one line per request."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fhir_server"] = {"handlers": ["default"], "level": "INFO"}
    return config


_NON_ASCII = re.compile(rb"[\x80-\xff]")


def _percent_encode(line: bytes) -> bytes:
    return _NON_ASCII.sub(lambda m: b"%%%02X" % m.group()[0], line)


def _request_timeout() -> bytes:
    body = orjson.dumps(
        operation_outcome([Issue("timeout", "The request head did not arrive in time")])
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/fhir+json; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class FhirH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with two additions for real clients.

    - Raw UTF-8 in the request line (`curl 'http://…/Patient?family=张'`) is percent-encoded
      before h11 parses it, as a browser would have sent it (RFC 3986 §2.5); h11 (and
      httptools) refuse such bytes. Only a request line that starts a packet is rewritten, so
      a pipelined request after another one still gets the parser's 400.
    - A request head must arrive within `read_timeout` seconds (uvicorn has no such timeout:
      a client trickling header bytes held its connection forever); then 408 and close.
    """

    _head_timer: asyncio.TimerHandle | None = None
    _in_request_line = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._in_request_line |= not self.conn.trailing_data[0]
            self._start_head_timer()
        if self._in_request_line:
            line, newline, rest = data.partition(b"\n")
            data = _percent_encode(line) + newline + rest
            self._in_request_line = not newline
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._stop_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            timeout = getattr(self.config, "read_timeout", Config.read_timeout)
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_request_timeout())
            self.transport.close()


def serve(settings: Settings) -> int:
    open_store(settings).close()  # create and migrate once, before workers start
    if settings.demo_on_empty:
        from .app import load_demo, open_services

        services = open_services(settings)
        try:
            loaded = load_demo(services, only_if_empty=True)
        finally:
            services.close()
        if loaded is not None:
            print(loaded, file=sys.stderr)
    os.environ.update(settings.to_env())  # workers build their app from the environment
    scheme = "https" if settings.tls_cert else "http"
    print(
        f"FHIR R4 server on {scheme}://{settings.host}:{settings.port}/fhir "
        f"(database {settings.database}, {settings.workers} worker(s))",
        file=sys.stderr,
    )
    config = uvicorn_config(
        "fhir_server.app:app_from_env",
        settings,
        factory=True,
        workers=settings.workers,
        log_config=log_config(),
    )
    companions = start_companions(settings)
    try:
        if settings.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run()
    finally:
        for process in companions:
            process.terminate()
            process.join(10)
    return 0


def start_companions(settings: Settings) -> list[multiprocessing.process.BaseProcess]:
    """The processes plugins run beside the HTTP workers (e.g. `serve --hl7`: the MLLP
    listener), on the same database and settings. Spawned, not forked: they start from a clean
    interpreter whatever this process has opened."""
    spawn = multiprocessing.get_context("spawn")
    started: list[multiprocessing.process.BaseProcess] = []
    for plugin in plugins():
        if plugin.beside_serve and plugin.beside_serve_if and plugin.beside_serve_if(settings):
            process = spawn.Process(target=companion, args=(plugin.name, settings),
                                    name=plugin.name)  # fmt: skip
            process.start()
            started.append(process)
    return started


def companion(name: str, settings: Settings) -> None:
    """A plugin's process beside `serve`: its Services opened as the app opens them. It ends
    with `serve`, however `serve` ends (uvicorn re-raises SIGTERM after its shutdown, so no
    `finally` of ours runs then): it is sent SIGTERM once its parent is gone."""
    from .app import open_services

    parent = os.getppid()

    def follow_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=follow_parent, name="follow-serve", daemon=True).start()
    plugin = next(p for p in plugins() if p.name == name)
    assert plugin.beside_serve is not None
    plugin.beside_serve(open_services(settings), open_services)
