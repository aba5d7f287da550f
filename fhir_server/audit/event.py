"""AuditEvents of REST interactions after IHE Basic Audit Log Patterns (BALP, ITI.BasicAudit):
one event per patient touched, identifiers and references only, never resource content."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..interactions.hooks import SecurityEvent
from ..search.fhirpath import Extractor, compile_expression, parse_reference
from ..search.registry import Registry
from ..spec import load

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
#: BALP's entity type for the X-Request-Id (BasicAuditEntityType#XrequestId)
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
_REST = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "Restful Operation",
}
#: restful-interaction code -> AuditEvent.action (BALP: search and history are queries, E)
ACTIONS = {
    "read": "R", "vread": "R", "create": "C", "update": "U", "patch": "U", "delete": "D",
    "search-type": "E", "search-system": "E", "history-instance": "E", "history-type": "E",
    "history-system": "E", "operation": "E", "transaction": "E", "batch": "E",
}  # fmt: skip
#: the interactions whose data flows to the client: client agent Destination, server Source
_TO_CLIENT = frozenset({"read", "vread"})
_PATIENT_COMPARTMENT: dict[str, list[str]] = load("compartments.json")["Patient"]  # type: ignore[index]


@dataclass(frozen=True)
class Target:
    """What an interaction touched: a resource version (`Type/id/_history/n`), a resource or
    type named by a failed request, or a query (raw, base64-encoded in the event)."""

    what: str | None = None
    query: str | None = None


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


def rest_events(
    ctx: RequestContext,
    interaction: str,
    recorded: str,
    targets: Iterable[Target],
    patients: Iterable[str],
    failure: FhirError | None = None,
) -> list[dict[str, Any]]:
    """The AuditEvents of one interaction: one per patient touched (BALP: "one event per
    patient"), or one without a patient when it touched none."""
    base = _event(ctx, interaction, recorded, list(targets), failure)
    owners = list(dict.fromkeys(patients))
    if not owners:
        return [base]
    return [{**base, "entity": [*base["entity"], _patient(p)]} for p in owners]


def bundle_events(
    ctx: RequestContext, kind: str, recorded: str, groups: dict[str | None, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The AuditEvents of a batch's or transaction's writes (subtype `kind`, action E: one
    bundle may create, update and delete; each entity's `lifecycle` says which): one per
    patient compartment the writes touched, holding an entity per version written in it
    (BALP: one event per patient), and one for the writes in no patient's compartment
    (`groups` key None)."""
    base = _event(ctx, kind, recorded, [], None)
    return [
        {**base, "entity": [*written, *base["entity"], *([_patient(p)] if p else [])]}
        for p, written in groups.items()
    ]


#: ObjectLifecycleEvents (DICOM PS3.15 A.5.3, dicom-audit-lifecycle) of a written version
_LIFECYCLE = {
    "create": ("1", "Origination / Creation"),
    "update": ("3", "Amendment"),
    "patch": ("3", "Amendment"),
    "delete": ("14", "Logical Deletion"),
}
_LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"


def written_entity(what: str, interaction: str) -> dict[str, Any]:
    """The entity of one version a bundle wrote: `what` = Type/id/_history/n, and how."""
    code, display = _LIFECYCLE[interaction]
    entity = _entity(Target(what))
    entity["lifecycle"] = {"system": _LIFECYCLE_SYSTEM, "code": code, "display": display}
    return entity


def _event(
    ctx: RequestContext,
    interaction: str,
    recorded: str,
    targets: list[Target],
    failure: FhirError | None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _REST,
        "subtype": [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}
        ],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": recorded,
        "outcome": _outcome(failure),
    }
    if failure is not None:
        event["outcomeDesc"] = str(failure)[:1000]
    if ctx.break_glass is not None:  # security.md §4.1: break-glass, with the reason given
        event["purposeOfEvent"] = [_break_glass(ctx.break_glass)]
    event["agent"] = _agents(ctx, interaction in _TO_CLIENT)
    event["source"] = _source(ctx.base_url)
    event["entity"] = [_entity(t) for t in targets] + [
        {
            "what": {"identifier": {"value": ctx.request_id}},
            "type": {"system": _BALP_ENTITY, "code": "XrequestId"},
        }
    ]
    return event


def _outcome(failure: FhirError | None) -> str:
    """0 success, 4 minor failure (the client's: 4xx), 8 serious failure (the server's)."""
    if failure is None:
        return "0"
    return "4" if failure.status < 500 else "8"


def _agents(ctx: RequestContext, to_client: bool) -> list[dict[str, Any]]:
    """The client application (with its network address), this server (with its base URL)
    and the user (BALP: requestor, `who` = user or fhirUser). Until tokens exist the
    principal is anonymous (context.py)."""
    principal = ctx.principal
    client_role, server_role = ("110152", "110153") if to_client else ("110153", "110152")
    client: dict[str, Any] = {
        "type": _dcm(client_role),
        "who": {"display": principal.client_id or "unknown client"},
        "requestor": False,
    }
    if principal.client_id:
        client["who"]["identifier"] = {"value": principal.client_id}
    if ctx.client_address:
        client["network"] = {"address": ctx.client_address, "type": "2"}
    server = {
        "type": _dcm(server_role),
        "who": {"display": ctx.base_url},
        "requestor": False,
        "network": {"address": ctx.base_url, "type": "5"},
    }
    who: dict[str, Any] = {"display": principal.label}
    if principal.fhir_user:
        who["reference"] = principal.fhir_user
    elif principal.user:
        who["identifier"] = {"value": principal.user}
    user: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient",
                }
            ]
        },
        "who": who,
        "requestor": True,
    }
    if principal.token_id:
        user["policy"] = [f"urn:ietf:params:oauth:jti:{principal.token_id}"]
    if ctx.break_glass is not None:
        user["purposeOfUse"] = [_break_glass(ctx.break_glass)]
    return [client, server, user]


def _break_glass(reason: str) -> dict[str, Any]:
    """v3-ActReason BTG (break the glass), the reason as the concept's text."""
    coding = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG",
              "display": "break the glass"}  # fmt: skip
    return {"coding": [coding], **({"text": reason} if reason else {})}


def _dcm(code: str) -> dict[str, Any]:
    display = {"110152": "Destination Role ID", "110153": "Source Role ID"}[code]
    return {"coding": [{"system": _DCM, "code": code, "display": display}]}


def _entity(target: Target) -> dict[str, Any]:
    if target.query is not None:
        entity: dict[str, Any] = {
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _ROLE, "code": "24", "display": "Query"},
        }
        if target.query:  # base64Binary may not be empty
            entity["query"] = base64.b64encode(target.query.encode()).decode("ascii")
        if target.what:
            entity["what"] = {"reference": target.what}
        return entity
    return {
        "what": {"reference": target.what},
        "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": _ROLE, "code": "4", "display": "Domain Resource"},
    }


def _patient(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": _ROLE, "code": "1", "display": "Patient"},
    }


def classify(method: str, path: str) -> tuple[str, Target]:
    """The restful-interaction a request names, from its method and path under /fhir, and
    what it targets: for a request that failed before a route knew it (http.html)."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "fhir":
        parts = parts[1:]
    op = next((p for p in parts if p.startswith("$")), None)
    if op is not None:
        owner = parts[: parts.index(op)]
        return "operation", Target("/".join(owner) or None)
    n = len(parts)
    target = Target("/".join(parts) or None)
    if method in ("GET", "HEAD"):
        if n == 0:
            return "search-system", Target()
        if parts[-1] == "_history":
            kind = {1: "history-system", 2: "history-type", 3: "history-instance"}.get(n)
            return kind or "history-instance", Target("/".join(parts[:-1]) or None)
        if n == 2:
            return "read", target
        if n == 4 and parts[2] == "_history":
            return "vread", target
        return "search-type", Target("/".join(parts[:-1]) or None) if n == 3 else target
    if method == "POST":
        if n == 0:
            return "transaction", Target()
        if parts[-1] == "_search":
            return "search-type", Target(parts[0])
        return "create", target
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "operation"), target


#: the authorization server's events (hooks.SECURITY_EVENTS) as ATNA security events (DICOM
#: PS3.15 A.5.3: 110114 User Authentication, 110113 Security Alert) and the DICOM subtype
#: that fits, if any: 110122 Login, 110123 Logout, 110126 Node Authentication (a client
#: application failing to authenticate)
_SECURITY: dict[str, tuple[str, str | None]] = {
    "login": ("110114", "110122"),
    "token-issued": ("110114", "110122"),
    "token-refreshed": ("110114", "110122"),
    "token-revoked": ("110114", "110123"),
    "client-authentication": ("110113", "110126"),
    "jti-replay": ("110113", "110126"),
    "pkce": ("110113", None),
    "rate-limit": ("110113", None),
}
_DCM_DISPLAY = {
    "110113": "Security Alert",
    "110114": "User Authentication",
    "110122": "Login",
    "110123": "Logout",
    "110126": "Node Authentication",
}
#: the event kinds themselves (hooks.SECURITY_EVENTS), so an auditor can search them
SECURITY_KIND = "https://yilian.health/fhir/CodeSystem/security-event"


def security_event(event: SecurityEvent, recorded: str) -> dict[str, Any]:
    """The AuditEvent of one security event of the authorization server (BALP / ATNA, security.md
    §4.1: client_id, user, outcome, reason): the client application and the user as agents
    (the user the requestor when known), the issued token named as REST events name it."""
    kind, subtype = _SECURITY[event.kind]
    subtypes = [{"system": SECURITY_KIND, "code": event.kind}]
    if subtype is not None:
        subtypes.insert(0, {"system": _DCM, "code": subtype, "display": _DCM_DISPLAY[subtype]})
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": _DCM, "code": kind, "display": _DCM_DISPLAY[kind]},
        "subtype": subtypes,
        "action": "E",
        "recorded": recorded,
        "outcome": "0" if event.success else "4",
    }
    if event.reason:
        out["outcomeDesc"] = event.reason[:1000]
    client: dict[str, Any] = {
        "type": _dcm("110153"),
        "who": {"display": event.client_id or "unknown client"},
        "requestor": event.user is None,
    }
    if event.client_id:
        client["who"]["identifier"] = {"value": event.client_id}
    server = {
        "type": _dcm("110152"),
        "who": {"display": event.base_url},
        "requestor": False,
        "network": {"address": event.base_url, "type": "5"},
    }
    out["agent"] = [client, server]
    if event.user is not None:
        user: dict[str, Any] = {
            "who": {"identifier": {"value": event.user}, "display": event.user},
            "requestor": True,
        }
        if event.token_id:
            user["policy"] = [f"urn:ietf:params:oauth:jti:{event.token_id}"]
        out["agent"].append(user)
    elif event.token_id:
        client["policy"] = [f"urn:ietf:params:oauth:jti:{event.token_id}"]
    out["source"] = _source(event.base_url)
    return out


def _source(base_url: str) -> dict[str, Any]:
    """AuditEvent.source: this server, an application server (security-source-type 4)."""
    return {
        "observer": {"type": "Device", "display": f"FHIR server {base_url}"},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }
        ],
    }
