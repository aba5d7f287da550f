"""One error model: every failure becomes a FhirError, rendered once as an OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue; `code` is from http://hl7.org/fhir/issue-type."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = [self.expression]
        return out


@dataclass
class FhirError(Exception):
    """An HTTP status plus the issues that explain it."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)


def error(status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirError:
    """Shorthand for the common single-issue error."""
    return FhirError(status, [Issue(code, diagnostics, "error", expression)])


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(diagnostics: str) -> dict[str, Any]:
    """An all-clear OperationOutcome (used by $validate and Prefer: return=OperationOutcome)."""
    return operation_outcome([Issue("informational", diagnostics, "information")])
