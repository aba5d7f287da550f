"""The FHIR REST routes under /fhir: each maps HTTP to one interaction and back."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..context import ANONYMOUS, RequestContext
from ..errors import error, information
from ..interactions import bundle, read, write
from ..interactions.elements import shape_read
from ..interactions.hooks import Access, transaction
from ..interactions.result import Result
from ..interactions.search import search
from ..model.resource import parse_json
from ..model.validate import check_body, check_id, check_type
from ..operations.registry import Call, operation_input
from ..policy.enforce import check_operation
from ..services import Services
from ..storage.contract import Session, Stored
from . import http

router = APIRouter()
T = TypeVar("T")
#: HEAD wherever GET (http.html: HEAD answers as GET would, without the body)
_READ = ["GET", "HEAD"]
_PATCH_TYPES = ("application/json-patch+json", *http._JSON_TYPES, *http._XML_TYPES)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _context(request: Request) -> RequestContext:
    """The base URL and the request id were worked out once for the request (app.py _Edge,
    http.public_base; api/access.py); the principal from its bearer token, when it had one
    (auth/bearer.py). One context per request, so it is the same wherever it is asked for."""
    known: RequestContext | None = getattr(request.state, "ctx", None)
    if known is not None:
        return known
    ctx = RequestContext(
        base_url=request.state.base_url,
        principal=getattr(request.state, "principal", ANONYMOUS),
        client_address=request.client.host if request.client else None,
        request_id=request.state.request_id,
        break_glass=_break_glass_reason(request),
    )
    request.state.ctx = ctx  # for the audit of a request that fails (app.py)
    return ctx


def _break_glass_reason(request: Request) -> str | None:
    """The X-Break-Glass-Reason header as text: UTF-8 as curl sends it, or percent-encoded
    UTF-8 as a browser must send it (fetch allows only ISO-8859-1 header values); blank
    reasons are "" (the policy refuses them)."""
    raw = request.headers.get("x-break-glass-reason")
    if raw is None:
        return None
    text = raw.encode("latin-1").decode("utf-8", errors="replace")
    return " ".join(unquote(text).split())


def _audit(
    request: Request,
    interaction: str,
    resources: tuple[Stored, ...] = (),
    bundle: bytes | None = None,
    query: str | None = None,
) -> None:
    """Tell the features what this request read (hooks.Access: the audit trail)."""
    services = _services(request)
    if services.hooks.on_access:
        q = request.url.query if query is None else query
        path = request.url.path
        access = Access(_context(request), request.method, path, interaction, resources, bundle, q)
        services.hooks.accessed(access)


async def _body(
    request: Request, rtype: str | None = None, rid: str | None = None
) -> dict[str, Any]:
    settings = _services(request).settings
    if rtype == "Binary" and not http.fhir_body(request):
        return _binary(request, await http.read_body(request, settings), rid)
    media = http.check_content_type(request)
    raw = await http.read_body(request, settings)
    return check_body(http.parse_resource(media, raw), rtype)


def _binary(request: Request, raw: bytes, rid: str | None) -> dict[str, Any]:
    """A body in its own media type, stored as a Binary (binary.html#rest); like HAPI, the
    X-Security-Context header gives its securityContext."""
    content_type = " ".join(request.headers["content-type"].split())
    binary: dict[str, Any] = {"resourceType": "Binary", "contentType": content_type}
    if rid is not None:
        binary["id"] = rid
    if raw:
        binary["data"] = base64.b64encode(raw).decode("ascii")
    context = request.headers.get("x-security-context", "").strip()
    if context:
        binary["securityContext"] = {"reference": context}
    return binary


async def _in_write(request: Request, work: Callable[[Session], T]) -> T:
    services = _services(request)

    ctx = _context(request)

    def run() -> T:
        with transaction(services, ctx) as session:
            return work(session)

    return await run_in_threadpool(run)


WriteWork = Callable[[Session, Services, RequestContext, Any], Result]


async def _write(
    request: Request, rtype: str, rid: str | None, work: WriteWork, body: bool = True
) -> Response:
    """The shape every write takes: check the URL, read and validate the body (if any)
    outside the lock, then do the work in one write transaction."""
    http.negotiate(request)
    check_type(rtype)
    if rid is not None:
        check_id(rid)
    services, ctx = _services(request), _context(request)
    resource = None
    if body:
        resource = services.validator(await _body(request, rtype, rid))
        if rtype in services.hooks.before_write:  # they may wait on the network
            await run_in_threadpool(services.hooks.check, rtype, resource)
    result = await _in_write(request, lambda s: work(s, services, ctx, resource))
    return _result(request, ctx, result)


def _result(request: Request, ctx: RequestContext, result: Result) -> Response:
    """Status, headers and the body chosen by Prefer: return (http.html#ops)."""
    stored = result.stored
    headers: dict[str, str] = {}
    if stored is not None:
        headers = http.resource_headers(
            stored, ctx.base_url, result.location and result.status == 201
        )
    preference = http.prefer(request).get("return", "representation")
    body: bytes | dict[str, Any] | None
    status = result.status
    if preference == "minimal":
        body = None
    elif preference == "OperationOutcome":
        body = (
            result.body
            if isinstance(result.body, dict)
            else information(f"{request.method} succeeded with status {result.status}")
        )
        status = 200 if status == 204 else status  # a 204 has no body to carry it
    elif stored is not None and stored.json is not None:
        body = stored.json
    else:
        body = result.body
    return http.fhir_response(request, body, status, headers)


# --- whole system -------------------------------------------------------------------------


@router.api_route("/metadata", methods=_READ)
async def capabilities(request: Request) -> Response:
    http.negotiate(request)
    return http.fhir_response(request, _capabilities(request))


def _capabilities(request: Request) -> dict[str, Any]:
    """The CapabilityStatement, with the authorization server's endpoints (absolute, so per
    base URL) in rest.security when a feature registered them."""
    body: dict[str, Any] = request.app.state.capabilities()
    security = getattr(request.app.state, "capability_security", None)
    if security is not None:
        rest = {**body["rest"][0], "security": security(request.state.base_url)}
        body = {**body, "rest": [rest, *body["rest"][1:]]}
    extensions = getattr(request.app.state, "capability_extensions", None)
    if extensions is not None:  # rest.extension, absolute URLs too (the websocket channel)
        rest = {**body["rest"][0], "extension": extensions(request.state.base_url)}
        body = {**body, "rest": [rest, *body["rest"][1:]]}
    if _services(request).settings.auth == "off":  # said loudly: clients and auditors see it
        warning = (
            "WARNING: authorization is off (FHIR_SERVER_AUTH=off, for development and test "
            "harnesses): requests without a token are served with full access."
        )
        rest = body["rest"][0]
        security = {**rest.get("security", {}), "description": warning}
        body = {**body, "rest": [{**rest, "security": security}, *body["rest"][1:]]}
    return body


@router.post("")
async def batch_or_transaction(request: Request) -> Response:
    http.negotiate(request)
    body = await _body(request, "Bundle")
    ctx = _context(request)
    services = _services(request)
    preference = http.prefer(request).get("return", "minimal")
    capabilities = _capabilities(request)
    result = await run_in_threadpool(
        bundle.process, services, ctx, body, preference, capabilities
    )
    return http.fhir_response(request, result)


@router.api_route("", methods=_READ)
async def search_system(request: Request) -> Response:
    return await _search(request, None)


@router.api_route("/_history", methods=_READ)
async def history_system(request: Request) -> Response:
    return await _history(request, None, None)


# --- type level ---------------------------------------------------------------------------


@router.api_route("/{rtype}", methods=_READ)
async def search_type(request: Request, rtype: str) -> Response:
    if rtype.startswith("$"):  # GET /fhir/$name: a system-level operation
        return await _operation(request, "system", None, None, rtype)
    return await _search(request, rtype)


@router.post("/{rtype}/_search")
async def search_post(request: Request, rtype: str) -> Response:
    """POST /Type/_search: parameters in the URL and/or a form body (search.html#search)."""
    check_type(rtype)
    http.check_content_type(request, ("application/x-www-form-urlencoded",))
    raw = await http.read_body(request, _services(request).settings)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            400, "invalid", f"The form body is not UTF-8 (byte {exc.start}): {exc.reason}"
        ) from None
    form = parse_qsl(text, keep_blank_values=True)
    return await _search(request, rtype, list(request.query_params.multi_items()) + form)


async def _search(
    request: Request,
    rtype: str | None,
    pairs: list[tuple[str, str]] | None = None,
    compartment: tuple[str, str] | None = None,
) -> Response:
    http.negotiate(request)
    if rtype is not None:
        check_type(rtype)
    services, ctx = _services(request), _context(request)
    strict = http.prefer(request).get("handling") == "strict"
    items = pairs if pairs is not None else list(request.query_params.multi_items())
    path = f"/{rtype}" if rtype else ""
    if compartment is not None:
        path = f"/{compartment[0]}/{compartment[1]}{path}"

    def run() -> bytes:
        reader = services.store.reader()
        return search(reader, services, ctx, rtype, items, strict, path, compartment)

    found = await run_in_threadpool(run)
    query = request.url.query if pairs is None else urlencode(items)
    _audit(request, "search-type" if rtype else "search-system", bundle=found, query=query)
    return http.fhir_response(request, found)


@router.api_route("/{rtype}/_history", methods=_READ)
async def history_type(request: Request, rtype: str) -> Response:
    check_type(rtype)
    return await _history(request, rtype, None)


async def _history(request: Request, rtype: str | None, rid: str | None) -> Response:
    http.negotiate(request)
    services, ctx = _services(request), _context(request)
    pairs = list(request.query_params.multi_items())
    path = "/".join(p for p in ("", rtype, rid, "_history") if p is not None)

    def run() -> bytes:  # off the event loop: a long history must not stall other requests
        return read.history(services.store.reader(), services, ctx, rtype, rid, pairs, path)

    found = await run_in_threadpool(run)
    level = "history-instance" if rid else "history-type" if rtype else "history-system"
    _audit(request, level, bundle=found)
    return http.fhir_response(request, found)


@router.post("/{rtype}")
async def create(request: Request, rtype: str) -> Response:
    if rtype.startswith("$"):  # POST /fhir/$name: a system-level operation
        return await _operation(request, "system", None, None, rtype)
    if_none_exist = request.headers.get("if-none-exist")
    return await _write(
        request,
        rtype,
        None,
        lambda s, sv, ctx, body: write.create(s, sv, ctx, rtype, body, if_none_exist),
    )


@router.put("/{rtype}")
async def conditional_update(request: Request, rtype: str) -> Response:
    query, if_match = request.url.query, request.headers.get("if-match")
    return await _write(
        request,
        rtype,
        None,
        lambda s, sv, ctx, body: write.conditional_update(s, sv, ctx, rtype, query, body, if_match),
    )


@router.delete("/{rtype}")
async def conditional_delete(request: Request, rtype: str) -> Response:
    query = request.url.query
    return await _write(
        request,
        rtype,
        None,
        lambda s, sv, ctx, _: write.conditional_delete(s, sv, ctx, rtype, query),
        body=False,
    )


@router.patch("/{rtype}")
async def conditional_patch(request: Request, rtype: str) -> Response:
    check_type(rtype)
    services, ctx = _services(request), _context(request)
    query = request.url.query

    def target(s: Session) -> str:
        found = write.find(s, services, ctx, rtype, query, interaction="patch")
        if len(found) != 1:
            raise error(
                412,
                "multiple-matches",
                f"Conditional patch matched {len(found)} {rtype}; exactly one needed",
            )
        return found[0][1]

    return await _patch(request, rtype, target)


# --- instance level -----------------------------------------------------------------------


@router.api_route("/{rtype}/{rid}", methods=_READ)
async def read_instance(request: Request, rtype: str, rid: str) -> Response:
    if rid.startswith("$"):  # a type-level operation invoked with GET
        return await _operation(request, "type", rtype, None, rid)
    raw = rtype == "Binary" and http.wants_raw(request)
    if not raw:
        http.negotiate(request)
    check_type(rtype)
    check_id(rid)
    services, ctx = _services(request), _context(request)
    stored = await run_in_threadpool(
        lambda: read.read_as(services.store.reader(), services, ctx, rtype, rid)
    )
    _audit(request, "read", (stored,))
    return _read_response(request, stored, raw)


def _read_response(request: Request, stored: Any, raw: bool = False) -> Response:
    headers = http.resource_headers(stored, "", False)
    if http.not_modified(request, stored):
        return Response(status_code=304, headers=headers)
    if raw:
        return _raw_binary(stored, headers)
    body = shape_read(stored.json, dict(request.query_params))
    return http.fhir_response(request, body, 200, headers)


def _raw_binary(stored: Any, headers: dict[str, str]) -> Response:
    """A Binary's content in its own media type, with its securityContext in
    X-Security-Context (binary.html#rest)."""
    binary = orjson.loads(stored.json)
    media = binary.get("contentType") or "application/octet-stream"
    headers = {**headers, **http.document_headers(media)}
    context = (binary.get("securityContext") or {}).get("reference")
    if context:
        headers["X-Security-Context"] = context
    return Response(base64.b64decode(binary.get("data", "")), 200, headers, media)


@router.api_route("/{rtype}/{rid}/_history/{version}", methods=_READ)
async def vread(request: Request, rtype: str, rid: str, version: str) -> Response:
    raw = rtype == "Binary" and http.wants_raw(request)
    if not raw:
        http.negotiate(request)
    check_type(rtype)
    check_id(rid)
    services, ctx = _services(request), _context(request)
    stored = await run_in_threadpool(
        lambda: read.read_as(services.store.reader(), services, ctx, rtype, rid, version)
    )
    _audit(request, "vread", (stored,))
    return _read_response(request, stored, raw)


@router.api_route("/{rtype}/{rid}/_history", methods=_READ)
async def history_instance(request: Request, rtype: str, rid: str) -> Response:
    check_type(rtype)
    check_id(rid)
    return await _history(request, rtype, rid)


@router.put("/{rtype}/{rid}")
async def update(request: Request, rtype: str, rid: str) -> Response:
    if_match = request.headers.get("if-match")
    if_none_match = request.headers.get("if-none-match")

    def work(s: Session, sv: Services, ctx: RequestContext, body: Any) -> Result:
        if if_none_match is not None:
            _check_none_match(s, rtype, rid, if_none_match)
        return write.update(s, sv, ctx, rtype, rid, body, if_match)

    return await _write(request, rtype, rid, work)


def _check_none_match(session: Session, rtype: str, rid: str, header: str) -> None:
    """412 when If-None-Match names the current version: `*` on PUT means "only create"
    (RFC 9110 §13.1.2); a deleted resource has no current version."""
    current = session.current(rtype, rid)
    if current is not None and not current[1].deleted and http.none_match_fails(header, current[1]):
        raise error(
            412,
            "conflict",
            f"If-None-Match {header}: {rtype}/{rid} exists at version {current[1].version}",
        )


@router.delete("/{rtype}/{rid}")
async def delete(request: Request, rtype: str, rid: str) -> Response:
    if_match = request.headers.get("if-match")
    return await _write(
        request,
        rtype,
        rid,
        lambda s, sv, ctx, _: write.delete(s, sv, ctx, rtype, rid, if_match),
        body=False,
    )


@router.patch("/{rtype}/{rid}")
async def patch(request: Request, rtype: str, rid: str) -> Response:
    check_type(rtype)
    check_id(rid)
    return await _patch(request, rtype, lambda _s: rid)


async def _patch(request: Request, rtype: str, target: Callable[[Session], str]) -> Response:
    """JSON Patch (application/json-patch+json) or FHIRPath Patch (a Parameters body)."""
    http.negotiate(request)
    media = http.check_content_type(request, _PATCH_TYPES)
    raw = await http.read_body(request, _services(request).settings)
    json_patch = media == "application/json-patch+json"
    document = parse_json(raw) if json_patch else http.parse_resource(media, raw)
    services, ctx = _services(request), _context(request)
    if_match = request.headers.get("if-match")
    result = await _in_write(
        request,
        lambda s: write.patch(s, services, ctx, rtype, target(s), document, json_patch, if_match),
    )
    return _result(request, ctx, result)


# after the instance routes, so /Type/id/_history is not taken for a compartment
@router.api_route("/{ctype}/{cid}/{rtype}", methods=_READ)
async def search_compartment(request: Request, ctype: str, cid: str, rtype: str) -> Response:
    """Compartment search, e.g. GET /Patient/123/Observation (search.html#compartments),
    or an instance-level operation invoked with GET."""
    if rtype.startswith("$"):
        return await _operation(request, "instance", ctype, cid, rtype)
    check_type(ctype)
    check_id(cid)
    return await _search(request, rtype, compartment=(ctype, cid))


# --- operations ---------------------------------------------------------------------------


@router.post("/{rtype}/{rid}/{name}")
async def instance_operation(request: Request, rtype: str, rid: str, name: str) -> Response:
    return await _operation(request, "instance", rtype, rid, name)


@router.post("/{rtype}/{name}")
async def type_operation(request: Request, rtype: str, name: str) -> Response:
    return await _operation(request, "type", rtype, None, name)


async def _operation(
    request: Request, level: str, rtype: str | None, rid: str | None, name: str
) -> Response:
    """Dispatch `$name` through the operation registry (operations.html#executing)."""
    if not name.startswith("$"):
        raise error(404, "not-found", f"No route for {request.url.path}")
    if rtype is not None:
        check_type(rtype)
    if rid is not None:
        check_id(rid)
    services, ctx = _services(request), _context(request)
    method = "GET" if request.method == "HEAD" else request.method
    op = services.operations.find(name, level, rtype, method)
    await run_in_threadpool(
        check_operation, services.store.reader(), ctx, services, name, rtype, rid
    )
    body: Any = None
    if request.method == "POST":
        raw = await http.read_body(request, services.settings)
        if raw:
            body = http.parse_resource(http.check_content_type(request), raw)
    query = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")
    ]
    parameters = operation_input(body, query)
    if_match = request.headers.get("if-match")
    call = Call(services, ctx, rtype, rid, method, parameters, body, if_match)
    outcome = await run_in_threadpool(op.handler, call)
    _audit(request, "operation")
    if outcome.content is not None:
        headers = {**outcome.headers, **http.document_headers(outcome.media_type)}
        return Response(outcome.content, outcome.status, headers, outcome.media_type)
    http.negotiate(request)
    return http.fhir_response(request, outcome.resource, outcome.status, outcome.headers)
