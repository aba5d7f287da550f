"""The CapabilityStatement, generated from what this server really supports
(http://hl7.org/fhir/R4/capabilitystatement.html)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..search.query import SPECIAL
from ..search.registry import Registry
from ..spec import RESOURCE_TYPES

INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
SEARCHABLE_TYPES = ("number", "date", "string", "token", "reference", "quantity", "uri")


def capability_statement(registry: Registry, software_date: str) -> dict[str, Any]:
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        params = [{"name": code, "type": SPECIAL[code]} for code in SPECIAL] + [
            {"name": p.code, "definition": p.url, "type": p.type}
            for code, p in sorted(registry.for_type(rtype).items())
            if p.type in SEARCHABLE_TYPES
            and code not in SPECIAL
            and code not in ("_text", "_content")
        ]
        resources.append(
            {
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                "interaction": [{"code": c} for c in INTERACTIONS],
                "versioning": "versioned",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchInclude": [
                    f"{rtype}:{p.code}"
                    for p in registry.for_type(rtype).values()
                    if p.type == "reference"
                ],
                "searchParam": params,
                "operation": [
                    {
                        "name": "validate",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                    }
                ],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": software_date,
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 server for hospital consortia"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
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
            }
        ],
    }
