"""build_app(settings): wires storage, the core, the features and the routers into one ASGI app.

This module and the console script are the only ones that import features: the core knows
them only through what they register on Services (operations, write hooks). Integrations are
plugins (plugins.py), found by entry point: nothing here imports them."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import audit, auth, bootstrap, conformance, consultation, referral, subscriptions
from .api import bulk, http
from .api.access import AccessLog
from .api.routes import router
from .consultation import room
from .context import RequestContext
from .errors import FhirError, error
from .interactions.hooks import Access
from .interactions.reindex import check_search_parameter
from .model.resource import now
from .operations.capabilities import capability_statement
from .operations.core import core as core_operations
from .operations.export_worker import Worker as ExportWorker
from .plugins import plugins
from .referral.sweep import run_periodically
from .services import Parts, Services
from .settings import Settings

log = logging.getLogger("fhir_server")


def wire(services: Services) -> Services:
    """Register the core's and the features' operations and hooks, then store the guide."""
    services.operations.extend(core_operations())
    services.hooks.add_on_write(check_search_parameter, ["SearchParameter"], lambda _: True)
    referral.register(services)
    consultation.register(services)  # after referral: Task/$accept, $cancel serve both
    auth.register(services)
    room.register(services)
    subscriptions.register(services)
    for plugin in plugins():  # integrations (plugins.py): register like features, after them
        if plugin.register:
            plugin.register(services)
    settings = services.settings
    bootstrap.load_guide(services, [settings.profiles_dir, settings.terminology_dir])
    # the conformance resources written over REST in earlier runs, before the first request
    services.parts.refresh(services.store)
    # after the guide: storing the server's own conformance resources is not a REST access
    if settings.audit:
        audit.register(services)
    return services


def open_services(settings: Settings, parts: Parts | None = None) -> Services:
    """Services as the server runs them, for the console script's commands too."""
    return wire(Services.open(settings, parts))


def load_demo(services: Services, only_if_empty: bool = False) -> str | None:
    """The demo consortium (referral feature) and its sign-ins, the sample app and users
    (auth feature); what was loaded, for the console. None: the database was not empty."""
    from .auth.demo import register_demo
    from .consultation import demo as consultation_demo
    from .referral.demo import describe, load_if_empty, sign_ins
    from .referral.demo import load_demo as load_consortium

    demo = load_if_empty(services) if only_if_empty else load_consortium(services)
    if demo is None:
        return None
    ctx = RequestContext(
        base_url=services.settings.public_base_url
        or f"http://{services.settings.host}:{services.settings.port}/fhir"
    )
    consultations = consultation_demo.describe(consultation_demo.load(services, ctx))
    users = [*sign_ins(), *consultation_demo.sign_ins()]
    lines = [describe(demo), consultations, register_demo(services.features["auth"].store, users)]
    lines += [plugin.demo(services) for plugin in plugins() if plugin.demo]
    return "\n".join(lines)


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The FHIR API at /fhir; every error leaves as an OperationOutcome. `services`, when
    given, must not be wired yet (tests pass their own, over shared Parts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(
            run_periodically(app.state.services, (consultation.sweep.sweep,))
        )
        exports = ExportWorker(app.state.services)  # Bulk Data export jobs, in a thread
        exports.start()
        yield
        sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await sweeper
        await run_in_threadpool(exports.stop)
        await room.close(app.state.services)
        app.state.services.close()

    app = FastAPI(
        title="FHIR R4 server",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a 307 built from the Host header; _Edge serves the path
    )
    app.state.services = wire(services) if services else open_services(settings)
    services = app.state.services
    app.state.capabilities = _Capabilities(services)
    # SMART: the endpoints in rest.security (oauth-uris) are absolute, so built per base URL
    app.state.capability_security = auth.security
    app.state.capability_extensions = subscriptions.capability_extensions
    app.include_router(auth.router)  # before /fhir/{type}/{id} can claim .well-known
    app.include_router(room.router)  # /consult-room (signalling, recordings), /apps/consult-room
    app.include_router(bulk.router, prefix="/fhir")  # before /fhir/{type}/{id} claims _export
    app.include_router(router, prefix="/fhir")
    app.include_router(subscriptions.router)  # the websocket channel, /fhir/websocket
    for plugin in plugins():  # /dicom-web, /hl7, ...
        if plugin.router is not None:
            app.include_router(plugin.router)
    app.add_api_route("/health", health, methods=["GET", "HEAD"])
    app.add_api_route("/ready", ready, methods=["GET", "HEAD"])
    required = services.settings.auth == "on"
    # the APIs a bearer token and CORS govern
    protected = ("/fhir", *(prefix for p in plugins() for prefix in p.prefixes))
    app.add_middleware(
        auth.Bearer, auth=services.features["auth"], required=required, prefixes=protected
    )
    # a preflight has no token
    app.add_middleware(auth.Cors, auth=services.features["auth"], prefixes=protected)
    app.add_middleware(_FreshParts, services=services, prefixes=protected)
    app.add_middleware(_Edge, settings=services.settings)
    app.add_middleware(AccessLog)  # outermost: every response carries the request id

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        _audit_failure(request, exc)
        return http.error_response(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        detail = {
            404: f"No route for {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        failure = error(exc.status_code, code, detail)
        failure.headers.update(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110 §15.5.6: Allow lists what the path accepts
            failure.headers["Allow"] = _allowed_methods(app, request)
        _audit_failure(request, failure)
        return http.error_response(request, failure)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        failure = error(400, "invalid", "Malformed request")
        _audit_failure(request, failure)
        return http.error_response(request, failure)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        rid = request.state.request_id
        log.exception("unhandled error on %s %s (%s)", request.method, request.url.path, rid)
        failure = error(500, "exception", f"Internal server error; see the server log ({rid})")
        failure.headers["X-Content-Type-Options"] = "nosniff"  # sent outside _Edge, AccessLog
        failure.headers["X-Request-ID"] = rid
        _audit_failure(request, failure)
        return http.error_response(request, failure)

    return app


async def health() -> Response:
    """Liveness: the process answers requests. Touches no database, so a busy or broken
    database never gets a live server restarted; /ready reports that."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def ready(request: Request) -> Response:
    """Readiness: 200 when the database answers a read and has this server's schema; else
    503 with the reason, so a load balancer sends requests elsewhere meanwhile."""
    store = request.app.state.services.store
    reason = await run_in_threadpool(store.unready)
    if reason is None:
        return Response(b'{"status":"ready"}', media_type="application/json")
    body = orjson.dumps({"status": "unavailable", "reason": reason})
    return Response(body, status_code=503, media_type="application/json")


def _audit_failure(request: Request, failure: FhirError) -> None:
    """A request answered with an error is an access too (BALP: failures are audited, the
    OperationOutcome's diagnostics in the event): hand it to the on-access hooks."""
    services: Services = request.app.state.services
    if not services.hooks.on_access or not request.url.path.startswith("/fhir"):
        return
    ctx = getattr(request.state, "ctx", None)
    if ctx is None:
        address = request.client.host if request.client else None
        base = getattr(request.state, "base_url", str(request.base_url).rstrip("/"))
        ctx = RequestContext(base_url=base, client_address=address)
    path, query = request.url.path, request.url.query
    services.hooks.accessed(Access(ctx, request.method, path, query=query, failure=failure))


class _Edge:
    """What holds for every request before routing: the public base URL by one rule (400 for
    a Host not allowed), a trailing slash served as the path without it (as HAPI does; no
    redirect), and `X-Content-Type-Options: nosniff` on every response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if _NOSNIFF not in headers:
                    headers.append(_NOSNIFF)
                message["headers"] = headers
            await send(message)

        path = scope["path"]
        if path in _PROBES:  # probes name the server by its pod or host address
            await self.app(scope, receive, nosniff)
            return
        if len(path) > 1 and path.endswith("/"):
            raw = scope.get("raw_path") or path.encode()
            scope = {**scope, "path": path.rstrip("/") or "/", "raw_path": raw.rstrip(b"/") or b"/"}
        try:
            base = http.public_base(scope, self.settings)
        except FhirError as exc:
            await http.error_response(Request(scope), exc)(scope, receive, nosniff)
            return
        scope = {**scope, "state": {**scope.get("state", {}), "base_url": base}}
        await self.app(scope, receive, nosniff)


class _Capabilities:
    """The CapabilityStatement, made again when the search parameters change (a
    SearchParameter written over REST: services.LiveParts)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.software_date = now()
        self._made: tuple[object, dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        services = self.services
        registry = services.registry
        if self._made is None or self._made[0] is not registry:
            body = capability_statement(
                registry,
                services.operations,
                self.software_date,
                conformance.profiles([services.settings.profiles_dir]),
                services.settings.allow_multiple_delete,
            )
            self._made = (registry, body)
        return self._made[1]


class _FreshParts:
    """Before each FHIR (and DICOMweb) request: the search registry, terminology and
    validator in use are those of the conformance resources stored now (services.LiveParts;
    one row read, and a rebuild off the event loop when another request or worker process
    changed them)."""

    def __init__(self, app: ASGIApp, services: Services, prefixes: tuple[str, ...]) -> None:
        self.app, self.live, self.store = app, services.parts, services.store
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = scope["type"] == "http" and scope["path"].startswith(self.prefixes)
        if api and self.live.stale(self.store):
            await run_in_threadpool(self.live.refresh, self.store)
        await self.app(scope, receive, send)


_NOSNIFF = (b"x-content-type-options", b"nosniff")
#: liveness and readiness, outside /fhir: answered whatever the Host header (no links in them)
_PROBES = frozenset({"/health", "/ready"})


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route accepts on this path. Starlette names only the first route's
    methods, and routes sit in an included router, so ask each route about each method."""
    allowed = [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    ]
    return ", ".join(allowed)


def app_from_env() -> FastAPI:
    """Factory for server worker processes, which receive their settings via the environment."""
    app = build_app(Settings.from_env())
    settle_collector()
    return app


#: allocations between young collections, and collections between older ones (CPython's
#: default is 700, 10, 10)
GC_THRESHOLDS = (50_000, 20, 20)


def settle_collector() -> None:
    """What start-up loaded (R4 structures, terminology, search registry: ~200k objects) lives
    as long as the process, so it is moved out of the cyclic collector's sight (gc.freeze):
    else every full collection walks it, a ~100 ms pause that was the read path's p99. And the
    collector runs less often (GC_THRESHOLDS): a bundle being ingested is ~10^5 live objects,
    which the default thresholds walked again and again, 15-20% of the CPU of an ingest, to
    find almost no cycles (our objects are trees, freed by their reference counts)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
