"""The CapabilityStatement, generated from what this server really supports
(http://hl7.org/fhir/R4/capabilitystatement.html): the parameters, modifiers and includes
listed are exactly those the search parser accepts."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..search import query as q
from ..search.registry import Registry
from ..spec import RESOURCE_TYPES
from .registry import Operations

INTERACTIONS = [
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
    "create", "search-type",
]  # fmt: skip
COMMON = ("_id", "_lastUpdated", "_text", "_content", "_list")
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
SYSTEM_PARAMS = [
    {"name": "_type", "type": "token", "documentation": "Resource types to search"},
    {"name": "_has", "type": "string", "documentation": "Reverse chaining, nested"},
]


def _entry(registry: Registry, rtype: str, code: str) -> dict[str, Any] | None:
    """One searchParam entry, or None for a parameter the parser would refuse."""
    try:
        param = q.lookup(registry, rtype, code)
    except q.Unknown:
        return None
    sp = registry.get(rtype, code)
    out: dict[str, Any] = {"name": code}
    if sp is not None and sp.url:
        out["definition"] = sp.url
    out["type"] = "special" if code in ("_text", "_content", "_list") else param.type
    mods = sorted(q.modifiers(param))
    notes = []
    if mods:
        notes.append("modifiers: " + ", ".join(f":{m}" for m in mods))
    if param.type in ("date", "number", "quantity"):
        notes.append("prefixes: " + ", ".join(q.PREFIXES))
    if param.type == "reference":
        notes.append("chains to any depth")
    if notes:
        out["documentation"] = "; ".join(notes)
    return out


def _operations(operations: Operations, rtype: str | None) -> list[dict[str, Any]]:
    """The registered operations on a type (or, for None, at system level), once each."""
    out: dict[str, dict[str, Any]] = {}
    for op in operations:
        if (op.level == "system") == (rtype is None) and (op.types is None or rtype in op.types):
            out.setdefault(op.name, {"name": op.name.lstrip("$"), "definition": op.definition})
    return list(out.values())


def capability_statement(
    registry: Registry,
    operations: Operations,
    software_date: str,
    profiles: dict[str, list[str]] | None = None,
    multiple_delete: bool = False,
) -> dict[str, Any]:
    """`profiles`: our IG's profile URLs per resource type (CapabilityStatement
    .rest.resource.supportedProfile); `multiple_delete`: whether a conditional delete may remove
    several matches (conditional-delete-status `multiple`) or only one (`single`)."""
    revincludes: dict[str, list[str]] = {}  # target type -> Type:param that may point at it
    for other in RESOURCE_TYPES:
        for c, p in registry.for_type(other).items():
            if p.type == "reference":
                for target in p.targets:
                    revincludes.setdefault(target, []).append(f"{other}:{c}")
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        codes = [*COMMON, *sorted(c for c in registry.for_type(rtype) if c not in COMMON)]
        params = [e for e in (_entry(registry, rtype, c) for c in codes) if e is not None]
        refs = sorted(c for c, p in registry.for_type(rtype).items() if p.type == "reference")
        resources.append(
            {
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                **({"supportedProfile": profiles[rtype]} if profiles and rtype in profiles else {}),
                "interaction": [{"code": c} for c in INTERACTIONS],
                "versioning": "versioned",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "multiple" if multiple_delete else "single",
                "searchInclude": [f"{rtype}:{c}" for c in refs],
                "searchRevInclude": sorted(revincludes.get(rtype, ())),
                "searchParam": params,
                "operation": _operations(operations, rtype),
            }
        )
    bulk = any(op.name == "$export" for op in operations)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": software_date,
        "kind": "instance",
        # Bulk Data Access IG 2.0.0: a server offering $export instantiates its statement
        **({"instantiates": [BULK_DATA]} if bulk else {}),
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 server for hospital consortia"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "patchFormat": [
            "application/json-patch+json", "application/fhir+json", "application/fhir+xml"
        ],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "searchParam": SYSTEM_PARAMS,
                "operation": _operations(operations, None),
            }
        ],
    }
