"""read, vread and history (http://hl7.org/fhir/R4/http.html#read, #vread, #history)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import orjson

from ..context import RequestContext
from ..errors import FhirError, error
from ..policy.enforce import check_history, check_instance
from ..search.paging import Cursor
from ..search.values import date_bounds
from ..services import Services
from ..storage.contract import Session, Stored

#: a version id this server can have written (ASCII digits: str.isdigit() takes '²')
_VERSION = re.compile(r"[0-9]{1,18}")
_DIGITS = re.compile(r"[0-9]+")
#: deeper pages are reached by the `next` links (keyset cursors), whose cost does not grow
MAX_OFFSET = 10_000


def read(session: Session, rtype: str, rid: str) -> Stored:
    """The current version; 404 if never stored, 410 if deleted."""
    found = session.current(rtype, rid)
    if found is None:
        raise error(404, "not-found", f"{rtype}/{rid} is not known")
    stored = found[1]
    if stored.deleted:
        raise _gone(stored)
    return stored


def vread(session: Session, rtype: str, rid: str, version: str) -> Stored:
    if not _VERSION.fullmatch(version):
        raise error(404, "not-found", f"Version '{version}' of {rtype}/{rid} is not known")
    stored = session.version(rtype, rid, int(version))
    if stored is None:
        raise error(404, "not-found", f"Version {version} of {rtype}/{rid} is not known")
    if stored.deleted:
        raise _gone(stored)
    return stored


def read_as(
    session: Session, services: Services, ctx: RequestContext, rtype: str, rid: str,
    version: str | None = None,
) -> Stored:
    """read (or vread of `version`) on behalf of ctx's principal: 404 for what it may not see.
    A version is judged by the resource's current state (the compartment it is in now)."""
    check_instance(session, ctx, services, "read" if version is None else "vread",
                   rtype, rid)
    return read(session, rtype, rid) if version is None else vread(session, rtype, rid, version)


def _gone(stored: Stored) -> FhirError:
    exc = error(410, "deleted", f"{stored.type}/{stored.id} has been deleted")
    exc.headers["ETag"] = f'W/"{stored.version}"'
    return exc


def history(
    session: Session,
    services: Services,
    ctx: RequestContext,
    rtype: str | None,
    rid: str | None,
    pairs: list[tuple[str, str]],
    path: str,
) -> bytes:
    """A history Bundle, newest first; _since and _at filter (http.html#history). Pages
    follow `next` links that carry the key of the last entry (keyset paging); `_offset` is
    accepted up to MAX_OFFSET."""
    args = dict(pairs)
    count = min(_int(args, "_count", services.settings.default_count), services.settings.max_count)
    offset = _int(args, "_offset", 0)
    if offset > MAX_OFFSET:
        raise error(
            400,
            "too-costly",
            f"_offset may be at most {MAX_OFFSET}; follow the Bundle's next links instead",
            "_offset",
        )
    key = _key(args["_page"]) if "_page" in args else None
    since = _instant(args, "_since", 0)
    at = _instant(args, "_at", 1)
    if rid is not None and rtype is not None:
        if session.current(rtype, rid) is None:
            raise error(404, "not-found", f"{rtype}/{rid} is not known")
        check_instance(session, ctx, services, "history-instance", rtype, rid)
    else:
        check_history(ctx, services, rtype)
    versions, total = session.history(rtype, rid, since, at, (offset, key), count)
    base = ctx.base_url
    entries = [_entry(base, v) for v in versions]
    kept = [(k, v) for k, v in pairs if k in ("_since", "_at")]

    def url(extra: list[tuple[str, str]]) -> str:
        return f"{base}{path}?{urlencode([*kept, ('_count', str(count)), *extra])}"

    here = [("_page", args["_page"])] if key else [("_offset", str(offset))] if offset else []
    links = [{"relation": "self", "url": url(here)}, {"relation": "first", "url": url([])}]
    if offset and key is None:
        before = [("_offset", str(max(0, offset - count)))]
        links.append({"relation": "previous", "url": url(before)})
    if len(versions) == count and (key is not None or offset + count < total):
        last = versions[-1]
        cursor = Cursor((last.last_updated, last.type, last.id, last.version))
        links.append({"relation": "next", "url": url([("_page", cursor.encode())])})
    head = orjson.dumps(
        {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
    )
    return head[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def _key(token: str) -> tuple[str, str, str, int]:
    """The (last_updated, type, id, version) a history `_page` cursor continues after."""
    values = Cursor.decode(token).values
    if (
        len(values) != 4
        or not all(isinstance(v, str) for v in values[:3])
        or not isinstance(values[3], int)
        or isinstance(values[3], bool)
    ):
        raise error(400, "invalid", "Invalid or expired page cursor", "_page")
    return values[0], values[1], values[2], values[3]


def _status(v: Stored) -> str:
    """response.status of a history entry: the status the client was given, as a full status
    line (as HAPI writes them). A PUT that created the resource was answered 201; a DELETE
    was answered 200 with an OperationOutcome."""
    if v.method == "POST" or (v.method == "PUT" and v.created):
        return "201 Created"
    return "200 OK"


def _entry(base: str, v: Stored) -> bytes:
    full = f"{base}/{v.type}/{v.id}"
    method = v.method or ("DELETE" if v.deleted else "PUT")
    request_url = v.type if method == "POST" else f"{v.type}/{v.id}"
    meta = {
        "fullUrl": full,
        "request": {"method": method, "url": request_url},
        "response": {
            "status": _status(v),
            "etag": f'W/"{v.version}"',
            "lastModified": v.last_updated,
        },
    }
    out = orjson.dumps(meta)
    if v.json is None:
        return out
    return out[:-1] + b',"resource":' + v.json + b"}"


def _int(args: dict[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw):
        raise error(400, "invalid", f"'{name}' must be a non-negative integer", name)
    return int(raw) if len(raw) <= 18 else 10**18  # beyond every bound; int() has a limit


def _instant(args: dict[str, str], name: str, bound: int) -> str | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return date_bounds(raw)[bound]
    except ValueError:
        raise error(400, "invalid", f"'{name}' must be a FHIR instant, got '{raw}'", name) from None
