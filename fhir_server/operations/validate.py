"""$validate (http://hl7.org/fhir/R4/resource-operation-validate.html).

The outcome is the answer: 200 with an OperationOutcome whether or not the resource is valid.
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


@operation("$validate", "type", definition=DEFINITION)
@operation("$validate", "instance", definition=DEFINITION)
def validate_operation(call: Call) -> Outcome:
    """Validate the resource given directly or as the `resource` parameter of Parameters."""
    assert call.rtype is not None
    return Outcome(_validate(call.services.validator, call.body, call.rtype, call.rid))


def _validate(
    validator: Validator, payload: Any, rtype: str, rid: str | None
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
    issues = validator.issues(resource)
    if mode == "update" and rid is not None and resource.get("id") != rid:
        issues.append(Issue("invalid", f"id must be '{rid}' for mode update", "error", "id"))
    if not any(i.severity in ("error", "fatal") for i in issues):
        return (
            operation_outcome(issues)
            if issues
            else information("Validation successful: no issues found")
        )
    return operation_outcome(issues)
