"""Audit records (record.py) expanded into AuditEvents after IHE Basic Audit Log Patterns
(BALP, ITI.BasicAudit): one event per patient touched, identifiers and references only, never
resource content. Pure and deterministic, so `audit verify` can expand a record again and
compare; a change to the shape needs a new record format (record.FORMAT)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from ..search.fhirpath import Node, parse_reference
from ..search.index import BUILDERS, TABLES
from ..storage.contract import IndexRows, Stored, Version
from .record import Record

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
#: ObjectLifecycleEvents (DICOM PS3.15 A.5.3, dicom-audit-lifecycle) of a written version
_LIFECYCLE = {
    "create": ("1", "Origination / Creation"),
    "update": ("3", "Amendment"),
    "patch": ("3", "Amendment"),
    "delete": ("14", "Logical Deletion"),
}
_LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"


def expand(record: Record) -> list[dict[str, Any]]:
    """The AuditEvents of a record, with ids `<record id>-<n>` and no meta."""
    kind = record["kind"]
    if kind == "rest":
        base = _event(record, record["do"], [_entity(t) for t in record["targets"]])
        owners = record["patients"]
        events = [{**base, "entity": [*base["entity"], _patient(p)]} for p in owners] or [base]
    elif kind == "bundle":
        events = _bundle_events(record)
    else:
        events = [_security_event(record)]
    rid = record["id"]
    return [{**event, "id": f"{rid}-{n}"} for n, event in enumerate(events, 1)]


def _bundle_events(record: Record) -> list[dict[str, Any]]:
    """A batch's or transaction's writes (subtype the bundle type, action E: one bundle may
    create, update and delete; each entity's `lifecycle` says which): one event per patient
    compartment the writes touched, holding an entity per version written in it (BALP: one
    event per patient), and one for the writes in no patient's compartment."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for what, interaction, patients in record["writes"]:
        code, display = _LIFECYCLE[interaction]
        lifecycle = {"system": _LIFECYCLE_SYSTEM, "code": code, "display": display}
        entity = {**_entity({"what": what}), "lifecycle": lifecycle}
        for owner in patients or (None,):
            groups.setdefault(owner, []).append(entity)
    base = _event(record, record["do"], [])
    return [
        {**base, "entity": [*written, *base["entity"], *([_patient(p)] if p else [])]}
        for p, written in groups.items()
    ]


def _event(record: Record, interaction: str, entities: list[dict[str, Any]]) -> dict[str, Any]:
    by = record["by"]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _REST,
        "subtype": [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}
        ],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": record["at"],
        "outcome": record["outcome"],
    }
    if "reason" in record:
        event["outcomeDesc"] = record["reason"]
    if "btg" in by:  # security.md §4.1: break-glass, with the reason given
        event["purposeOfEvent"] = [_break_glass(by["btg"])]
    event["agent"] = _agents(by, interaction in _TO_CLIENT)
    event["source"] = _source(by["base"])
    event["entity"] = [*entities, _request(by["request"])]
    return event


def _request(request_id: str) -> dict[str, Any]:
    return {
        "what": {"identifier": {"value": request_id}},
        "type": {"system": _BALP_ENTITY, "code": "XrequestId"},
    }


def _agents(by: dict[str, str], to_client: bool) -> list[dict[str, Any]]:
    """The client application (with its network address), this server (with its base URL)
    and the user (BALP: requestor, `who` = user or fhirUser)."""
    client_role, server_role = ("110152", "110153") if to_client else ("110153", "110152")
    client = _client(by, client_role, requestor=False)
    who: dict[str, Any] = {"display": by["label"]}
    if "fhirUser" in by:
        who["reference"] = by["fhirUser"]
    elif "user" in by:
        who["identifier"] = {"value": by["user"]}
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
    if "token" in by:
        user["policy"] = [_jti(by["token"])]
    if "btg" in by:
        user["purposeOfUse"] = [_break_glass(by["btg"])]
    return [client, _server(by["base"], server_role), user]


def _client(by: dict[str, str], role: str, requestor: bool) -> dict[str, Any]:
    """The client application, with the network address it called from (BALP)."""
    client: dict[str, Any] = {
        "type": _dcm(role),
        "who": {"display": by.get("client") or "unknown client"},
        "requestor": requestor,
    }
    if "client" in by:
        client["who"]["identifier"] = {"value": by["client"]}
    if "address" in by:
        client["network"] = {"address": by["address"], "type": "2"}  # 2: IP address
    return client


def _server(base_url: str, role: str) -> dict[str, Any]:
    return {
        "type": _dcm(role),
        "who": {"display": base_url},
        "requestor": False,
        "network": {"address": base_url, "type": "5"},  # 5: URI
    }


def _jti(token: str) -> str:
    return f"urn:ietf:params:oauth:jti:{token}"


def _break_glass(reason: str) -> dict[str, Any]:
    """v3-ActReason BTG (break the glass), the reason as the concept's text."""
    coding = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG",
              "display": "break the glass"}  # fmt: skip
    return {"coding": [coding], **({"text": reason} if reason else {})}


def _dcm(code: str) -> dict[str, Any]:
    display = {"110152": "Destination Role ID", "110153": "Source Role ID"}[code]
    return {"coding": [{"system": _DCM, "code": code, "display": display}]}


def _entity(target: dict[str, str]) -> dict[str, Any]:
    if "query" in target:
        entity: dict[str, Any] = {
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _ROLE, "code": "24", "display": "Query"},
        }
        if target["query"]:  # base64Binary may not be empty
            entity["query"] = base64.b64encode(target["query"].encode()).decode("ascii")
        if target.get("what"):
            entity["what"] = {"reference": target["what"]}
        return entity
    return {
        "what": {"reference": target["what"]},
        "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": _ROLE, "code": "4", "display": "Domain Resource"},
    }


def _patient(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": _ROLE, "code": "1", "display": "Patient"},
    }


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


def _security_event(record: Record) -> dict[str, Any]:
    """A security event of the authorization server (BALP / ATNA, security.md §4.1: client_id,
    its network address, user, outcome, reason): the client application and the user as
    agents (the user the requestor when known), the issued token named as REST events name
    it, and the X-Request-Id of the /auth request."""
    by = record["by"]
    kind, subtype = _SECURITY[record["do"]]
    subtypes = [{"system": SECURITY_KIND, "code": record["do"]}]
    if subtype is not None:
        subtypes.insert(0, {"system": _DCM, "code": subtype, "display": _DCM_DISPLAY[subtype]})
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": _DCM, "code": kind, "display": _DCM_DISPLAY[kind]},
        "subtype": subtypes,
        "action": "E",
        "recorded": record["at"],
        "outcome": record["outcome"],
    }
    if "reason" in record:
        out["outcomeDesc"] = record["reason"]
    client = _client(by, "110153", requestor="user" not in by)
    out["agent"] = [client, _server(by["base"], "110152")]
    if "user" in by:
        user: dict[str, Any] = {
            "who": {"identifier": {"value": by["user"]}, "display": by["user"]},
            "requestor": True,
        }
        if "token" in by:
            user["policy"] = [_jti(by["token"])]
        out["agent"].append(user)
    elif "token" in by:
        client["policy"] = [_jti(by["token"])]
    out["source"] = _source(by["base"])
    if "request" in by:
        out["entity"] = [_request(by["request"])]
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


def versions(record: Record, stamp: str) -> list[Version]:
    """The AuditEvents of a record, ready to store (meta.lastUpdated `stamp`), with the index
    rows of what auditors search by (index_rows would give the same rows, test_audit checks
    it; built here from the known shape, it costs a tenth). The validator is not run (the
    tests validate every kind)."""
    out: list[Version] = []
    shared: IndexRows | None = None
    for event in expand(record):
        if shared is None:  # every event of a record has the same parts but its entities
            shared = _shared_rows(event)
        rows = _entity_rows(event.get("entity", ()))
        index = {t: _unique(shared[t] + rows[t]) for t in TABLES}
        body = {**event, "meta": {"versionId": "1", "lastUpdated": stamp}}
        json = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        stored = Stored("AuditEvent", event["id"], 1, stamp, False, json, "POST")
        out.append(Version(stored, index, None, {}))
    return out


#: the AuditEvent search parameters indexed: those auditors search by (security.md §4.1)
INDEXED = frozenset(
    {"date", "agent", "type", "subtype", "action", "outcome", "source", "patient", "entity",
     "purpose"}
)


def _shared_rows(event: dict[str, Any]) -> IndexRows:
    """Rows of date (recorded), type, subtype, action, outcome, agent (agent.who), source
    (source.observer), patient (agent.who that is a Patient: a patient as the user) and
    purpose (purposeOfEvent, agent.purposeOfUse)."""
    tables: IndexRows = {t: [] for t in TABLES}
    token, reference = BUILDERS["token"], BUILDERS["reference"]
    BUILDERS["date"]("date", [(event["recorded"], "instant")], tables)
    token("type", [(event["type"], "Coding")], tables)
    token("subtype", [(c, "Coding") for c in event["subtype"]], tables)
    token("action", [(event["action"], "code")], tables)
    token("outcome", [(event["outcome"], "code")], tables)
    whos: list[Node] = [(a["who"], "Reference") for a in event["agent"]]
    reference("agent", whos, tables)
    reference("source", [(event["source"]["observer"], "Reference")], tables)
    reference("patient", [w for w in whos if _is_patient(w[0])], tables)
    purposes: list[Node] = [(c, "CodeableConcept") for c in event.get("purposeOfEvent", ())]
    purposes += [(c, "CodeableConcept") for a in event["agent"] for c in a.get("purposeOfUse", ())]
    token("purpose", purposes, tables)  # break-the-glass: AuditEvent?purpose=BTG
    return tables


def _entity_rows(entities: Any) -> IndexRows:
    """Rows of entity (entity.what) and patient (entity.what that is a Patient)."""
    tables: IndexRows = {t: [] for t in TABLES}
    whats: list[Node] = [(e["what"], "Reference") for e in entities if "what" in e]
    BUILDERS["reference"]("entity", whats, tables)
    BUILDERS["reference"]("patient", [w for w in whats if _is_patient(w[0])], tables)
    return tables


def _is_patient(reference: dict[str, Any]) -> bool:
    """`where(resolve() is Patient)` as the search compiler reads it: by the reference's type."""
    ref = reference.get("reference")
    parsed = parse_reference(ref) if isinstance(ref, str) else None
    return parsed is not None and parsed[0] == "Patient"


def _unique(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(dict.fromkeys(rows)) if len(rows) > 1 else rows
