"""Patient/[id]/$everything (patient-operation-everything.html) and Encounter/[id]/$everything
(encounter-operation-everything.html): the compartment of the patient, across every record
linked to it (Patient.link: one person's records at several hospitals), or of the encounter,
with what its members refer to (practitioners, organizations, medications, ...) and the Binary
resources their attachments point at. Each type is narrowed as a search of it would be, so the
caller gets only what they may see; links never widen that."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import orjson

from ..errors import FhirError, error
from ..interactions import read
from ..policy import decide, enforce
from ..search import query as q
from ..search.paging import Cursor
from ..search.values import date_bounds
from ..spec import RESOURCE_TYPES
from ..storage.compartment import Branch, Entry, Window
from ..storage.contract import Session
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
PATIENT = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
ENCOUNTER = "http://hl7.org/fhir/OperationDefinition/Encounter-everything"
#: the parameters each accepts (the OperationDefinitions), besides _count and _page
PARAMETERS = {"Patient": {"start", "end", "_since", "_type"}, "Encounter": {"_since", "_type"}}
#: the search parameter holding a type's care date, for start/end ("care dates, not record
#: currency dates"): R4's `date` (clinical-date: Encounter.period, Observation.effective, ...)
#: where the type has one, else these
CARE_DATES = {
    "Condition": "onset-date",
    "Claim": "created",
    "ExplanationOfBenefit": "created",
    "MedicationRequest": "authoredon",
    "MedicationAdministration": "effective-time",
    "MedicationDispense": "whenhandedover",
    "ServiceRequest": "authored",
}
#: records of one person followed through Patient.link at most
MAX_LINKED = 50
#: Attachment.url of a Binary on this server: relative, or absolute (checked against the base)
_BINARY = re.compile(r"(?:^|/)Binary/([A-Za-z0-9\-.]{1,64})$")


@OPERATIONS.operation("$everything", "instance", ("Patient",), ("GET", "POST"),
                      definition=PATIENT)  # fmt: skip
@OPERATIONS.operation("$everything", "instance", ("Encounter",), ("GET", "POST"),
                      definition=ENCOUNTER)  # fmt: skip
def everything(call: Call) -> Outcome:
    """A searchset: the compartment's members (mode match; the owners first), then what they
    refer to (mode include). Without _count the page holds max_count members (the spec's
    "single bundle" for nearly every record), with `next` links beyond."""
    assert call.rtype is not None and call.rid is not None
    services, ctx, ctype = call.services, call.ctx, call.rtype
    args = _arguments(call, PARAMETERS[ctype])
    settings = services.settings
    count = min(_int(args.get("_count"), settings.max_count), settings.max_count)
    types = _types(args.get("_type", []))
    window = Window(
        _instant(args.get("_since"), 0, "_since"),
        _instant(args.get("start"), 0, "start"),
        _instant(args.get("end"), 1, "end"),
    )
    reader = services.store.reader()
    read.read_as(reader, services, ctx, ctype, call.rid)  # 404 / 410 as for a read
    owners = reader.linked_patients(call.rid, MAX_LINKED) if ctype == "Patient" else [call.rid]
    branches = _branches(call, ctype, types)
    found = reader.compartment_members(ctx.base_url, ctype, owners, branches, window)
    after = _cursor(args.get("_page"))
    start = next((i for i, key in enumerate(found) if key[:2] > after), len(found)) if after else 0
    page = found[start : start + count]
    rows = reader.compartment_resources([(rid, t) for _, rid, t in page])
    entries = [_entry(ctx.base_url, t, i, raw, b"match") for _, t, i, raw in rows]
    members = {rid for _, rid, _ in found}
    extra = _included(call, reader, rows, members, types)
    entries += [_entry(ctx.base_url, t, i, raw, b"include") for t, i, raw in extra]
    path = f"{ctx.base_url}/{ctype}/{call.rid}/$everything"
    kept = [(k, v) for k, vs in args.items() if k not in ("_page", "_count")
            for v in (vs if isinstance(vs, list) else [vs])]  # fmt: skip
    links = [{"relation": "self", "url": _url(path, kept, count, args.get("_page"))}]
    if start + count < len(found):
        cursor = Cursor(page[-1][:2]).encode()
        links.append({"relation": "next", "url": _url(path, kept, count, cursor)})
    head = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                         "link": links})  # fmt: skip
    return Outcome(head[:-1] + b',"entry":[' + b",".join(entries) + b"]}")


def _branches(call: Call, ctype: str, types: set[str] | None) -> list[Branch]:
    """One branch per type of the compartment that the caller may search (others are left
    out, as a search leaves out what it may not show), with that search's narrowing."""
    compartment = dict(q.COMPARTMENTS.get(ctype, {}))
    if ctype == "Patient":  # Task.for names the patient of a referral (policy/decide.py)
        compartment.update(decide.BEYOND_COMPARTMENT)
    registry = call.services.registry
    out = []
    for rtype, params in sorted(compartment.items()):
        if types is not None and rtype not in types:
            continue
        try:
            access = enforce.authorize(call.ctx, call.services, "search-type", rtype)
        except FhirError:  # no scope permits it: not shown
            continue
        clauses = tuple(access.clauses) if access is not None else ()
        refs = tuple(p for p in params if p != "{def}" and not (rtype == ctype == "Patient"))
        care = CARE_DATES.get(rtype) or ("date" if registry.get(rtype, "date") else None)
        out.append(Branch(rtype, refs, rtype == ctype, clauses, care))
    return out


def _included(
    call: Call, reader: Session, rows: list[Entry], members: set[int], types: set[str] | None
) -> list[tuple[str, str, bytes]]:
    """What the page's members refer to and the Binary resources their attachments name,
    not already members, that the caller may read (others are left out silently)."""
    found = reader.compartment_referenced([(r[0], r[1]) for r in rows], members)
    binaries = {b for _, _, _, raw in rows if b"Binary/" in raw
                for b in _attachments(orjson.loads(raw), call.ctx.base_url)}  # fmt: skip
    found += reader.current_by_ids("Binary", binaries)
    seen: set[int] = set()
    items = []
    for rid, rtype, rid_text, raw in found:
        if rid in members or rid in seen or (types is not None and rtype not in types):
            continue
        seen.add(rid)
        items.append((rtype, rid_text, raw))
    return enforce.keep_visible(reader, call.ctx, call.services, items)


def _attachments(node: Any, base: str) -> set[str]:
    """Ids of the Binary resources Attachment.url values name (relative or under `base`)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            url = item.get("url")
            if isinstance(url, str) and (url.startswith("Binary/") or url.startswith(base)):
                match = _BINARY.search(url)
                if match:
                    out.add(match.group(1))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _arguments(call: Call, known: set[str]) -> dict[str, Any]:
    """The invocation's parameters by name (_type may repeat, each comma-separated); 400 for
    one the operation does not define."""
    out: dict[str, Any] = {}
    for p in call.parameters.get("parameter") or []:
        name = p["name"]
        if name not in known | {"_count", "_page"}:
            raise error(400, "not-supported", f"$everything has no parameter '{name}'", name)
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise error(400, "invalid", f"'{name}' must be a single value", name)
        if name == "_type":
            out.setdefault(name, []).extend(t.strip() for t in str(value).split(",") if t.strip())
        else:
            out[name] = str(value)
    return out


def _types(names: list[str]) -> set[str] | None:
    if not names:
        return None
    unknown = sorted(set(names) - RESOURCE_TYPES)
    if unknown:
        raise error(400, "not-supported", f"Unknown resource type(s) {unknown}", "_type")
    return set(names)


def _instant(raw: str | None, bound: int, name: str) -> str | None:
    if raw is None:
        return None
    try:
        return date_bounds(raw)[bound]
    except ValueError:
        raise error(400, "invalid", f"'{name}' must be a FHIR date or instant, not '{raw}'",
                    name) from None  # fmt: skip


def _int(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw[:18]) < 1:
        raise error(400, "invalid", "'_count' must be a positive integer", "_count")
    return int(raw[:18])


def _cursor(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    values = Cursor.decode(raw).values
    if len(values) != 2 or not all(type(v) is int for v in values):
        raise error(400, "invalid", "Invalid or expired page cursor", "_page")
    return values[0], values[1]


def _url(path: str, kept: list[tuple[str, str]], count: int, page: str | None) -> str:
    params = [*kept, ("_count", str(count)), *([("_page", page)] if page else [])]
    return f"{path}?{urlencode(params)}"


def _entry(base: str, rtype: str, rid: str, raw: bytes, mode: bytes) -> bytes:
    url = orjson.dumps(f"{base}/{rtype}/{rid}")
    return b'{"fullUrl":' + url + b',"resource":' + raw + b',"search":{"mode":"' + mode + b'"}}'
