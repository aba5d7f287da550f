"""HTTP rules of the FHIR REST API: content negotiation, Prefer, and resource headers
(http://hl7.org/fhir/R4/http.html#mime-type, #ops, #versioning)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from ..errors import FhirError, error, operation_outcome
from ..model import literal, xml
from ..model.resource import parse_json
from ..settings import Settings
from ..storage.contract import Stored

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
_JSON_TYPES = (
    "application/fhir+json",
    "application/json",
    "json",
    "application/json+fhir",
    "text/json",
)
_ANY = ("*/*", "application/*")
_XML_TYPES = ("application/fhir+xml", "application/xml", "xml", "text/xml", "application/xml+fhir")


_KINDS = {
    **{kind: "json" for kind in (*_JSON_TYPES, *_ANY)},
    **{kind: "xml" for kind in _XML_TYPES},
}

#: the fhirVersion parameter values of R4 (http.html#version-parameter)
FHIR_VERSIONS = ("4.0", "4.0.1")


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """'application/fhir+json; fhirVersion=4.0' -> ('application/fhir+json', {'fhirversion':
    '4.0'}): the type in lower case and its parameters by lower-case name."""
    kind, *parts = value.split(";")
    params = {}
    for part in parts:
        name, _, param = part.partition("=")
        params[name.strip().lower()] = param.strip().strip('"')
    return kind.strip().lower(), params


def _our_version(params: dict[str, str]) -> bool:
    return params.get("fhirversion", FHIR_VERSIONS[0]) in FHIR_VERSIONS


def negotiate(request: Request) -> str:
    """The format of the response, "json" or "xml" (http.html#mime-type): `_format` wins over
    Accept, whose best-rated acceptable type is taken (`*/*`: JSON). 406 when neither names a
    FHIR format of R4 (a fhirVersion parameter names another version: #version-parameter)."""
    chosen = _format(request, strict=True)
    request.state.fhir_format = chosen
    return chosen


def response_format(request: Request) -> str:
    """The format negotiated for this request; for a request that failed before (or in)
    negotiation, the one it asked for if we can tell, else JSON: an error must be answered."""
    chosen = getattr(request.state, "fhir_format", None)
    if chosen is not None:
        return str(chosen)
    try:
        return _format(request, strict=False)
    except FhirError:
        return "json"


def _format(request: Request, strict: bool) -> str:
    fmt = request.query_params.get("_format")
    if fmt is not None:
        kind, params = media_type(fmt)
        if kind in _JSON_TYPES or kind in _XML_TYPES:
            if _our_version(params):
                return "xml" if kind in _XML_TYPES else "json"
            raise error(406, "not-supported", f"_format '{fmt}': this server is FHIR R4 (4.0)")
        raise error(
            406, "not-supported", f"_format '{fmt}' is not supported; use json or xml", "_format"
        )
    accept = request.headers.get("accept")
    if not accept:
        return "json"
    best, rating = None, 0.0
    for part in accept.split(","):
        kind, params = media_type(part)
        known = _KINDS.get(kind)
        if known is None or not _our_version(params):
            continue
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if q > rating:
            best, rating = known, q
    if best is None and strict:
        raise error(
            406,
            "not-supported",
            f"Cannot produce '{accept}'; this server speaks application/fhir+json and "
            f"application/fhir+xml, fhirVersion={FHIR_VERSIONS[0]}",
        )
    return best or "json"


def wants_raw(request: Request) -> bool:
    """Read of a Binary: its raw content unless _format or Accept names a FHIR format
    (binary.html#rest); as HAPI does, `*/*` or no Accept at all means the raw content."""
    if request.query_params.get("_format") is not None:
        return False
    kinds = [media_type(part)[0] for part in request.headers.get("accept", "").split(",")]
    return not any(k in _JSON_TYPES or k in _XML_TYPES for k in kinds)


def fhir_body(request: Request) -> bool:
    """Whether a body is FHIR (or has no Content-Type); any other body of a Binary
    create/update is its raw content. XML counts as FHIR (then 415), as HAPI reads it."""
    raw = request.headers.get("content-type")
    return raw is None or media_type(raw)[0] in (*_JSON_TYPES, *_XML_TYPES)


def check_content_type(
    request: Request, allowed: tuple[str, ...] = (*_JSON_TYPES, *_XML_TYPES)
) -> str:
    """415 for bodies in a format (or a FHIR version) we cannot read; returns the media type."""
    raw = request.headers.get("content-type", FHIR_JSON)
    media, params = media_type(raw)
    if media not in allowed or not _our_version(params):
        raise error(415, "not-supported", f"Content-Type '{raw}' is not supported")
    return media


def parse_resource(media: str, raw: bytes) -> Any:
    """A FHIR body in either format as its JSON value (FHIR XML through model/xml.py)."""
    if media in _XML_TYPES:
        if not raw:
            raise error(400, "structure", "The request body is empty")
        return xml.from_xml(raw)
    return parse_json(raw)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, streamed: 413 as soon as it exceeds `max_body_bytes` (a chunked upload is never
    held whole), 408 when the client pauses longer than `read_timeout_seconds`. Both close the
    connection, since the rest of the body is left unread."""
    limit = settings.max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
        raise _closing(error(413, "too-costly", f"Request body exceeds the limit of {limit} bytes"))
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), settings.read_timeout_seconds)
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise _closing(
                error(408, "timeout", f"No body data for {settings.read_timeout_seconds} s")
            ) from None
        size += len(chunk)
        if size > limit:
            raise _closing(
                error(413, "too-costly", f"Request body exceeds the limit of {limit} bytes")
            )
        chunks.append(chunk)


def _closing(exc: FhirError) -> FhirError:
    exc.headers["Connection"] = "close"
    return exc


_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def public_base(scope: Scope, settings: Settings) -> str:
    """The FHIR base URL for links, Location and fullUrl (one rule for every request): the
    configured public_base_url; else what the client used, from Forwarded (RFC 7239) or
    X-Forwarded-Host/-Proto/-Port/-Prefix or Host, but only for a host in allowed_hosts
    (400 otherwise), so a spoofed Host never reaches a link."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    headers = Headers(scope=scope)
    forwarded = _forwarded(headers.get("forwarded", ""))
    proto = forwarded.get("proto") or _first(headers, "x-forwarded-proto") or scope["scheme"]
    host = forwarded.get("host") or _first(headers, "x-forwarded-host") or headers.get("host")
    if not host and scope.get("server"):
        host = "{}:{}".format(*scope["server"])
    port = _first(headers, "x-forwarded-port")
    prefix = _first(headers, "x-forwarded-prefix").rstrip("/")
    match = _HOST.fullmatch(host or "")
    if (
        proto not in _DEFAULT_PORTS
        or match is None
        or not (port == "" or (port.isascii() and port.isdigit() and len(port) <= 5))
        or not _PREFIX.fullmatch(prefix)
    ):
        raise error(400, "invalid", "Malformed Host, Forwarded or X-Forwarded-* header")
    if not _allowed(match.group(1), settings):
        raise error(400, "invalid", f"Host not allowed: {match.group(1)} (see allowed_hosts)")
    netloc = match.group(0)
    if port and not match.group(2) and port != _DEFAULT_PORTS[proto]:
        netloc += f":{port}"
    return f"{proto}://{netloc}{prefix}/fhir"


def _forwarded(value: str) -> dict[str, str]:
    """The first (client-side) element of a Forwarded header as {parameter: value}."""
    out = {}
    for pair in value.split(",")[0].split(";"):
        name, _, param = pair.partition("=")
        if param:
            out[name.strip().lower()] = param.strip().strip('"')
    return out


def _first(headers: Headers, name: str) -> str:
    """The first value of a comma-separated X-Forwarded-* header (the client-side proxy's)."""
    return headers.get(name, "").split(",")[0].strip()


def _allowed(hostname: str, settings: Settings) -> bool:
    allowed = {h.strip().lower() for h in settings.allowed_hosts.split(",")}
    allowed.add(settings.host.lower())
    name = hostname.lower()
    return "*" in allowed or name in allowed or name.strip("[]") in allowed


#: for documents a browser renders (the referral slip's HTML needs its inline styles and an
#: inline SVG): nothing else loads, nothing runs, no form posts
DOCUMENT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; " \
    "form-action 'none'"


def document_headers(media: str | None) -> dict[str, str]:
    """A restrictive CSP for a non-FHIR document; none for a PDF, which runs no script in our
    origin and which some browsers' built-in viewers refuse to show under a CSP."""
    if media is not None and media_type(media)[0] == "application/pdf":
        return {}
    return {"Content-Security-Policy": DOCUMENT_CSP}


def prefer(request: Request) -> dict[str, str]:
    """Prefer header tokens, e.g. {'return': 'minimal', 'handling': 'strict'}."""
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def etag(stored: Stored) -> str:
    return f'W/"{stored.version}"'


def http_date(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)


def none_match_fails(header: str, stored: Stored) -> bool:
    """Whether If-None-Match names this version (weak comparison, RFC 9110 §13.1.2); `*`
    names any current version."""
    tags = {t.strip() for t in header.split(",")}
    return "*" in tags or etag(stored) in tags or f'"{stored.version}"' in tags


def not_modified(request: Request, stored: Stored) -> bool:
    """If-None-Match / If-Modified-Since on read (http.html#cread)."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        return none_match_fails(inm, stored)
    ims = request.headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        modified = datetime.fromisoformat(stored.last_updated.replace("Z", "+00:00"))
        return modified.replace(microsecond=0) <= since
    return False


def fhir_response(
    request: Request,
    body: bytes | dict[str, Any] | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A FHIR response in the negotiated format, ending in a newline, as text files do.
    JSON is sent as stored; `_pretty=true` re-indents (only then do we re-parse); XML is
    written from the JSON (model/xml.py)."""
    pretty = request.query_params.get("_pretty") == "true"
    if body is not None and response_format(request) == "xml":
        # a dict may hold stored JSON as orjson.Fragment (bundle.py): through bytes, then
        resource = literal.loads(body if isinstance(body, bytes) else literal.dumps(body))
        return Response(
            content=xml.to_xml(resource, pretty) + (b"" if pretty else b"\n"),
            status_code=status,
            headers=headers,
            media_type=f"{FHIR_XML}; charset=utf-8",
        )
    if isinstance(body, dict) and not pretty:
        body = literal.dumps(body, option=orjson.OPT_APPEND_NEWLINE)
    elif body is not None and pretty:
        parsed = literal.loads(body) if isinstance(body, bytes) else body
        body = literal.dumps(parsed, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    elif isinstance(body, bytes):
        body += b"\n"
    return Response(
        content=body if body is not None else b"",
        status_code=status,
        headers=headers,
        media_type=f"{FHIR_JSON}; charset=utf-8" if body is not None else None,
    )


def resource_headers(stored: Stored, base_url: str, location: bool) -> dict[str, str]:
    headers = {"ETag": etag(stored), "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{base_url}/{stored.type}/{stored.id}/_history/{stored.version}"
    return headers


def error_response(request: Request, exc: FhirError) -> Response:
    return fhir_response(request, operation_outcome(exc.issues), exc.status, exc.headers)
