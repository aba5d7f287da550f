"""read, vread and history (http://hl7.org/fhir/R4/http.html#read, #vread, #history)."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson

from ..context import RequestContext
from ..errors import FhirError, error
from ..search.values import date_bounds
from ..services import Services
from ..storage.sqlite import Session, Stored


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
    if not version.isdigit():
        raise error(404, "not-found", f"Version '{version}' of {rtype}/{rid} is not known")
    stored = session.version(rtype, rid, int(version))
    if stored is None:
        raise error(404, "not-found", f"Version {version} of {rtype}/{rid} is not known")
    if stored.deleted:
        raise _gone(stored)
    return stored


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
    """A history Bundle, newest first, paged with _count/_offset; _since and _at filter."""
    args = dict(pairs)
    count = min(_int(args, "_count", services.settings.default_count), services.settings.max_count)
    offset = _int(args, "_offset", 0)
    since = _instant(args, "_since", 0)
    at = _instant(args, "_at", 1)
    if rid is not None and rtype is not None and session.current(rtype, rid) is None:
        raise error(404, "not-found", f"{rtype}/{rid} is not known")
    versions, total = session.history(rtype, rid, since, at, offset, count)
    base = ctx.base_url
    entries = [_entry(base, v) for v in versions]
    kept = [(k, v) for k, v in pairs if k in ("_since", "_at")]

    def url(off: int) -> str:
        params = [*kept, ("_count", str(count))] + ([("_offset", str(off))] if off else [])
        return f"{base}{path}?{urlencode(params)}"

    links = [{"relation": "self", "url": url(offset)}, {"relation": "first", "url": url(0)}]
    if offset:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    if offset + count < total:
        links.append({"relation": "next", "url": url(offset + count)})
    head = orjson.dumps(
        {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
    )
    return head[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def _entry(base: str, v: Stored) -> bytes:
    full = f"{base}/{v.type}/{v.id}"
    method = v.method or ("DELETE" if v.deleted else "PUT")
    request_url = v.type if method == "POST" else f"{v.type}/{v.id}"
    status = "201 Created" if method == "POST" else ("204" if v.deleted else "200 OK")
    meta = {
        "fullUrl": full,
        "request": {"method": method, "url": request_url},
        "response": {
            "status": status,
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
    if not raw.isdigit():
        raise error(400, "invalid", f"'{name}' must be a non-negative integer", name)
    return int(raw)


def _instant(args: dict[str, str], name: str, bound: int) -> str | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return date_bounds(raw)[bound]
    except ValueError:
        raise error(400, "invalid", f"'{name}' must be a FHIR instant, got '{raw}'", name) from None
