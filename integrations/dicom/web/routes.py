"""The DICOMweb routes (PS3.18 §10): QIDO-RS search, WADO-RS retrieve (instances, metadata,
frames, bulk data, rendered, thumbnail), STOW-RS store; plus IHE IID, which opens a study in the
configured web viewer. Every answer is confined to what the caller's ImagingStudy search shows
(access.py); errors are 4xx with an OperationOutcome saying what and where."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from fhir_server.api import http
from fhir_server.context import ANONYMOUS, RequestContext
from fhir_server.errors import FhirError, error
from fhir_server.services import Services

from .. import audit, results
from ..attributes import tag_of
from ..dataset import BadInstance, check_complete, read_header, valid_uid
from ..matching import BadMatch, match
from ..service import Dicom, dicom_of
from ..storage.query import Match, compile_query
from ..store import Pending, Stored
from ..sync import origin, sync_study
from . import access, multipart, pixels
from .metadata import bulk_base, metadata

log = logging.getLogger("integrations.dicom")
router = APIRouter()
PREFIX = "/dicom-web"
T = TypeVar("T")
DICOM_JSON = "application/dicom+json"
#: QIDO-RS answers at most this many matches per request (a Warning says when there are more)
MAX_RESULTS = 1000
_READ = ["GET", "HEAD"]


# --- plumbing -------------------------------------------------------------------------


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _context(request: Request) -> RequestContext:
    """The caller, as the FHIR routes see them: the bearer token's Principal (auth/bearer.py
    resolves it for /dicom-web too), the base URL and request id worked out for the request."""
    return RequestContext(
        base_url=request.state.base_url,
        principal=getattr(request.state, "principal", ANONYMOUS),
        client_address=request.client.host if request.client else None,
        request_id=request.state.request_id,
    )


def _web_base(request: Request) -> str:
    """The DICOMweb base URL for links (RetrieveURL, BulkDataURI): the FHIR base's origin."""
    return str(request.state.base_url).removesuffix("/fhir") + PREFIX


async def _run(fn: Callable[..., T], *args: Any) -> T:
    """Blocking work (SQLite, files, pydicom) off the event loop."""
    return await run_in_threadpool(fn, *args)


def _dicom(request: Request) -> Dicom:
    return dicom_of(_services(request))


def _uid(value: str, name: str) -> str:
    if not valid_uid(value):
        raise error(400, "invalid", f"'{value[:70]}' is not a UID", name)
    return value


def _accepts(request: Request) -> list[tuple[str, dict[str, str]]]:
    """The Accept header's media ranges in order (a missing header accepts anything)."""
    header = request.headers.get("accept", "") or "*/*"
    return [multipart.parameters(item) for item in _split_accept(header)]


def _split_accept(header: str) -> list[str]:
    """Accept items split at commas outside quotes (a `type="…"` value may hold none, but
    be safe)."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def _json_accepted(request: Request) -> None:
    """QIDO-RS and metadata answer application/dicom+json (PS3.18 §8.7.3.3.1)."""
    for media, _ in _accepts(request):
        if media in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return
    raise error(406, "not-supported", "Only application/dicom+json is offered here")


def _json(items: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(items), status_code=status, media_type=DICOM_JSON,
                    headers=headers)  # fmt: skip


def _not_found(what: str) -> FhirError:
    return error(404, "not-found", f"{what} is not known")


# --- QIDO-RS --------------------------------------------------------------------------


def _qido_params(
    request: Request, level: str
) -> tuple[list[Match], set[int], bool, int, int, list[str]]:
    """(matches, includefield tags, includefield=all, limit, offset, warnings) of a QIDO-RS
    query (PS3.18 §8.3.4): keywords or tags, URL-decoded; includefield repeated or
    comma-separated; fuzzymatching accepted (and ignored: names match case-insensitively)."""
    matches: list[Match] = []
    include: set[int] = set()
    everything = False
    limit, offset = MAX_RESULTS, 0
    warnings: list[str] = []
    for name, value in parse_qsl(request.url.query, keep_blank_values=True):
        if name == "includefield":
            for field in filter(None, (v.strip() for v in value.split(","))):
                if field == "all":
                    everything = True
                    continue
                tag = tag_of(field)
                if tag is None:
                    raise error(400, "invalid", f"includefield '{field}' is not an attribute",
                                "includefield")  # fmt: skip
                include.add(tag)
        elif name in ("limit", "offset"):
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                raise error(400, "invalid", f"'{name}' must be a non-negative integer", name)
            if name == "limit":
                limit = min(int(value), MAX_RESULTS)
            else:
                offset = int(value)
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise error(400, "invalid", "fuzzymatching must be true or false", name)
        else:
            tag = tag_of(name.split(".")[0])
            if tag is None:
                raise error(400, "invalid", f"'{name}' is not a DICOM attribute keyword or tag",
                            name)  # fmt: skip
            try:
                found = match(tag, value, level)
            except BadMatch as exc:
                raise error(400, "invalid", str(exc), name) from None
            if found is not None:
                matches.append(found)
            elif value.strip():
                warnings.append(f"{name} is not supported for matching: ignored")
    return matches, include, everything, limit, offset, warnings


def _search(
    services: Services, ctx: RequestContext, dicom: Dicom, level: str, matches: list[Match],
    limit: int, offset: int,
) -> tuple[list[tuple[Any, ...]], bool]:
    """(rows, more): the matches the caller may see, `offset` skipped, at most `limit`."""
    access.check(services, ctx, "search-type")
    study_at = {"PATIENT": None, "STUDY": 0, "SERIES": 1, "IMAGE": 2}[level]
    if ctx.principal.kind == "anonymous" or study_at is None:
        rows = dicom.index.find(compile_query(level, matches, limit + 1, offset))
        return rows[:limit], len(rows) > limit
    kept: list[tuple[Any, ...]] = []
    page, start = 500, 0
    while len(kept) <= offset + limit:
        rows = dicom.index.find(compile_query(level, matches, page, start))
        seen = access.visible(services, ctx, dicom.index, sorted({r[study_at] for r in rows}))
        kept.extend(r for r in rows if r[study_at] in seen)
        if len(rows) < page:
            break
        start += page
    return kept[offset : offset + limit], len(kept) > offset + limit


async def _qido(
    request: Request, level: str, across: str | None, pinned: list[Match]
) -> Response:
    _json_accepted(request)
    matches, include, everything, limit, offset, warnings = _qido_params(request, level)
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    rows, more = await _run(
        _search, services, ctx, dicom, level, pinned + matches, limit, offset
    )
    study_at = {"STUDY": 0, "SERIES": 1, "IMAGE": 2}[level]
    await _run(audit.accessed, services, ctx, dicom.index, request.method, request.url.path,
               request.url.query, "search-type", [r[study_at] for r in rows])  # fmt: skip
    base = _web_base(request)
    keep = results.wanted(level, include, everything)
    if level == "STUDY":
        items = await _run(results.studies, dicom.index, rows, keep, base)
    elif level == "SERIES":
        items = await _run(results.series, dicom.index, rows, keep, base, across == "all")
    else:
        items = results.instances(rows, keep, base, across)
    headers = {}
    if more:
        warnings.append("There are more matches: use offset to page")
    if warnings:
        headers["Warning"] = ", ".join(f'299 fhir-server: "{w}"' for w in warnings)
    if not items:
        return Response(status_code=204, headers=headers)
    return _json(items, headers=headers)


def _study_match(study: str) -> Match:
    return Match("STUDY", "uid", "exact", _uid(study, "StudyInstanceUID"))


def _series_match(series: str) -> Match:
    return Match("SERIES", "uid", "exact", _uid(series, "SeriesInstanceUID"))


@router.api_route(PREFIX + "/studies", methods=_READ)
async def search_studies(request: Request) -> Response:
    return await _qido(request, "STUDY", None, [])


@router.api_route(PREFIX + "/series", methods=_READ)
async def search_all_series(request: Request) -> Response:
    return await _qido(request, "SERIES", "all", [])


@router.api_route(PREFIX + "/instances", methods=_READ)
async def search_all_instances(request: Request) -> Response:
    return await _qido(request, "IMAGE", "all", [])


@router.api_route(PREFIX + "/studies/{study}/series", methods=_READ)
async def search_series(request: Request, study: str) -> Response:
    return await _qido(request, "SERIES", None, [_study_match(study)])


@router.api_route(PREFIX + "/studies/{study}/instances", methods=_READ)
async def search_study_instances(request: Request, study: str) -> Response:
    return await _qido(request, "IMAGE", "study", [_study_match(study)])


@router.api_route(PREFIX + "/studies/{study}/series/{series}/instances", methods=_READ)
async def search_instances(request: Request, study: str, series: str) -> Response:
    return await _qido(request, "IMAGE", None, [_study_match(study), _series_match(series)])


# --- WADO-RS --------------------------------------------------------------------------


def _instances(
    services: Services, ctx: RequestContext, dicom: Dicom, study: str,
    series: str | None = None, sop: str | None = None,
) -> list[dict[str, Any]]:
    """The instances a retrieve names, 404 when there are none the caller may see (a hidden
    study answers as an unknown one)."""
    _uid(study, "StudyInstanceUID")
    if series is not None:
        _uid(series, "SeriesInstanceUID")
    if sop is not None:
        _uid(sop, "SOPInstanceUID")
    access.check(services, ctx, "read")
    rows = dicom.index.instances(study, series, sop)
    if not rows or not access.visible(services, ctx, dicom.index, [study], "read"):
        what = f"Instance {sop}" if sop else f"Series {series}" if series else f"Study {study}"
        raise _not_found(what)
    return rows


def _read(
    request: Request, services: Services, ctx: RequestContext, dicom: Dicom, study: str,
    series: str | None = None, sop: str | None = None,
) -> list[dict[str, Any]]:
    """_instances, audited as a read of the study (audit.py)."""
    rows = _instances(services, ctx, dicom, study, series, sop)
    audit.accessed(services, ctx, dicom.index, request.method, request.url.path,
                   request.url.query, "read", [study])  # fmt: skip
    return rows


def _dicom_syntax(request: Request) -> None:
    """WADO-RS instances: multipart/related; type="application/dicom", as stored (bytes
    unchanged: `transfer-syntax=*`, or none given, or the stored one)."""
    for media, params in _accepts(request):
        kind = params.get("type", "application/dicom").strip('"')
        if media in ("*/*", "multipart/*") or (
            media == "multipart/related" and kind in ("application/dicom", "*/*")
        ):
            return
        if media == "application/dicom":
            return
    raise error(406, "not-supported",
                'Instances are offered as multipart/related; type="application/dicom"')  # fmt: skip


async def _retrieve(
    request: Request, study: str, series: str | None, sop: str | None
) -> Response:
    _dicom_syntax(request)
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    rows = await _run(_read, request, services, ctx, dicom, study, series, sop)
    bound = multipart.boundary()

    async def body() -> Any:
        for row in rows:
            data = await _run(dicom.store.files.read, row["path"])
            ctype = f"application/dicom; transfer-syntax={row['transfer_syntax']}"
            yield f"--{bound}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        yield f"--{bound}--\r\n".encode()

    return StreamingResponse(body(), media_type=multipart.content_type("application/dicom", bound))


@router.api_route(PREFIX + "/studies/{study}", methods=_READ)
async def retrieve_study(request: Request, study: str) -> Response:
    return await _retrieve(request, study, None, None)


@router.api_route(PREFIX + "/studies/{study}/series/{series}", methods=_READ)
async def retrieve_series(request: Request, study: str, series: str) -> Response:
    return await _retrieve(request, study, series, None)


@router.api_route(PREFIX + "/studies/{study}/series/{series}/instances/{sop}", methods=_READ)
async def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return await _retrieve(request, study, series, sop)


async def _metadata(
    request: Request, study: str, series: str | None, sop: str | None
) -> Response:
    _json_accepted(request)
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    rows = await _run(_read, request, services, ctx, dicom, study, series, sop)
    items = await _run(metadata, dicom.store, rows)
    body = bulk_base(b"[" + b",".join(items) + b"]", _web_base(request))
    return Response(body, media_type=DICOM_JSON)


@router.api_route(PREFIX + "/studies/{study}/metadata", methods=_READ)
async def study_metadata(request: Request, study: str) -> Response:
    return await _metadata(request, study, None, None)


@router.api_route(PREFIX + "/studies/{study}/series/{series}/metadata", methods=_READ)
async def series_metadata(request: Request, study: str, series: str) -> Response:
    return await _metadata(request, study, series, None)


@router.api_route(
    PREFIX + "/studies/{study}/series/{series}/instances/{sop}/metadata", methods=_READ
)
async def instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    return await _metadata(request, study, series, sop)


def _frame_numbers(value: str) -> list[int]:
    numbers = []
    for item in value.split(","):
        item = item.strip()
        if not item.isascii() or not item.isdigit() or len(item) > 9:
            raise error(400, "invalid", f"'{item[:20]}' is not a frame number", "frames")
        numbers.append(int(item))
    return numbers


#: a stored encapsulated syntax -> the image media type of its frames (PS3.18 Table 8.7.3-2)
_IMAGE_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
}


def _frame_choice(request: Request, stored: str) -> tuple[bool, str]:
    """(decode to Explicit VR Little Endian?, part media type) for a frames request: the
    first Accept item that can be met. `transfer-syntax=*` and `*/*` take the frames as
    stored; octet-stream without a syntax means Explicit VR Little Endian (PS3.18
    §8.7.3.5.2)."""
    for media, params in _accepts(request):
        kind = params.get("type", "").strip('"') if media == "multipart/related" else media
        syntax = params.get("transfer-syntax")
        if kind in ("", "*/*", "multipart/*") or media == "*/*":
            return False, "application/octet-stream"
        if kind == "application/octet-stream":
            if syntax == "*" or syntax == stored:
                return False, kind
            if syntax in (None, pixels.EXPLICIT_LE):
                return True, kind
        elif kind == _IMAGE_TYPES.get(stored) and syntax in (None, "*", stored):
            return False, kind
    raise error(406, "not-supported",
                f"The frames are stored as {stored}; none of the accepted media types can be "
                "offered (transfer-syntax=* takes them as stored)")  # fmt: skip


@router.api_route(
    PREFIX + "/studies/{study}/series/{series}/instances/{sop}/frames/{numbers}", methods=_READ
)
async def retrieve_frames(
    request: Request, study: str, series: str, sop: str, numbers: str
) -> Response:
    wanted = _frame_numbers(numbers)
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    row = (await _run(_read, request, services, ctx, dicom, study, series, sop))[0]
    decode, kind = _frame_choice(request, row["transfer_syntax"])
    data = await _run(dicom.store.files.read, row["path"])

    def cut() -> tuple[str, list[bytes]]:
        try:
            return pixels.frames(pixels.load(data), wanted, decode)
        except pixels.PixelError as exc:
            raise error(exc.status, "not-found" if exc.status == 404 else "not-supported",
                        str(exc), "frames") from None  # fmt: skip

    syntax, frames = await _run(cut)
    bound = multipart.boundary()
    part = f"{kind}; transfer-syntax={syntax}"  # Cornerstone reads the syntax per part
    body = b"".join(multipart.parts(((part, f) for f in frames), bound))
    return Response(body, media_type=multipart.content_type(kind, bound))


@router.api_route(
    PREFIX + "/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}", methods=_READ
)
async def retrieve_bulk(
    request: Request, study: str, series: str, sop: str, tag: str
) -> Response:
    """A BulkDataURI of our metadata: the element's value bytes, as stored."""
    number = tag_of(tag) if len(tag) == 8 else None
    if number is None:
        raise _not_found(f"Bulk data {tag[:20]}")
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    row = (await _run(_read, request, services, ctx, dicom, study, series, sop))[0]
    data = await _run(dicom.store.files.read, row["path"])
    ds = await _run(pixels.load, data)
    if number not in ds:
        raise _not_found(f"Bulk data {tag}")
    value = ds[number].value
    payload = bytes(value) if isinstance(value, bytes | bytearray) else b""
    single = any(m == "application/octet-stream" for m, _ in _accepts(request))
    if single:
        return Response(payload, media_type="application/octet-stream")
    bound = multipart.boundary()
    ctype = f"application/octet-stream; transfer-syntax={row['transfer_syntax']}"
    body = b"".join(multipart.parts([(ctype, payload)], bound))
    return Response(body, media_type=multipart.content_type("application/octet-stream", bound))


def _render_params(request: Request) -> tuple[str, tuple[float, float] | None,
                                              tuple[int, int] | None, int]:  # fmt: skip
    """(media type, window, viewport, quality) of a rendered request (PS3.18 §8.3.5.1)."""
    media = "image/jpeg"
    for m, _ in _accepts(request):
        if m in ("image/jpeg", "image/png"):
            media = m
            break
        if m in ("*/*", "image/*"):
            break
    else:
        raise error(406, "not-supported", "Rendered images are offered as image/jpeg or image/png")
    args = dict(parse_qsl(request.url.query))
    window = viewport = None
    quality = 90
    try:
        if "window" in args:
            center, width, *_ = args["window"].split(",")
            window = (float(center), float(width))
            if window[1] <= 0:
                raise ValueError
        if "viewport" in args:
            vw, vh, *_ = args["viewport"].split(",")
            viewport = (int(vw), int(vh))
            if not (0 < viewport[0] <= 8192 and 0 < viewport[1] <= 8192):
                raise ValueError
        if "quality" in args:
            quality = int(args["quality"])
            if not 1 <= quality <= 100:
                raise ValueError
    except ValueError:
        raise error(400, "invalid", "window=center,width[,function], viewport=width,height, "
                    "quality=1..100", "window") from None  # fmt: skip
    return media, window, viewport, quality


async def _rendered(
    request: Request, study: str, series: str | None, sop: str | None, frame: int,
    thumbnail: bool,
) -> Response:
    media, window, viewport, quality = _render_params(request)
    if thumbnail and viewport is None:
        viewport = (128, 128)
    services, ctx, dicom = _services(request), _context(request), _dicom(request)
    rows = await _run(_read, request, services, ctx, dicom, study, series, sop)
    row = rows[len(rows) // 2]  # a series' or study's thumbnail: its middle image
    data = await _run(dicom.store.files.read, row["path"])

    def draw() -> bytes:
        try:
            return pixels.render(pixels.load(data), frame, media, window, viewport, quality)
        except pixels.PixelError as exc:
            raise error(exc.status, "not-found" if exc.status == 404 else "not-supported",
                        str(exc)) from None  # fmt: skip

    return Response(await _run(draw), media_type=media)


_INSTANCE = PREFIX + "/studies/{study}/series/{series}/instances/{sop}"


@router.api_route(_INSTANCE + "/rendered", methods=_READ)
async def rendered_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return await _rendered(request, study, series, sop, 1, False)


@router.api_route(_INSTANCE + "/frames/{number}/rendered", methods=_READ)
async def rendered_frame(
    request: Request, study: str, series: str, sop: str, number: str
) -> Response:
    return await _rendered(request, study, series, sop, _frame_numbers(number)[0], False)


@router.api_route(_INSTANCE + "/thumbnail", methods=_READ)
async def thumbnail_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return await _rendered(request, study, series, sop, 1, True)


@router.api_route(PREFIX + "/studies/{study}/series/{series}/thumbnail", methods=_READ)
async def thumbnail_series(request: Request, study: str, series: str) -> Response:
    return await _rendered(request, study, series, None, 1, True)


@router.api_route(PREFIX + "/studies/{study}/thumbnail", methods=_READ)
async def thumbnail_study(request: Request, study: str) -> Response:
    return await _rendered(request, study, None, None, 1, True)


# --- STOW-RS --------------------------------------------------------------------------

#: PS3.18 Table 10.5.3-2 failure reasons (PS3.4 C.4.2.1.4.1 status codes; PS3.7 C.4.2
#: 0124H Refused: Not authorized)
CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH = 0xA900
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124


def _stow(
    services: Services, ctx: RequestContext, dicom: Dicom,
    parts: list[tuple[dict[str, str], bytes]], study: str | None, base: str,
) -> tuple[int, dict[str, Any]]:
    """Store each part like a C-STORE, each study's instances with its ImagingStudy written
    as the caller (sync.sync_study): the instances of a study whose ImagingStudy the caller
    may not write are refused, 0124H each. The PS3.18 §10.5.3 response: 200 all stored,
    202 some failed, 409 none stored, 403 none stored and all for want of authorization."""
    stored, failed = [], []
    by_study: dict[str, list[tuple[int, Pending]]] = {}
    for number, (headers, data) in enumerate(parts, start=1):
        header = None
        media, _ = multipart.parameters(headers.get("content-type", "application/dicom"))
        try:
            if media != "application/dicom":
                raise BadInstance(f"part {number} is {media}, not application/dicom")
            header = read_header(data)
            check_complete(data, header)  # an upload cut short (C-STORE: by DIMSE framing)
            if study is not None and str(header.get("StudyInstanceUID", "")) != study:
                failed.append(_failed(header, DOES_NOT_MATCH))
                log.warning("STOW-RS part %d: not of study %s", number, study)
                continue
            pending = dicom.store.prepare(data, header)
        except BadInstance as exc:
            log.warning("STOW-RS part %d refused: %s", number, exc)
            reason = CANNOT_UNDERSTAND if exc.tag is None else DOES_NOT_MATCH
            failed.append(_failed(header, reason))
            continue
        by_study.setdefault(pending.row.study["uid"], []).append((number, pending))
    refused = 0
    for uid, items in by_study.items():
        done: list[Stored] = []
        keep = functools.partial(_keep, dicom, done)
        try:
            sync_study(services, dicom.index, uid, ctx, [p for _, p in items], keep)
        except FhirError as exc:
            reason = NOT_AUTHORIZED if exc.status in (403, 404) else PROCESSING_FAILURE
            refused += len(items) if reason == NOT_AUTHORIZED else 0
            log.warning("STOW-RS of study %s refused: %s", uid, exc)
            failed += [_failed(p.row.instance, reason) for _, p in items]
            continue
        except OSError:
            log.exception("STOW-RS of study %s could not be stored", uid)
            failed += [_failed(p.row.instance, PROCESSING_FAILURE) for _, p in items]
            continue
        for item in done:
            url = f"{base}/studies/{item.study}/series/{item.series}/instances/{item.sop}"
            stored.append({
                "00081150": {"vr": "UI", "Value": [item.sop_class]},
                "00081155": {"vr": "UI", "Value": [item.sop]},
                "00081190": {"vr": "UR", "Value": [url]},
            })  # fmt: skip
    body: dict[str, Any] = {}
    studies = sorted({s["00081190"]["Value"][0].split("/series/")[0] for s in stored})
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    elif len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": studies}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    body["00081199"] = {"vr": "SQ", "Value": stored} if stored else {"vr": "SQ"}
    if not failed:
        status = 200
    elif stored:
        status = 202
    else:
        status = 403 if refused == len(failed) else 409
    return status, body


def _keep(dicom: Dicom, done: list[Stored], pending: Pending) -> None:
    done.append(dicom.store.keep(pending))


def _failed(header: Any, reason: int) -> dict[str, Any]:
    """A Failed SOP Sequence item; `header` a dataset or an index row (or None)."""
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if header is not None:
        keys = (("SOPClassUID", "sop_class", "00081150"), ("SOPInstanceUID", "uid", "00081155"))
        for keyword, column, target in keys:
            value = str(header.get(keyword, "") or header.get(column, "") or "")
            if value:
                item[target] = {"vr": "UI", "Value": [value]}
    return dict(sorted(item.items()))


async def _store(request: Request, study: str | None) -> Response:
    services, ctx = _services(request), _context(request)
    access.check_stow(services, ctx)
    if study is not None:
        _uid(study, "StudyInstanceUID")
    media, params = multipart.parameters(request.headers.get("content-type", ""))
    kind = params.get("type", "").strip('"')
    if media != "multipart/related" or kind not in ("application/dicom", ""):
        raise error(415, "not-supported",
                    'STOW-RS takes multipart/related; type="application/dicom"')  # fmt: skip
    body = await http.read_body(request, services.settings)
    try:
        parts = multipart.split(body, request.headers["content-type"])
    except multipart.BadMultipart as exc:
        raise error(400, "invalid", str(exc)) from None
    if not parts:
        raise error(400, "invalid", "the request has no instances")
    dicom = _dicom(request)
    status, answer = await _run(_stow, services, ctx, dicom, parts, study, _web_base(request))
    return _json(answer, status)


@router.post(PREFIX + "/studies")
async def store_instances(request: Request) -> Response:
    return await _store(request, None)


@router.post(PREFIX + "/studies/{study}")
async def store_study_instances(request: Request, study: str) -> Response:
    return await _store(request, study)


# --- IHE IID: open a study in the web viewer --------------------------------------------


@router.get("/iid/IHEInvokeImageDisplay")
async def invoke_image_display(request: Request) -> Response:
    """IHE RAD TF-2 §4.106 (IID): requestType=STUDY&studyUID=uid[,uid] redirects to the
    viewer URL set in `dicom_viewer_url` ({study}: the UIDs, comma-separated)."""
    settings = _services(request).settings
    if not settings.dicom_viewer_url:
        raise error(404, "not-found", "No web viewer is configured (dicom_viewer_url)")
    args = dict(parse_qsl(request.url.query))
    if args.get("requestType") != "STUDY":
        raise error(400, "not-supported", "requestType must be STUDY", "requestType")
    uids = [u for u in args.get("studyUID", "").split(",") if u]
    if not uids or not all(valid_uid(u) for u in uids):
        raise error(400, "invalid", "studyUID must name one or more study UIDs", "studyUID")
    target = settings.dicom_viewer_url.replace("{study}", quote(",".join(uids), safe=",."))
    return RedirectResponse(target, status_code=302)


__all__ = ["PREFIX", "origin", "router"]
