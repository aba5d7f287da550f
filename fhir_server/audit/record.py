"""What the audit trail records of one interaction: a compact record of facts only (who, from
which address, what, which patients, when, the outcome), chained in the transaction of the
change it records. event.py expands a record into the BALP AuditEvents auditors search.

A record is a JSON object (format 1):

    id        names its AuditEvents: `<id>-<n>`, n = 1, 2, ... (time-ordered, unique)
    at        when it happened (AuditEvent.recorded)
    kind      "rest" | "bundle" (a batch's or transaction's writes) | "security"
    do        the restful-interaction code, the bundle type, or the security event kind
    outcome   "0" success, "4" minor failure (the client's), "8" serious (the server's)
    reason    optional: the failure's diagnostics, or a security event's reason
    by        who and from where: base (this server), request (X-Request-Id), label, and
              when known client, address, fhirUser or user, token
    targets   rest: [{"what": Type/id/_history/n or a path, "query": raw query}, ...]
    patients  rest: the patients touched (one AuditEvent each)
    writes    bundle: [[Type/id/_history/n, create|update|delete, [patients]], ...]
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..interactions.hooks import Access, SecurityEvent
from ..search.fhirpath import Extractor, compile_expression, parse_reference
from ..search.registry import Registry
from ..spec import load

FORMAT = 1
Record = dict[str, Any]
_PATIENT_COMPARTMENT: dict[str, list[str]] = load("compartments.json")["Patient"]  # type: ignore[index]


def new_id() -> str:
    """16 hex digits of nanoseconds, then 8 random (not secret: they only make it unique
    across processes): in time order, so that its AuditEvents are inserted at the end of the
    id indexes rather than all over them."""
    return f"{time.time_ns():016x}{random.getrandbits(32):08x}"


def instant(at: float) -> str:
    """A unix time as an instant, as model.resource.now() writes one."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(record: Record) -> bytes:
    """The stored and hashed bytes of a record: JSON with sorted keys (RFC 8785 for the
    strings and small integers a record holds)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def who(ctx: RequestContext) -> dict[str, str]:
    """The agent facts of a request: its principal, the client's address, this server."""
    p = ctx.principal
    by = {"base": ctx.base_url, "request": ctx.request_id, "label": p.label}
    if p.client_id:
        by["client"] = p.client_id
    if ctx.client_address:
        by["address"] = ctx.client_address
    if p.fhir_user:
        by["fhirUser"] = p.fhir_user
    elif p.user:
        by["user"] = p.user
    if p.token_id:
        by["token"] = p.token_id
    if ctx.break_glass is not None:
        by["btg"] = ctx.break_glass
    return by


def _outcome(record: Record, failure: FhirError | None) -> Record:
    if failure is None:
        record["outcome"] = "0"
    else:
        record["outcome"] = "4" if failure.status < 500 else "8"
        record["reason"] = str(failure)[:1000]
    return record


def rest(
    ctx: RequestContext,
    interaction: str,
    at: str,
    targets: list[dict[str, str]],
    patients: list[str],
    failure: FhirError | None = None,
) -> Record:
    """One REST interaction: what it touched and whose data that was."""
    record = {"v": FORMAT, "id": new_id(), "at": at, "kind": "rest", "do": interaction,
              "by": who(ctx), "targets": targets,
              "patients": list(dict.fromkeys(patients))}  # fmt: skip
    return _outcome(record, failure)


def bundle(ctx: RequestContext, kind: str, at: str, writes: list[list[Any]]) -> Record:
    """The writes of one batch or transaction: [what, interaction, patients] each."""
    return {"v": FORMAT, "id": new_id(), "at": at, "kind": "bundle", "do": kind,
            "by": who(ctx), "writes": writes, "outcome": "0"}  # fmt: skip


def security(event: SecurityEvent, at: str) -> Record:
    """One security event of the authorization server (never a secret: identifiers only)."""
    by = {"base": event.base_url}
    for key, value in (("client", event.client_id), ("user", event.user),
                       ("token", event.token_id), ("address", event.address),
                       ("request", event.request_id)):  # fmt: skip
        if value:
            by[key] = value
    record: Record = {"v": FORMAT, "id": new_id(), "at": at, "kind": "security",
                      "do": event.kind, "by": by,
                      "outcome": "0" if event.success else "4"}  # fmt: skip
    if event.reason:
        record["reason"] = event.reason[:1000]
    return record


def access(access: Access, at: str, patients: Patients) -> Record:
    """A read, search, history, operation or failed request as the API answered it."""
    interaction, target = classify(access.method, access.path)
    interaction = access.interaction or interaction
    targets: list[dict[str, str]] = []
    found: list[str] = []
    for stored in access.resources:
        targets.append({"what": f"{stored.type}/{stored.id}/_history/{stored.version}"})
        found += patients.of_stored(stored.type, stored.id, stored.json)
    if access.bundle is not None:
        found += patients.of_bundle(access.bundle)
    if interaction.startswith(("search", "history", "operation")):
        query = {"query": access.query}
        targets.append({**query, "what": target} if target else query)
    elif not targets and target:
        targets.append({"what": target})
    if not access.resources and target and target.startswith("Patient/"):
        found.append("/".join(target.split("/")[:2]))  # the patient asked about
    return rest(access.ctx, interaction, at, targets, found, access.failure)


class Patients:
    """The Patient compartment owners of a resource (compartmentdefinition-patient): the
    references of its compartment parameters that point at a Patient. Extractors compiled
    once per type."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._extractors: dict[str, list[Extractor]] = {}

    def __call__(self, rtype: str, resource: dict[str, Any] | None) -> list[str]:
        if resource is None:
            return []
        if rtype == "Patient":
            rid = resource.get("id")
            return [f"Patient/{rid}"] if isinstance(rid, str) else []
        found: dict[str, None] = {}
        for extract in self._for(rtype):
            for value, _ in extract(resource):
                ref = value.get("reference") if isinstance(value, dict) else None
                parsed = parse_reference(ref) if isinstance(ref, str) else None
                if parsed is not None and parsed[0] == "Patient" and parsed[1]:
                    found[f"Patient/{parsed[1]}"] = None
        return list(found)

    def of_stored(self, rtype: str, rid: str, json: bytes | None) -> list[str]:
        """The same for a stored version (its JSON None when deleted: then the caller passes
        the version deleted), parsed only when the type has a patient compartment."""
        if rtype == "Patient":  # its own compartment
            return [f"Patient/{rid}"]
        if json is None or not self._for(rtype):
            return []
        return self(rtype, orjson.loads(json))

    def of_bundle(self, bundle: bytes) -> list[str]:
        """The patients of every resource in a searchset or history Bundle."""
        found: list[str] = []
        for entry in orjson.loads(bundle).get("entry") or ():
            resource = entry.get("resource")
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                found += self(resource["resourceType"], resource)
        return found

    def _for(self, rtype: str) -> list[Extractor]:
        known = self._extractors.get(rtype)
        if known is None:
            known = []
            for code in _PATIENT_COMPARTMENT.get(rtype, ()):
                param = self.registry.get(rtype, code)
                if param is not None and param.expression:
                    known.append(compile_expression(param.expression, rtype))
            self._extractors[rtype] = known
        return known


def classify(method: str, path: str) -> tuple[str, str | None]:
    """The restful-interaction a request names, from its method and path under /fhir, and
    what it targets: for a request that failed before a route knew it (http.html)."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "fhir":
        parts = parts[1:]
    op = next((p for p in parts if p.startswith("$")), None)
    if op is not None:
        owner = parts[: parts.index(op)]
        return "operation", "/".join(owner) or None
    n = len(parts)
    target = "/".join(parts) or None
    if method in ("GET", "HEAD"):
        if n == 0:
            return "search-system", None
        if parts[-1] == "_history":
            kind = {1: "history-system", 2: "history-type", 3: "history-instance"}.get(n)
            return kind or "history-instance", "/".join(parts[:-1]) or None
        if n == 2:
            return "read", target
        if n == 4 and parts[2] == "_history":
            return "vread", target
        return "search-type", ("/".join(parts[:-1]) or None) if n == 3 else target
    if method == "POST":
        if n == 0:
            return "transaction", None
        if parts[-1] == "_search":
            return "search-type", parts[0]
        return "create", target
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "operation"), target
