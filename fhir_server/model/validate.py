"""Structural validation with the fhir.resources R4B models, reported as OperationOutcome issues.

R4B is wire-compatible with R4 for the clinical and administrative resources; the R4 types that
R4B dropped are checked for the basics only (see README, "R4 types missing in R4B").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NewType

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from ..errors import FhirError, Issue, error
from ..spec import RESOURCE_TYPES
from .profiles import Catalog, has_errors, load_catalog, profile_issues

if TYPE_CHECKING:  # typing only: the terminology service answers the binding checks
    from ..terminology import Terminology

#: a resource that passed the Validator: the only kind the write path stores
Validated = NewType("Validated", dict[str, Any])

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


#: R4 types whose R4B model was redesigned, so R4B rejects valid R4 content: basic checks only
R4B_INCOMPATIBLE = frozenset({"Evidence", "EvidenceVariable"})


@cache
def _model(rtype: str) -> Any:
    if rtype in R4B_INCOMPATIBLE:
        return None
    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        return None


def check_type(rtype: str) -> None:
    """404 for a resource type R4 does not define (http.html: unknown resource type)."""
    if rtype not in RESOURCE_TYPES:
        raise error(404, "not-supported", f"Unknown resource type '{rtype}'", rtype)


def check_id(rid: str) -> None:
    if not ID_PATTERN.match(rid):
        raise error(400, "invalid", f"Invalid resource id '{rid}'", "id")


def check_body(resource: Any, rtype: str | None = None) -> dict[str, Any]:
    """A JSON object whose resourceType is known (and matches the URL's type, if given)."""
    if not isinstance(resource, dict):
        raise error(400, "structure", "The body must be a JSON object (a FHIR resource)")
    actual = resource.get("resourceType")
    if not isinstance(actual, str):
        raise error(400, "required", "Missing resourceType", "resourceType")
    if rtype is not None and actual != rtype:
        raise error(
            400,
            "invalid",
            f"Resource type '{actual}' does not match the URL's type '{rtype}'",
            "resourceType",
        )
    if actual not in RESOURCE_TYPES:
        raise error(400, "not-supported", f"Unknown resource type '{actual}'", "resourceType")
    return resource


def validation_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every structural error of the resource (empty list when it is valid)."""
    rtype = resource["resourceType"]
    issues: list[Issue] = []
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_PATTERN.match(rid)):
        issues.append(Issue("invalid", f"Invalid resource id {rid!r}", "error", f"{rtype}.id"))
    model = _model(rtype)
    if model is None:
        return issues
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            issues.append(
                Issue(
                    "structure" if err["type"] == "extra_forbidden" else "value",
                    f"{err['msg']}",
                    "error",
                    _expression(rtype, err["loc"]),
                )
            )
    except (ValueError, TypeError) as exc:  # validators outside pydantic's error protocol
        issues.append(Issue("invalid", str(exc), "error", rtype))
    return issues


class Validator:
    """Structure (fhir.resources models) and our profiles (with their bindings checked against
    the terminology service), built once from the Settings' folders."""

    def __init__(self, catalog: Catalog, terminology: Terminology | None) -> None:
        self.catalog = catalog
        self.terminology = terminology

    @classmethod
    def load(cls, dirs: Iterable[Path], terminology: Terminology | None) -> Validator:
        return cls(load_catalog(dirs), terminology)

    @property
    def profiles(self) -> set[str]:
        """The canonical URLs of the resource profiles this validator knows."""
        return set(self.catalog.profiles)

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        """Structural issues, or when there are none, the issues against claimed profiles."""
        return validation_issues(resource) or self.profile_issues(resource)

    def profile_issues(self, resource: dict[str, Any]) -> list[Issue]:
        return profile_issues(resource, self.catalog, self.terminology)

    def __call__(self, resource: dict[str, Any]) -> Validated:
        """Raise 400 with every structural issue found (http.html: 'failed basic FHIR
        validation rules'), then 422 when the resource violates one of our profiles that it
        claims in meta.profile (http.html: 'violates applicable FHIR profiles or server
        business rules'); otherwise the resource, marked as validated."""
        issues = validation_issues(resource)
        if issues:
            raise FhirError(400, issues)
        issues = self.profile_issues(resource)
        if has_errors(issues):
            raise FhirError(422, issues)
        return Validated(resource)


def _expression(rtype: str, loc: tuple[Any, ...]) -> str:
    """pydantic location ('name', 0, 'given') -> FHIRPath-like 'Patient.name[0].given'."""
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """Top-level JSON names in the summary view (ElementDefinition.isSummary) of a type."""
    base = {"resourceType", "id", "meta", "implicitRules"}
    model = _model(rtype)
    if model is None:
        return frozenset(base)
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            base.add(info.alias or name)
    return frozenset(base)
