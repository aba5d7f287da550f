"""Bulk Data export (FHIR Bulk Data Access IG 2.0.0, export.html): the kick-off at system
(`$export`), all-patients (`Patient/$export`) and group (`Group/[id]/$export`) level. A
kick-off checks its parameters and stores a job; export_worker.py writes the NDJSON files;
api/bulk.py answers the status URL and serves the files to the caller who asked, only."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..context import Principal, RequestContext
from ..errors import FhirError, error, information
from ..interactions import read
from ..model.resource import now
from ..policy import decide, enforce
from ..search import query as q
from ..search.values import date_bounds
from ..settings import Settings
from ..spec import RESOURCE_TYPES
from ..storage.contract import Job
from ..storage.select import mongo_url
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
IG = "http://hl7.org/fhir/uv/bulkdata"
#: `_outputFormat` values meaning NDJSON, the one format served (export.html: "Servers SHALL
#: accept the full content type of application/fhir+ndjson as well as the abbreviated
#: representations application/ndjson and ndjson")
NDJSON = ("application/fhir+ndjson", "application/ndjson", "ndjson")
PARAMETERS = {"_outputFormat", "_since", "_type", "_typeFilter", "patient"}
#: where the status URL and the files live, under the FHIR base
PATH = "_export"


@OPERATIONS.operation("$export", "system", None, ("GET", "POST"),
                      definition=f"{IG}/OperationDefinition/export")  # fmt: skip
@OPERATIONS.operation("$export", "type", ("Patient",), ("GET", "POST"),
                      definition=f"{IG}/OperationDefinition/patient-export")  # fmt: skip
@OPERATIONS.operation("$export", "instance", ("Group",), ("GET", "POST"),
                      definition=f"{IG}/OperationDefinition/group-export")  # fmt: skip
def kick_off(call: Call) -> Outcome:
    """202 Accepted with the status URL in Content-Location (export.html "Response -
    Success"); every parameter is checked here, so that a job never fails on its input. The
    request is asynchronous whether or not `Prefer: respond-async` was sent (the IG lets a
    server process it as if it had been)."""
    services, ctx = call.services, call.ctx
    args = _arguments(call)
    level = "group" if call.rtype == "Group" else "patient" if call.rtype == "Patient" else "system"
    fmt = args.get("_outputFormat", ["application/fhir+ndjson"])[-1]
    if fmt not in NDJSON:
        raise error(400, "not-supported",
                    f"_outputFormat '{fmt}' is not served; use application/fhir+ndjson",
                    "_outputFormat")  # fmt: skip
    since = _since(args.get("_since"))
    types = _types(args.get("_type", []), level)
    filters = _type_filters(call, args.get("_typeFilter", []), types)
    patients = _patients(call, args.get("patient", []))
    members = patients
    if level == "group":
        assert call.rid is not None
        group = read.read_as(services.store.reader(), services, ctx, "Group", call.rid)
        members = group_members(group.json or b"{}")
        if patients is not None:
            outside = sorted(set(patients) - set(members))
            if outside:
                raise error(400, "invalid", f"Patient(s) {outside} are not members of "
                            f"Group/{call.rid}", "patient")  # fmt: skip
            members = patients
    candidates = types or sorted(compartment_types() if level != "system" else RESOURCE_TYPES)
    allowed = [t for t in candidates if _may_export(ctx, call, t, explicit=bool(types))]
    if not allowed:
        raise decide.forbidden("No granted scope permits exporting any resource type")
    job_id = secrets.token_hex(16)
    spec = {
        "level": level, "base": ctx.base_url, "types": types, "since": since,
        "filters": filters, "patients": members, "request": _request_url(call),
    }  # fmt: skip
    services.store.exports.create(Job(
        job_id, owner(ctx.principal), principal_json(ctx.principal), spec, "queued", now(),
        time.time(),
    ))  # fmt: skip
    outcome = information(f"Export {job_id} accepted; poll its status URL (Content-Location)")
    return Outcome(outcome, 202, headers={"Content-Location": status_url(ctx.base_url, job_id)})


def status_url(base: str, job_id: str) -> str:
    return f"{base}/{PATH}/{job_id}"


def file_url(base: str, job_id: str, name: str) -> str:
    return f"{base}/{PATH}/{job_id}/{name}"


def job_dir(settings: Settings, job_id: str) -> Path:
    """The folder of one job's files: under export_dir, or `<database>.exports` (a MongoDB
    database, not a file: `fhir-exports` in the working directory)."""
    root = settings.export_dir
    if root is None and mongo_url(settings.database) is not None:
        root = Path("fhir-exports")
    elif root is None:
        root = settings.database.with_name(settings.database.name + ".exports")
    return root / job_id


def owner(principal: Principal) -> str:
    """Who a job belongs to: the same client acting for the same user (or for itself). Tokens
    change (a backend token lives 5 minutes); the client and user do not."""
    return f"{principal.kind}|{principal.client_id or ''}|{principal.user or ''}"


def principal_json(principal: Principal) -> dict[str, Any]:
    out = asdict(principal)
    out["scopes"], out["roles"] = list(principal.scopes), sorted(principal.roles)
    return out


def principal_of(data: dict[str, Any]) -> Principal:
    return Principal(**{**data, "scopes": tuple(data["scopes"]), "roles": frozenset(data["roles"])})


def compartment_types() -> set[str]:
    """What a patient-level export holds: the Patient compartment's types, Patient itself and
    the types the consortium rule confines like them (Task.for)."""
    return {"Patient", *q.COMPARTMENTS.get("Patient", {}), *decide.BEYOND_COMPARTMENT}


def compartment_params(rtype: str) -> tuple[str, ...]:
    params = {**q.COMPARTMENTS.get("Patient", {}), **decide.BEYOND_COMPARTMENT}.get(rtype, [])
    return tuple(p for p in params if p != "{def}")


def group_members(raw: bytes) -> list[str]:
    """Ids of the Patients a Group lists as active members (Group.member.entity)."""
    import orjson

    group = orjson.loads(raw)
    out = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            out.append(reference.removeprefix("Patient/"))
    return sorted(set(out))


def _arguments(call: Call) -> dict[str, list[Any]]:
    """Parameters by name; a kick-off parameter may repeat, comma-separated values joined
    (export.html: "treat the values provided as if they were comma delimited values within a
    single instance"). Others (_elements, includeAssociatedData) are not supported: 400, so
    that the client can ask again without them."""
    out: dict[str, list[Any]] = {}
    for p in call.parameters.get("parameter") or []:
        name = p["name"]
        if name not in PARAMETERS:
            raise error(400, "not-supported", f"$export does not support '{name}'", name)
        value = p.get("valueReference") if name == "patient" else next(
            (v for k, v in p.items() if k.startswith("value")), None)  # fmt: skip
        if name == "patient":
            if call.method != "POST" or call.rtype is None:
                raise error(400, "not-supported",
                            "'patient' is taken by POST Patient or Group $export", name)
            out.setdefault(name, []).append(value)
        elif not isinstance(value, str):
            raise error(400, "invalid", f"'{name}' must be a string", name)
        elif name in ("_type", "_typeFilter"):
            out.setdefault(name, []).extend(v for v in value.split(",") if v.strip())
        else:
            out.setdefault(name, []).append(value)
    return out


def _since(values: list[str] | None) -> str | None:
    if not values:
        return None
    try:
        return date_bounds(values[-1])[0]
    except ValueError:
        raise error(400, "invalid", f"_since must be a FHIR instant, not '{values[-1]}'",
                    "_since") from None  # fmt: skip


def _types(names: list[str], level: str) -> list[str]:
    """The _type list, checked: an unknown type is a 400 (issue 15 "Bad input"); at patient
    and group level a type outside the Patient compartment is one too (export.html: servers
    SHOULD return details via an OperationOutcome)."""
    names = sorted({n.strip() for n in names})
    unknown = [n for n in names if n not in RESOURCE_TYPES]
    if unknown:
        raise error(400, "not-supported", f"Unknown resource type(s) {unknown}", "_type")
    if level != "system":
        outside = [n for n in names if n not in compartment_types()]
        if outside:
            raise error(400, "not-supported",
                        f"{outside} are not in the Patient compartment: a {level}-level export "
                        "holds only its types; use the system-level $export", "_type")  # fmt: skip
    return names


def _type_filters(call: Call, filters: list[str], types: list[str]) -> dict[str, list[str]]:
    """_typeFilter queries (`Type?param=value&...`) by type, each parsed as a search of that
    type now (400 for an unknown parameter or a result parameter such as _include)."""
    out: dict[str, list[str]] = {}
    for raw in filters:
        rtype, mark, query = raw.strip().partition("?")
        if not mark or rtype not in RESOURCE_TYPES or (types and rtype not in types):
            raise error(400, "invalid",
                        f"_typeFilter '{raw}' must be Type?query for a type exported",
                        "_typeFilter")  # fmt: skip
        pairs = parse_qsl(query, keep_blank_values=True)
        result = [k for k, _ in pairs if k in q.RESULT_PARAMS]
        if result or not pairs:
            raise error(400, "invalid",
                        f"_typeFilter '{raw}' must hold search criteria only", "_typeFilter")
        filter_clauses(call.services.registry, rtype, query)
        out.setdefault(rtype, []).append(query)
    return out


def filter_clauses(registry: Any, rtype: str, query: str) -> list[q.Clause]:
    pairs = parse_qsl(query, keep_blank_values=True)
    try:
        return q.parse(registry, rtype, pairs, 1, 1, strict=True).clauses
    except FhirError as exc:
        raise error(400, "invalid", f"_typeFilter {rtype}?{query}: {exc}", "_typeFilter") from None


def _patients(call: Call, refs: list[Any]) -> list[str] | None:
    """The `patient` references, each a Patient the caller may read (one they may not is
    answered as one that does not exist: no existence oracle)."""
    if not refs:
        return None
    out = []
    session = call.services.store.reader()
    for ref in refs:
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(reference, str) or not reference.startswith("Patient/"):
            raise error(400, "invalid", "'patient' must be a Reference to a Patient", "patient")
        pid = reference.removeprefix("Patient/")
        try:
            read.read_as(session, call.services, call.ctx, "Patient", pid)
        except FhirError:
            raise error(400, "not-found", f"{reference} is not known", "patient") from None
        out.append(pid)
    return sorted(set(out))


def _may_export(ctx: RequestContext, call: Call, rtype: str, explicit: bool) -> bool:
    """Whether a scope permits searching `rtype`; an explicitly requested type that none
    permits is a 403 (the export would silently lack it otherwise)."""
    try:
        enforce.authorize(ctx, call.services, "search-type", rtype)
    except FhirError:
        if explicit:
            raise
        return False
    return True


def _request_url(call: Call) -> str:
    """The kick-off URL (manifest `request`): with its query for GET; a POST's parameters
    are not part of it (export.html)."""
    base = call.ctx.base_url
    path = "/".join(p for p in (call.rtype, call.rid) if p)
    url = f"{base}/{path + '/' if path else ''}$export"
    if call.method == "GET":
        pairs = [(p["name"], p["valueString"]) for p in call.parameters.get("parameter") or []
                 if "valueString" in p]  # fmt: skip
        if pairs:
            url += "?" + urlencode(pairs)
    return url
