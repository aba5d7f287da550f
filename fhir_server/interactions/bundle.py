"""batch and transaction (http://hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one database transaction: ids are assigned first, `urn:uuid:` and other
fullUrls and conditional references are rewritten in every resource, then the writes are processed
in the spec's order (DELETE, POST, PUT/PATCH). Any failure rolls back everything and the
error names the failing entry. The reads (GET, processed last by the spec) run after the commit
on a reader connection, so that no search holds the write lock; a read that fails then answers
in its own entry, the writes being already durable. A batch processes each entry on its own,
its reads outside the write lock.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..context import RequestContext
from ..errors import FhirError, Issue, error, operation_outcome
from ..model import literal
from ..model.resource import now
from ..model.validate import Validated, check_body, check_id, check_type
from ..policy.enforce import check_written
from ..services import Services
from ..spec import RESOURCE_TYPES
from ..storage.contract import Session
from . import read as reads
from . import write
from .elements import shape_read
from .hooks import Access, transaction
from .result import Result
from .search import find, search

_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
#: a RESTful fullUrl: base, type, id (references.html#literal)
_RESTFUL = re.compile(r"^(.*)/[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
#: links in the narrative that may point at bundle entries
_LINK = re.compile(r'\b(href|src)="([^"]+)"')
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_READS = ("GET", "HEAD")
#: Bundle.entry.request elements that are strings (bundle.html#Bundle.entry.request)
_REQUEST_STRINGS = ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")


@dataclass
class Entry:
    """One bundle entry, parsed: method, target type/id or conditional query, and resource."""

    index: int
    method: str
    rtype: str | None
    rid: str | None
    query: str | None
    version: str | None
    resource: Any
    request: dict[str, Any]
    full_url: str | None
    result: Result | None = None
    #: the response resource when it is not a stored version (a Bundle, a subsetted read)
    body: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: GET: the URL's path segments and which read interaction they name
    path: list[str] = field(default_factory=list)
    read: str = ""


def process(
    services: Services,
    ctx: RequestContext,
    bundle: dict[str, Any],
    prefer_return: str,
    capabilities: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a batch or transaction Bundle and return the response Bundle; `capabilities` is
    what `GET metadata` answers."""
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise error(400, "invalid", "Bundle.type must be 'batch' or 'transaction'", "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise error(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if kind == "transaction":
        entries = [_parse_entry(ctx, i, e) for i, e in enumerate(raw_entries)]
        writes = [e for e in entries if e.method not in _READS]
        for e in writes:
            try:
                _check(services, e)
            except FhirError as exc:
                raise _at_entry(exc, e.index) from None
        if writes and all(
            e.method == "POST"
            and not e.request.get("ifNoneExist")
            and not services.hooks.any_for(e.rtype or "", e.resource)
            for e in writes
        ):
            _bulk_create(services, ctx, writes)
        elif writes:
            with transaction(services, ctx, "transaction") as session:
                _transaction(session, services, ctx, writes)
        for e in entries:
            if e.method in _READS:
                _read_entry(services, ctx, e, capabilities)
    else:
        entries = _batch(services, ctx, raw_entries, capabilities)
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response(ctx, e, prefer_return) for e in entries],
    }


def _parse_entry(ctx: RequestContext, index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise error(400, "required", f"{where}: entry.request is required", f"{where}.request")
    request = raw["request"]
    method = request.get("method")
    url = request.get("url")
    if not isinstance(method, str) or method not in _ORDER or not isinstance(url, str) or not url:
        raise error(400, "invalid", f"{where}: invalid request method or url", f"{where}.request")
    for name in _REQUEST_STRINGS:
        if name in request and not isinstance(request[name], str):
            raise error(
                400, "structure", f"{where}: request.{name} must be a string",
                f"{where}.request.{name}",
            )  # fmt: skip
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise error(400, "structure", f"{where}: fullUrl must be a string", f"{where}.fullUrl")
    path, _, query = _relative(ctx, url).partition("?")
    parts = [p for p in path.split("/") if p]
    rtype = parts[0] if parts else None
    rid = parts[1] if len(parts) > 1 else None
    version = parts[3] if len(parts) == 4 and parts[2] == "_history" else None
    resource = raw.get("resource")
    read = ""
    try:
        if method in _READS:
            read = _read_kind(parts)
        else:
            if rtype is not None:
                check_type(rtype)
            if rid is not None:
                check_id(rid)
        if method in ("POST", "PUT"):
            check_body(resource, rtype)
        if method == "PATCH":
            resource = _patch_document(resource)
        if method in ("PUT", "DELETE", "PATCH") and rid is None and not query:
            raise error(400, "invalid", f"{method} needs an id or search criteria")
    except FhirError as exc:
        raise _at_entry(exc, index) from None
    entry = Entry(index, method, rtype, rid, query or None, version, resource, request, full_url)
    entry.path, entry.read = parts, read
    return entry


def _read_kind(parts: list[str]) -> str:
    """Which read interaction a GET entry's path names (http.html#summary): the same URLs as
    the REST API."""
    if any(p.startswith("$") for p in parts):
        raise error(400, "not-supported", "Operations are not supported in a bundle", "request")
    n = len(parts)
    if n == 0:
        return "search-system"
    if n == 1 and parts[0] in ("metadata", "_history"):
        return "capabilities" if parts[0] == "metadata" else "history-system"
    check_type(parts[0])
    if n == 1:
        return "search-type"
    if n == 2 and parts[1] == "_history":
        return "history-type"
    check_id(parts[1])
    if n == 2:
        return "read"
    if parts[2] == "_history" and n in (3, 4):
        return "history-instance" if n == 3 else "vread"
    if n == 3:
        check_type(parts[2])
        return "search-compartment"
    raise error(400, "not-supported", f"No read interaction at '{'/'.join(parts)}'", "request")


def _patch_document(resource: Any) -> tuple[Any, bool]:
    """(patch document, is JSON Patch) of a PATCH entry: a Parameters resource (FHIRPath
    Patch) or a Binary whose data is a JSON Patch in base64 (http.html#patch)."""
    if not isinstance(resource, dict):
        raise error(
            400, "structure", "A PATCH entry needs a resource: Parameters or Binary", "resource"
        )
    if resource.get("resourceType") != "Binary":
        return resource, False
    data = resource.get("data")
    if not isinstance(data, str) or not data:
        raise error(400, "required", "Binary.data must hold the JSON Patch (base64)", "Binary.data")
    try:
        return literal.loads(base64.b64decode(data, validate=True)), True
    except (ValueError, RecursionError):  # binascii.Error, JSONDecodeError are ValueErrors
        raise error(
            400, "invalid", "Binary.data is not a JSON Patch document in base64", "Binary.data"
        ) from None


def _relative(ctx: RequestContext, url: str) -> str:
    """Entry URLs may be absolute on this server's base; make them relative (the query,
    which may itself hold URLs, is kept as it is)."""
    path, sep, query = url.partition("?")
    if path.startswith(ctx.base_url + "/"):
        path = path[len(ctx.base_url) + 1 :]
    elif "://" in path:
        path = urlsplit(path).path.rsplit("/fhir/", 1)[-1]
    return path.lstrip("/") + sep + query


def _at_entry(exc: FhirError, index: int) -> FhirError:
    """Prefix every issue with the failing entry so the client can find it; an expression on
    the resource (`Observation.code`) becomes one on the entry's resource
    (`Bundle.entry[1].resource.code`), so that it stays FHIRPath."""
    where = f"Bundle.entry[{index}]"
    issues = [
        Issue(
            i.code,
            i.diagnostics if i.diagnostics.startswith(where) else f"{where}: {i.diagnostics}",
            i.severity,
            _in_entry(where, i.expression),
        )
        for i in exc.issues
    ]
    return FhirError(exc.status, issues, exc.headers)


def _in_entry(where: str, expression: str | None) -> str:
    if not expression:
        return where
    if expression.startswith("Bundle.entry["):
        return expression
    head, dot, rest = expression.partition(".")
    if head == "resourceType":
        return f"{where}.resource.resourceType"
    if head in RESOURCE_TYPES:
        return f"{where}.resource{dot}{rest}"
    return f"{where}.{expression}"


def _transaction(
    session: Session, services: Services, ctx: RequestContext, entries: list[Entry]
) -> None:
    ids = _assign_ids(session, services, ctx, entries)
    rewrite = Rewriter(session, services, ctx, ids)
    for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
        try:
            if entry.resource is not None and entry.method in ("POST", "PUT"):
                entry.resource = rewrite(entry.resource, entry.full_url)
            _execute(session, services, ctx, entry)
        except FhirError as exc:
            raise _at_entry(exc, entry.index) from None


def _bulk_create(services: Services, ctx: RequestContext, entries: list[Entry]) -> None:
    """A transaction of plain creates, the shape of bulk ingest: everything that needs no
    lock (ids, reference rewriting, validation, JSON, index rows) is done first, so that
    several server workers can prepare bundles in parallel; the write lock is then held only
    to re-check conditional references and insert everything in one batch."""
    originals = [e.resource for e in entries]
    ids: dict[str, str] = {}
    for e in entries:
        e.rid = write.new_id()
        if e.full_url:
            ids[e.full_url] = f"{e.rtype}/{e.rid}"
    rewrite = Rewriter(services.store.reader(), services, ctx, ids)
    stamp = now()
    versions = []
    for e in entries:
        assert e.rtype is not None and e.rid is not None
        try:
            e.resource = services.validator(rewrite(e.resource, e.full_url))
        except FhirError as exc:
            raise _at_entry(exc, e.index) from None
        versions.append(write.prepare(services, e.rtype, e.rid, e.resource, 1, stamp, "POST"))
    prepared = services.hooks.prepare(ctx, "transaction", [v.stored for v in versions])
    with transaction(services, ctx, "transaction", prepared) as session:
        rewrite.session = session
        if any(rewrite.conditional(ref) != target for ref, target in rewrite.resolved.items()):
            # a conditional reference changed meanwhile: do it all again under the lock
            for e, original in zip(entries, originals, strict=True):
                e.resource, e.rid = original, None
            _transaction(session, services, ctx, entries)
            return
        session.save_many([(None, v) for v in versions])
        for e in entries:  # inside the transaction: a refusal rolls every create back
            assert e.rtype is not None and e.rid is not None
            try:
                check_written(session, ctx, services, "create", e.rtype, e.rid)
            except FhirError as exc:
                raise _at_entry(exc, e.index) from None
    for e, v in zip(entries, versions, strict=True):
        e.result = Result(201, v.stored, location=True)


def _assign_ids(
    session: Session, services: Services, ctx: RequestContext, entries: list[Entry]
) -> dict[str, str]:
    """fullUrl -> 'Type/id' for every entry that creates or updates, before anything is written.

    Conditional creates that match an existing resource map to it (and write nothing)."""
    ids: dict[str, str] = {}
    seen: set[str] = set()
    for e in entries:
        try:
            if e.method == "POST" and e.rtype:
                none_exist = e.request.get("ifNoneExist")
                found = (
                    find(session, services, ctx, e.rtype, none_exist.lstrip("?"), 2, "create")
                    if (none_exist)
                    else []
                )
                if len(found) > 1:
                    raise error(412, "duplicate", f"ifNoneExist matched several {e.rtype}")
                if found:
                    e.rid = found[0][1]
                    e.extra["existing"] = True
                else:
                    e.rid = write.new_id()
            elif e.method == "PUT" and e.rtype and e.rid is None and e.query:
                found = find(session, services, ctx, e.rtype, e.query, interaction="update")
                if len(found) > 1:
                    raise error(
                        412, "multiple-matches", f"Conditional update matched several {e.rtype}"
                    )
                e.rid = (
                    found[0][1]
                    if found
                    else (e.resource.get("id") if isinstance(e.resource, dict) else None)
                    or write.new_id()
                )
                e.query = None
        except FhirError as exc:
            raise _at_entry(exc, e.index) from None
        if e.method in ("POST", "PUT") and e.rid:
            key = f"{e.rtype}/{e.rid}"
            if key in seen and not e.extra.get("existing"):
                raise error(400, "duplicate", f"Bundle.entry[{e.index}]: {key} appears twice")
            seen.add(key)
            if e.full_url:
                ids[e.full_url] = key
    return ids


class Rewriter:
    """Rewrites one entry's resource (http.html#trules): references to bundle fullUrls,
    relative ones resolved against the entry's own fullUrl base
    (references.html#bundle-references), links in the narrative, and conditional references
    (`Type?criteria`, exactly one match required), which are remembered in `resolved`."""

    def __init__(
        self, session: Session, services: Services, ctx: RequestContext, ids: dict[str, str]
    ) -> None:
        self.session, self.services, self.ctx, self.ids = session, services, ctx, ids
        self.resolved: dict[str, str] = {}
        self.base = ctx.base_url + "/"

    def conditional(self, ref: str) -> str:
        head, _, query = ref.partition("?")
        check_type(head)
        found = find(self.session, self.services, self.ctx, head, query, 2, "search-type")
        if len(found) != 1:
            raise error(
                412 if found else 404,
                "not-found" if not found else "multiple-matches",
                f"Conditional reference '{ref}' matched {len(found) or 'no'} resources"
                + (" (exactly one is required)" if found else ""),
            )
        return f"{found[0][0]}/{found[0][1]}"

    def resolve(self, ref: str, entry_base: str | None) -> str:
        ids, base = self.ids, self.base
        if ref in ids:
            return ids[ref]
        if ref.startswith(base) and ref[len(base) :] in ids:
            return ids[ref[len(base) :]]
        if entry_base and _RELATIVE.match(ref) and f"{entry_base}/{ref}" in ids:
            return ids[f"{entry_base}/{ref}"]
        head, q, _ = ref.partition("?")
        if q and head and head[0].isupper() and "/" not in head:
            if ref not in self.resolved:
                self.resolved[ref] = self.conditional(ref)
            return self.resolved[ref]
        return ref

    def __call__(self, resource: Any, full_url: str | None) -> Any:
        ids = self.ids
        entry_base = None
        if full_url and "://" in full_url:
            m = _RESTFUL.match(full_url)
            entry_base = m.group(1) if m else None

        def link(m: re.Match[str]) -> str:
            return f'{m.group(1)}="{ids.get(m.group(2), m.group(2))}"'

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                out = {}
                for k, v in node.items():
                    if k == "reference" and isinstance(v, str):
                        out[k] = self.resolve(v, entry_base)
                    elif k == "div" and isinstance(v, str) and ids:
                        out[k] = _LINK.sub(link, v)
                    elif isinstance(v, str):  # a uri, url, oid or uuid element; an element
                        # named `value` is a string or decimal (Identifier.value keeps a urn)
                        out[k] = ids.get(v, v) if v.startswith("urn:") and k != "value" else v
                    else:
                        out[k] = walk(v)
                return out
            if isinstance(node, list):
                return [walk(v) for v in node]
            return node

        return walk(resource)


def _execute(session: Session, services: Services, ctx: RequestContext, e: Entry) -> None:
    rtype = e.rtype
    if_match = e.request.get("ifMatch")
    assert rtype is not None and e.method not in _READS
    if e.method == "DELETE":
        if e.rid:
            try:
                e.result = write.delete(session, services, ctx, rtype, e.rid, if_match)
            except FhirError as exc:
                if exc.status != 404:
                    raise
                e.result = Result(204)
        else:
            assert e.query is not None
            e.result = write.conditional_delete(session, services, ctx, rtype, e.query)
        return
    if e.method == "PATCH":
        doc, json_patch = e.resource  # checked and decoded by _patch_document
        rid = e.rid
        if rid is None:
            assert e.query is not None
            found = find(session, services, ctx, rtype, e.query, interaction="patch")
            if len(found) != 1:
                raise error(412, "multiple-matches", "Conditional patch needs exactly one match")
            rid = found[0][1]
        e.result = write.patch(session, services, ctx, rtype, rid, doc, json_patch, if_match)
        return
    resource = services.validator(e.resource)
    assert e.rid is not None
    if e.method == "POST":
        if e.extra.get("existing"):
            current = session.current(rtype, e.rid)
            assert current is not None
            e.result = Result(200, current[1])
        else:
            e.result = write.create(session, services, ctx, rtype, resource, rid=e.rid)
    else:
        with_id = Validated({**resource, "id": e.rid})
        e.result = write.update(session, services, ctx, rtype, e.rid, with_id, if_match)


def _read_entry(
    services: Services, ctx: RequestContext, e: Entry, capabilities: dict[str, Any] | None
) -> None:
    """A GET entry, on a reader connection (never under the write lock); its failure is
    that entry's outcome."""
    try:
        _read(services.store.reader(), services, ctx, e, capabilities)
    except FhirError as exc:
        e.extra["error"] = _at_entry(exc, e.index)
    _accessed(services, ctx, e)


def _accessed(services: Services, ctx: RequestContext, e: Entry) -> None:
    """Tell the features (the audit trail) about an entry's read, or an entry that failed."""
    if not services.hooks.on_access or e.read == "capabilities":
        return
    failure = e.extra.get("error")
    kind = e.read.replace("search-compartment", "search-type") or None
    stored = e.result.stored if e.result is not None and failure is None else None
    read = stored is not None and kind in ("read", "vread")
    body = e.body if kind and not read else None
    path = "/" + "/".join(e.path) if e.path else f"/{e.rtype or ''}"
    services.hooks.accessed(
        Access(ctx, e.method, path, kind, (stored,) if read and stored else (), body,
               e.query or "", failure)
    )  # fmt: skip


def _read(
    session: Session,
    services: Services,
    ctx: RequestContext,
    e: Entry,
    capabilities: dict[str, Any] | None,
) -> None:
    """Every read interaction of the REST API, answered as the REST call would be."""
    parts, kind = e.path, e.read
    pairs = parse_qsl(e.query or "", keep_blank_values=True)
    path = "".join(f"/{p}" for p in parts)
    e.result = Result(200)
    if kind == "capabilities":
        if capabilities is None:
            raise error(400, "not-supported", "metadata is not available here", "request")
        e.body = orjson.dumps(capabilities)
    elif kind.startswith("search"):
        compartment = (parts[0], parts[1]) if kind == "search-compartment" else None
        rtype = parts[-1] if parts else None
        e.body = search(session, services, ctx, rtype, pairs, False, path, compartment)
    elif kind.startswith("history"):
        rtype = parts[0] if kind != "history-system" else None
        rid = parts[1] if kind == "history-instance" else None
        e.body = reads.history(session, services, ctx, rtype, rid, pairs, path)
    else:
        rtype, rid = parts[0], parts[1]
        version = parts[3] if kind == "vread" else None
        stored = reads.read_as(session, services, ctx, rtype, rid, version)
        e.result = Result(200, stored)
        assert stored.json is not None
        shaped = shape_read(stored.json, dict(pairs))
        e.body = shaped if shaped is not stored.json else None


def _batch(
    services: Services,
    ctx: RequestContext,
    raw_entries: list[Any],
    capabilities: dict[str, Any] | None,
) -> list[Entry]:
    """Each entry in its own transaction, reads on a reader connection; failures become
    that entry's OperationOutcome."""
    out: list[Entry] = []
    parsed: list[Entry] = []
    for i, raw in enumerate(raw_entries):
        try:
            parsed.append(_parse_entry(ctx, i, raw))
        except FhirError as exc:
            failed = Entry(i, "GET", None, None, None, None, None, {}, None)
            failed.extra["error"] = exc
            out.append(failed)
    for entry in sorted(parsed, key=lambda e: _ORDER[e.method]):
        if entry.method in _READS:
            _read_entry(services, ctx, entry, capabilities)
        else:
            try:
                _check(services, entry)
                with transaction(services, ctx, "batch") as session:
                    _transaction_one(session, services, ctx, entry)
            except FhirError as exc:
                entry.extra["error"] = _at_entry(exc, entry.index)
                _accessed(services, ctx, entry)
        out.append(entry)
    return sorted(out, key=lambda e: e.index)


def _check(services: Services, entry: Entry) -> None:
    """The before-write checks (hooks.py) of a POST or PUT entry, before the write lock."""
    if entry.method in ("POST", "PUT") and isinstance(entry.resource, dict):
        services.hooks.check(entry.rtype or "", entry.resource)


def _transaction_one(
    session: Session, services: Services, ctx: RequestContext, entry: Entry
) -> None:
    ids = _assign_ids(session, services, ctx, [entry])
    entry.resource = Rewriter(session, services, ctx, ids)(entry.resource, entry.full_url)
    _execute(session, services, ctx, entry)


def _response(ctx: RequestContext, e: Entry, prefer_return: str) -> dict[str, Any]:
    failure = e.extra.get("error")
    if failure is not None:
        return {
            "response": {
                "status": str(failure.status),
                "outcome": operation_outcome(failure.issues),
            }
        }
    result = e.result
    assert result is not None
    response: dict[str, Any] = {"status": str(result.status)}
    entry: dict[str, Any] = {}
    stored = result.stored
    if stored is not None:
        entry["fullUrl"] = f"{ctx.base_url}/{stored.type}/{stored.id}"
        response["etag"] = f'W/"{stored.version}"'
        response["lastModified"] = stored.last_updated
        if e.method in ("POST", "PUT", "PATCH"):
            response["location"] = f"{stored.type}/{stored.id}/_history/{stored.version}"
        if stored.json is not None and (
            e.method in ("GET", "HEAD") or prefer_return == "representation"
        ):
            entry["resource"] = orjson.Fragment(stored.json)  # written as stored: no re-parse
    if e.body is not None:
        entry["resource"] = orjson.Fragment(e.body)
    if isinstance(result.body, dict) and prefer_return == "OperationOutcome":
        response["outcome"] = result.body
    entry["response"] = response
    return entry
