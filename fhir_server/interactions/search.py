"""search-type / search-system (http://hl7.org/fhir/R4/http.html#search) and the matching that
conditional interactions share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from ..context import RequestContext
from ..errors import Issue, error, operation_outcome
from ..model import literal
from ..policy import enforce
from ..search import codes
from ..search import query as q
from ..search.paging import Cursor
from ..services import Services
from ..storage.contract import Session
from .elements import filter_elements


@dataclass(frozen=True)
class Criteria:
    """A conditional URL's query, parsed: what `find` matches. Parsing needs no database, so
    a caller may do it before taking the write lock (the HL7 v2 planner does)."""

    pairs: tuple[tuple[str, str], ...]
    clauses: tuple[q.Clause, ...]


def criteria(services: Services, rtype: str, query_string: str) -> Criteria:
    """The query of a conditional URL. Unknown parameters are an error here, since ignoring
    one could update or delete the wrong resource."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if not pairs:
        raise error(412, "invalid", "A conditional request needs search criteria")
    query = q.parse(services.registry, rtype, pairs, 1, 1, strict=True)
    clauses = codes.resolve(query.clauses, services.terminology)
    if not clauses:
        raise error(412, "invalid", "A conditional request needs search criteria")
    return Criteria(tuple(pairs), tuple(clauses))


def find(
    session: Session,
    services: Services,
    ctx: RequestContext,
    rtype: str,
    query: str | Criteria,
    limit: int | None = 2,
    interaction: str | None = None,
) -> list[tuple[str, str]]:
    """(type, id) of current resources matching a conditional URL's query (at most `limit`:
    callers only need to tell none, one and several apart). `interaction` is the caller's (a
    conditional create, update, ...): the matches are confined to what the principal may do
    it on; without it (a feature's own lookup) nothing is confined."""
    found = query if isinstance(query, Criteria) else criteria(services, rtype, query)
    clauses = list(found.clauses)
    if interaction is not None:
        clauses = enforce.narrow(ctx, services, interaction, rtype, clauses)
        session.guard(f"{rtype}?{urlencode(sorted(found.pairs))}")
    return session.match_ids(ctx.base_url, rtype, clauses, limit)


def search(
    session: Session,
    services: Services,
    ctx: RequestContext,
    rtype: str | None,
    pairs: list[tuple[str, str]],
    strict: bool,
    path: str,
    compartment: tuple[str, str] | None = None,
) -> bytes:
    """A searchset Bundle, assembled from stored JSON bytes without re-parsing them.

    `compartment` (type, id) restricts it to that compartment (http.html#vsearch)."""
    settings = services.settings
    query = q.parse(
        services.registry, rtype, pairs, settings.default_count, settings.max_count, strict
    )
    query.clauses = codes.resolve(query.clauses, services.terminology)
    if compartment is not None and rtype is not None:
        query.clauses.insert(0, q.compartment_clause(*compartment, rtype))
    query.clauses = _confined(services, ctx, rtype, query, compartment is not None)
    cursor = Cursor.decode(query.page) if query.page else None
    found = session.search(ctx.base_url, query, cursor, query.summary == "count")
    total, rows, more = found.total, found.rows, found.more
    entries: list[bytes] = []
    base = ctx.base_url
    for row in rows:
        t, i, raw = row[1], row[2], row[3]
        entries.append(_entry(base, t, i, _shape(raw, t, query), b"match"))
    included = session.includes(query, rows)
    for t, i, raw in enforce.keep_visible(session, ctx, services, included):
        entries.append(_entry(base, t, i, _shape(raw, t, query), b"include"))
    if query.ignored:
        outcome = operation_outcome(
            [Issue("not-supported", reason, "warning", name) for name, reason in query.ignored]
        )
        entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
    links = _links(base, path, query, rows, cursor, more)
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = links
    return orjson.dumps(head)[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def _confined(
    services: Services, ctx: RequestContext, rtype: str | None, query: q.Query, compartment: bool
) -> list[q.Clause]:
    """The query's clauses confined to what the principal may search (policy/enforce.py)."""
    if rtype is None:
        return enforce.narrow_system(ctx, services, query.types, query.clauses)
    interaction = "search-compartment" if compartment else "search-type"
    return enforce.narrow(ctx, services, interaction, rtype, query.clauses)


def _entry(base: str, rtype: str, rid: str, raw: bytes, mode: bytes) -> bytes:
    url = f"{base}/{rtype}/{rid}".encode()
    return b'{"fullUrl":"' + url + b'","resource":' + raw + b',"search":{"mode":"' + mode + b'"}}'


def _shape(raw: bytes, rtype: str, query: q.Query) -> bytes:
    if query.summary is None and query.elements is None:
        return raw
    return literal.dumps(filter_elements(literal.loads(raw), query.summary, query.elements))


def _links(
    base: str,
    path: str,
    query: q.Query,
    rows: list[tuple[Any, ...]],
    cursor: Cursor | None,
    more: bool,
) -> list[dict[str, str]]:
    """self shows only the parameters applied (search.html#conformance); next and previous
    continue from the last and first row of this page."""
    applied = [(k, v) for k, v in query.applied if k not in ("_page", "_count")]

    def url(page: Cursor | None) -> str:
        params = [*applied, ("_count", str(query.count))]
        if page is not None:
            params.append(("_page", page.encode()))
        return f"{base}{path}?{urlencode(params)}"

    links = [{"relation": "self", "url": url(cursor)}, {"relation": "first", "url": url(None)}]
    forward = cursor is None or cursor.forward
    if rows and (cursor is not None and (more or forward)):
        links.append({"relation": "previous", "url": url(Cursor(tuple(rows[0][4:]), False))})
    if rows and (more if forward else True):
        links.append({"relation": "next", "url": url(Cursor(tuple(rows[-1][4:])))})
    return links
