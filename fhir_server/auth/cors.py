"""CORS (Fetch standard, "CORS protocol") for browser apps served from other origins, as SMART
App Launch 2.x asks: discovery, the CapabilityStatement and the JWKS may be read from any origin;
the token, introspection and revocation endpoints and the FHIR REST API only from the origins
registered for some client (`fhir-server client add --origin`)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admin import client_origins
from .server import Auth

#: readable by any origin: what a browser app needs before it has registered anything
OPEN = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/auth/jwks"})
#: the OAuth endpoints a browser app calls with fetch (authorize is a navigation, not CORS)
OAUTH = frozenset({"/auth/token", "/auth/introspect", "/auth/revoke"})
FHIR_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
#: request headers a FHIR client sends beyond the CORS-safelisted ones (http.html), and the
#: reason of a break-the-glass read (policy/enforce.py)
ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, "
    "If-Modified-Since, X-Break-Glass-Reason"
)
#: response headers a FHIR client reads (http.html: versioning, create, async, request ids;
#: RFC 6750 §3: the bearer error code of a 401)
EXPOSE_HEADERS = "Location, ETag, Last-Modified, Content-Location, X-Request-ID, WWW-Authenticate"
#: seconds a browser may cache a preflight answer
MAX_AGE = "600"


def _methods(path: str, prefixes: tuple[str, ...]) -> str | None:
    """The methods a cross-origin caller may use on this path; None: no CORS here."""
    if path in OPEN:
        return "GET, HEAD"
    if path in OAUTH:
        return "POST"
    if any(path == p or path.startswith(p + "/") for p in prefixes):
        return FHIR_METHODS
    return None


class Cors:
    """ASGI middleware inside _Edge (which has normalised the path) and outside Bearer, so a
    preflight, which never carries the token, is answered here, and a 401 reaches the app
    with the headers that let it read the reason. A request from an origin no client
    registered gets no Access-Control-* header, and is otherwise served exactly as without
    CORS (a preflight from it goes on to the routes, as any OPTIONS request)."""

    def __init__(self, app: ASGIApp, auth: Auth, prefixes: tuple[str, ...] = ("/fhir",)) -> None:
        self.app, self.auth = app, auth
        #: the APIs served to registered origins: /fhir, and what integrations add
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        methods = _methods(path, self.prefixes) if scope["type"] == "http" else None
        if methods is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1")
        open_ = scope["path"] in OPEN
        allowed = "*" if open_ else None
        if not open_ and origin and await run_in_threadpool(self._registered, origin):
            allowed = origin
        preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers
        if allowed and preflight and origin:
            await send(_preflight(allowed, methods, open_))
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, _adding(send, allowed, open_))

    def _registered(self, origin: str) -> bool:
        return any(origin in client_origins(c) for c in self.auth.store.clients())


def _preflight(allowed: str, methods: str, open_: bool) -> Message:
    """204 to an OPTIONS preflight: what the actual request may be (Fetch §3.2.3)."""
    headers = [
        (b"access-control-allow-origin", allowed.encode("latin-1")),
        (b"access-control-allow-methods", methods.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", MAX_AGE.encode()),
    ]
    if not open_:
        headers.append((b"vary", b"Origin"))
    return {"type": "http.response.start", "status": 204, "headers": headers}


def _adding(send: Send, allowed: str | None, open_: bool) -> Send:
    """`send` with the CORS headers of an actual response: Allow-Origin (the caller's own
    origin, never `*`, where access depends on it) and the exposed headers; and, where the
    answer depends on the Origin, `Vary: Origin` for caches (Fetch §3.2.5)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if not _replaced(k)]
            if allowed:
                headers.append((b"access-control-allow-origin", allowed.encode("latin-1")))
                headers.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))
            if not open_:
                headers = _vary_origin(headers)
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _replaced(name: bytes) -> bool:
    return name.lower() in (b"access-control-allow-origin", b"access-control-expose-headers")


def _vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            headers[i] = (name, value + b", Origin")
            return headers
    return [*headers, (b"vary", b"Origin")]
