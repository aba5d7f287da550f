"""search-type / search-system (http://hl7.org/fhir/R4/http.html#search) and the matching that
conditional interactions share."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from ..context import RequestContext
from ..errors import Issue, error, operation_outcome
from ..search import query as q
from ..search.paging import Cursor, after, order_by
from ..search.sql import Compiler, SortWalk
from ..services import Services
from ..storage.sqlite import Session
from .elements import filter_elements


def find(
    session: Session,
    services: Services,
    ctx: RequestContext,
    rtype: str,
    query_string: str,
    limit: int | None = 2,
) -> list[tuple[str, str]]:
    """(type, id) of current resources matching a conditional URL's query (at most `limit`:
    callers only need to tell none, one and several apart). Unknown parameters are an error
    here, since ignoring one could update or delete the wrong resource."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if not pairs:
        raise error(412, "invalid", "A conditional request needs search criteria")
    query = q.parse(services.registry, rtype, pairs, 1, 1, strict=True)
    if not query.clauses:
        raise error(412, "invalid", "A conditional request needs search criteria")
    where, args = Compiler(ctx.base_url).where(rtype, query.clauses)
    sql = f"SELECT r.type, r.id FROM resource r WHERE {where}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = session.query(sql, args)
    return [(r[0], r[1]) for r in rows]


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
    if compartment is not None and rtype is not None:
        query.clauses.insert(0, q.compartment_clause(*compartment, rtype))
    compiler = Compiler(ctx.base_url, tuple(query.types))
    needs_resource = any(p.code in ("_id", "_lastUpdated") for p, _ in query.sort)
    relation, where, args = compiler.source(rtype, query.clauses, needs_resource)
    if query.types:
        where += f" AND r.type IN ({', '.join('?' * len(query.types))})"
        args += query.types
    total: int | None = None
    if query.total != "none" or query.summary == "count":
        total = session.query(f"SELECT count(*) FROM {relation} r WHERE {where}", args)[0][0]
    entries: list[bytes] = []
    rows: list[tuple[Any, ...]] = []
    cursor = Cursor.decode(query.page) if query.page else None
    more = False
    if query.summary != "count":
        page = _page(session, compiler, query, (relation, where, args), cursor, total)
        more = len(page) > query.count
        page = page[: query.count]
        if cursor is not None and not cursor.forward:
            page.reverse()
        rows = _with_json(session, page)
    base = ctx.base_url
    for row in rows:
        t, i, raw = row[1], row[2], row[3]
        entries.append(_entry(base, t, i, _shape(raw, t, query), b"match"))
    for t, i, raw in _includes(session, query, [(r[0], r[1], r[2]) for r in rows]):
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


def _page(
    session: Session,
    compiler: Compiler,
    query: q.Query,
    matches: tuple[str, str, list[Any]],
    cursor: Cursor | None,
    total: int | None,
) -> list[tuple[Any, ...]]:
    """Up to count + 1 rows (rid, *sort key values) after the cursor, in sort order.

    Only row ids and keys are sorted; the JSON is fetched for the page alone afterwards."""
    relation, where, args = matches
    keys = compiler.sort_keys(query)
    forward = cursor is None or cursor.forward
    limit = query.count + 1
    walk = compiler.sort_walk(query) if forward and not query.types else None
    if walk is not None:
        return _walk_sort_index(session, compiler, walk, query, matches, cursor, limit, total)
    if cursor is not None:
        beyond, beyond_args = after(keys, cursor)
        where, args = f"{where} AND {beyond}", [*args, *beyond_args]
    order, order_args = order_by(keys, forward)
    columns = ", ".join(k.sql for k in keys)
    key_args = [a for k in keys for a in k.args]
    return session.query(
        f"SELECT r.rid, {columns} FROM {relation} r WHERE {where} {order} LIMIT ?",
        [*key_args, *args, *order_args, limit],
    )


#: above this many matches a sorted page checks candidate rows instead of listing matches
WALK_BY_ROW = 5000


def _walk_sort_index(
    session: Session,
    compiler: Compiler,
    walk: SortWalk,
    query: q.Query,
    matches: tuple[str, str, list[Any]],
    cursor: Cursor | None,
    limit: int,
    total: int | None,
) -> list[tuple[Any, ...]]:
    """`_sort` on one parameter, read in order from that parameter's index instead of
    computing the key of every match and sorting them all: the cost follows the page, not
    the number of matches. Each resource is represented by its first value in sort order
    (search.html#sort); resources without a value follow, in row order (nulls last)."""
    relation, where, args = matches
    table, col, desc, code = walk.table, walk.column, walk.desc, walk.code
    direction = "DESC" if desc else "ASC"
    member, member_args = "", []
    if query.clauses:  # no clauses: every index row of the type is a match
        member, member_args = f"AND s.rid IN (SELECT r.rid FROM {relation} r WHERE {where})", args
        checks = [compiler.correlated(query.rtype, c, "s") for c in query.clauses]
        if total is not None and total > WALK_BY_ROW and all(checks):
            # many matches: checking rows as the walk meets them beats listing them all
            pairs = [pair for pair in checks if pair is not None]
            member = " ".join(f"AND {sql}" for sql, _ in pairs)
            member_args = [a for _, pair_args in pairs for a in pair_args]
    rows: list[tuple[Any, ...]] = []
    key = _walk_key(cursor) if cursor is not None else None
    if key is None or key[0] is not None:
        beyond, beyond_args = "", []
        if key is not None:
            value, rid = key
            beyond = f"AND (s.{col} {'<' if desc else '>'} ? OR (s.{col} = ? AND s.rid > ?))"
            beyond_args = [value, value, rid]
        found = session.query(
            f"SELECT s.rid, s.{col}, s.rid FROM {table} s WHERE s.type = ? AND s.param = ? "
            f"AND s.rowid = (SELECT x.rowid FROM {table} x WHERE x.rid = s.rid AND "
            f"x.param = ? ORDER BY x.{col} {direction}, x.rowid LIMIT 1) "
            f"{member} {beyond} ORDER BY s.{col} {direction}, s.rid LIMIT ?",
            [query.rtype, code, code, *member_args, *beyond_args, limit],
        )
        rows += found
    if len(rows) < limit:
        after_rid = key[1] if key is not None and key[0] is None else 0
        rows += session.query(
            f"SELECT r.rid, NULL, r.rid FROM {relation} r WHERE {where} AND r.rid > ? AND NOT "
            f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND x.param = ?) "
            "ORDER BY r.rid LIMIT ?",
            [*args, after_rid, code, limit - len(rows)],
        )
    return rows


def _walk_key(cursor: Cursor) -> tuple[Any, int]:
    """(sort value, row id) of a cursor made by _walk_sort_index; else the cursor is bad."""
    if len(cursor.values) != 2 or not isinstance(cursor.values[1], int):
        raise error(400, "invalid", "Page cursor does not fit this search", "_page")
    return cursor.values[0], cursor.values[1]


def _with_json(session: Session, page: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(rid, *keys) rows -> (rid, type, id, json, *keys), in the same order."""
    if not page:
        return []
    marks = ", ".join("?" * len(page))
    found = {
        row[0]: row
        for row in session.query(
            f"SELECT rid, type, id, json FROM resource WHERE rid IN ({marks})", [r[0] for r in page]
        )
    }
    return [(*found[r[0]], *r[1:]) for r in page]


def _entry(base: str, rtype: str, rid: str, raw: bytes, mode: bytes) -> bytes:
    url = f"{base}/{rtype}/{rid}".encode()
    return b'{"fullUrl":"' + url + b'","resource":' + raw + b',"search":{"mode":"' + mode + b'"}}'


def _shape(raw: bytes, rtype: str, query: q.Query) -> bytes:
    if query.summary is None and query.elements is None:
        return raw
    return orjson.dumps(filter_elements(orjson.loads(raw), query.summary, query.elements))


def _includes(
    session: Session, query: q.Query, matches: list[tuple[int, str, str]]
) -> list[tuple[str, str, bytes]]:
    """_include / _revinclude targets of the page's matches (search.html#include);
    `:iterate` repeats over what was added until nothing new appears."""
    if not matches or not (query.includes or query.revincludes):
        return []
    seen = {(t, i) for _, t, i in matches}
    frontier = matches
    out: list[tuple[str, str, bytes]] = []
    first = True
    while frontier:
        # the first round applies every include; later rounds only the :iterate ones
        includes = [x for x in query.includes if first or x[3]]
        revincludes = [x for x in query.revincludes if first or x[3]]
        if not includes and not revincludes:
            break
        first = False
        found: list[tuple[int, str, str, bytes]] = []
        # the page's keys go in as one JSON array: a list of 1,000 OR'd conditions is more
        # than SQLite's expression tree takes
        rids = orjson.dumps([m[0] for m in frontier]).decode()
        for source, code, target, _ in includes:
            sql = (
                "SELECT t.rid, t.type, t.id, t.json FROM idx_reference i JOIN resource t "
                "ON t.type = i.target_type AND t.id = i.target_id AND t.deleted = 0 "
                "WHERE i.rid IN (SELECT value FROM json_each(?)) AND i.type = ? AND i.param = ?"
            )
            args: list[Any] = [rids, source, code]
            if target:
                sql += " AND i.target_type = ?"
                args.append(target)
            found += session.query(sql, args)
        keys = orjson.dumps([[m[1], m[2]] for m in frontier]).decode()
        for source, code, _target, _ in revincludes:
            found += session.query(
                "SELECT s.rid, s.type, s.id, s.json FROM json_each(?) k "
                "CROSS JOIN idx_reference i ON i.type = ? AND i.param = ? "
                "AND i.target_id = json_extract(k.value, '$[1]') "
                "AND i.target_type = json_extract(k.value, '$[0]') "
                "JOIN resource s ON s.rid = i.rid AND s.deleted = 0",
                [keys, source, code],
            )
        frontier = []
        for rid, t, i, raw in found:
            if (t, i) not in seen:
                seen.add((t, i))
                out.append((t, i, raw))
                frontier.append((rid, t, i))
    return out


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
