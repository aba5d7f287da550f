"""Request ids and the access log: one id per request, echoed as X-Request-ID, handed to the
interactions (RequestContext.request_id) and written on one log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fhir_server.access")

#: a caller's id is kept only when it is a plain token; anything else could forge log lines
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when sane (≤ 64 of A-Z a-z 0-9 . _ -), else a new uuid4."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _SANE_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


def parameter_names(query: bytes) -> str:
    """The names of the query parameters, as sent (percent-encoded, so no line breaks), once
    each, without their values: search values are PHI (a family name, a birth date)."""
    names = dict.fromkeys(part.partition(b"=")[0] for part in query.split(b"&") if part)
    return ",".join(name.decode("latin-1") for name in names)


class AccessLog:
    """Outermost middleware: gives the request its id (scope state `request_id`, shared with
    the error handlers), adds X-Request-ID to the response, and logs the request when done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid  # in place: ServerErrorMiddleware sees it
        header = (b"x-request-id", rid.encode())
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %d %.1f ms request_id=%s params=%s",
                scope["method"],
                (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
                status,
                (time.perf_counter() - started) * 1000,
                rid,
                parameter_names(scope.get("query_string", b"")),
                extra={"request_id": rid},
            )
