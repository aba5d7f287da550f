"""$validate (http://hl7.org/fhir/R4/resource-operation-validate.html).

The outcome is the answer: 200 with an OperationOutcome whether or not the resource is valid.
It says more than a write would: warnings too (extensible and preferred bindings, warning
invariants such as dom-6), R4 profiles the resource claims, and the `profile` asked for (ours
or R4's, by canonical url).
"""

from __future__ import annotations

from typing import Any

from ..errors import Issue, error, information, operation_outcome
from ..model.validate import Validator, check_body
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
operation = OPERATIONS.operation

MODES = ("create", "update", "delete")
DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
_ORDER = {"fatal": 0, "error": 1, "warning": 2, "information": 3}


@operation("$validate", "type", definition=DEFINITION)
@operation("$validate", "instance", definition=DEFINITION)
def validate_operation(call: Call) -> Outcome:
    """Validate the resource given directly or as the `resource` parameter of Parameters."""
    assert call.rtype is not None
    profiles = [str(p) for p in (_string(v) for v in call.values("profile")) if p]
    return Outcome(_validate(call.services.validator, call.body, call.rtype, call.rid, profiles))


def _string(parameter: dict[str, Any]) -> str | None:
    for key in ("valueUri", "valueCanonical", "valueString"):
        if isinstance(parameter.get(key), str):
            return str(parameter[key])
    return None


def _validate(
    validator: Validator, payload: Any, rtype: str, rid: str | None, profiles: list[str]
) -> dict[str, Any]:
    resource, mode = payload, None
    if isinstance(payload, dict) and payload.get("resourceType") == "Parameters":
        resource, mode = None, None
        for p in payload.get("parameter") or []:
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "mode":
                mode = p.get("valueCode")
    if mode is not None and mode not in MODES:
        raise error(400, "invalid", f"Unknown $validate mode '{mode}'", "mode")
    if mode == "delete":
        return information("The resource may be deleted")
    if resource is None:
        raise error(400, "required", "$validate needs a resource", "resource")
    resource = check_body(resource, rtype)
    issues = validator.issues(resource, profiles)
    if mode == "update" and rid is not None and resource.get("id") != rid:
        issues.append(Issue("invalid", f"id must be '{rid}' for mode update", "error", "id"))
    if not issues:
        return information("Validation successful: no issues found")
    return operation_outcome(sorted(issues, key=lambda i: _ORDER.get(i.severity, 4)))
