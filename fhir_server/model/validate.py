"""The one Validator every write goes through (REST, batch and transaction entries, `load`,
operations): base R4 validation from the R4 definitions (model/structure.py), then the profiles
(model/profiles.py); and the request checks around it (known type, id, body). `Validated` is
the only kind of resource the write path stores."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NewType

from fhir.resources.R4B import get_fhir_model_class

from ..errors import FhirError, Issue, error
from ..spec import RESOURCE_TYPES
from .profiles import Catalog, has_errors, load_catalog, profile_issues, r4_profiles
from .structure import MAX_DEPTH, Structures

if TYPE_CHECKING:  # typing only: the terminology service answers the binding checks
    from ..terminology import Terminology

__all__ = ["MAX_DEPTH", "Validated", "Validator", "check_body", "check_depth", "check_id",
           "check_type", "summary_elements"]  # fmt: skip

#: a resource that passed the Validator: the only kind the write path stores
Validated = NewType("Validated", dict[str, Any])

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

#: R4 types whose R4B model was redesigned or dropped: _elements/_summary know only the
#: common elements of these (interactions/elements.py)
R4B_INCOMPATIBLE = frozenset({"Evidence", "EvidenceVariable"})


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


def check_depth(document: Any) -> None:
    """400 for JSON nested more than MAX_DEPTH levels, for callers that walk a body before
    validating it (patch documents, operation parameters). Iterative, so it cannot overflow
    the stack itself."""
    stack: list[tuple[Any, int, str]] = [(document, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth >= MAX_DEPTH:
            message = f"The JSON is too deeply nested (more than {MAX_DEPTH} levels)"
            raise FhirError(400, [Issue("structure", message, "error", where)])
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in items:
            if isinstance(value, dict | list):
                step = f"[{key}]" if isinstance(key, int) else (f".{key}" if where else key)
                stack.append((value, depth + 1, where + step))


class Validator:
    """Base R4 validation and profile validation (ours; R4's too for $validate), built once
    from the Settings' folders."""

    def __init__(self, structures: Structures, catalog: Catalog,
                 terminology: Terminology | None) -> None:  # fmt: skip
        self.structures = structures
        self.catalog = catalog
        self.terminology = terminology

    @classmethod
    def load(
        cls,
        dirs: Iterable[Path],
        terminology: Terminology | None,
        stored: Iterable[dict[str, Any]] = (),
    ) -> Validator:
        """Our profiles (the folders'), then those among `stored` (written over REST)."""
        catalog = load_catalog(dirs, r4_profiles(), stored)
        return cls(Structures.load(terminology, catalog.known_extensions()), catalog, terminology)

    @property
    def profiles(self) -> set[str]:
        """The canonical URLs of our resource profiles."""
        return set(self.catalog.profiles)

    def issues(self, resource: dict[str, Any], profiles: Iterable[str] = ()) -> list[Issue]:
        """For $validate: every issue, warnings included, against the base definitions and,
        when those hold, against the profiles the resource claims (ours and R4's) and
        `profiles`."""
        issues = self.structures.validate(resource, full=True)
        if has_errors(issues):
            return issues
        more = profile_issues(resource, self.catalog, self.terminology, list(profiles), True)
        return issues + more

    def profile_issues(self, resource: dict[str, Any]) -> list[Issue]:
        return profile_issues(resource, self.catalog, self.terminology)

    def __call__(self, resource: dict[str, Any]) -> Validated:
        """Raise 400 with every error against the base R4 definitions (http.html: 'failed
        basic FHIR validation rules'), then 422 when the resource violates one of our profiles
        that it claims in meta.profile (http.html: 'violates applicable FHIR profiles or server
        business rules'); otherwise the resource, marked as validated."""
        issues = self.structures.validate(resource)
        if issues:
            raise FhirError(400, issues)
        issues = self.profile_issues(resource)
        if has_errors(issues):
            raise FhirError(422, issues)
        return Validated(resource)


@cache
def _model(rtype: str) -> Any:
    if rtype in R4B_INCOMPATIBLE:
        return None
    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        return None


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
