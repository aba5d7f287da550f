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


#: JSON nested deeper than this is refused before any recursive code (pydantic, indexers) sees
#: it: the deepest R4 example nests 21 levels, pydantic exhausts Python's stack near 200.
MAX_DEPTH = 64

#: XML 1.0 [2] Char: a narrative may neither contain nor reference anything else (WFC: Legal
#: Character), e.g. surrogates or code points beyond U+10FFFF
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CHAR_REF = re.compile(r"&#(x[0-9A-Fa-f]+|[0-9]+);")

#: Resource / DomainResource elements every type has; R4B-less types are checked for these only
_OBJECTS = ("meta", "text")
_OBJECT_ARRAYS = ("contained", "extension", "modifierExtension")
_STRINGS = ("implicitRules", "language")

Loc = tuple[str | int, ...]


def validation_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every structural error of the resource (empty list when it is valid). The JSON walk runs
    first: a document nested too deeply gets that one issue and no further (recursive) checks."""
    rtype = resource["resourceType"]
    too_deep, issues = json_issues(resource, rtype)
    if too_deep is not None:
        return [too_deep]
    return issues + _resource_issues(resource, rtype)


def check_depth(document: Any) -> None:
    """400 for JSON nested more than MAX_DEPTH levels (for callers that walk a body before
    validating it, e.g. at parse time)."""
    too_deep, _ = json_issues(document, "")
    if too_deep is not None:
        raise FhirError(400, [too_deep])


def json_issues(document: Any, where: str) -> tuple[Issue | None, list[Issue]]:
    """What no model checks, in one iterative pass (so it cannot overflow the stack itself):
    nesting depth (the first issue: the walk stops there), empty strings (json.html: 'string
    property values can never be empty') and narrative that is not XML characters."""
    issues: list[Issue] = []
    stack: list[tuple[Any, Loc]] = [(document, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) >= MAX_DEPTH:
            message = f"The JSON is too deeply nested (more than {MAX_DEPTH} levels)"
            return Issue("structure", message, "error", _expression(where, loc)), issues
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in items:
            if isinstance(value, dict | list):
                stack.append((value, (*loc, key)))
            elif value == "":
                message = "Empty string: a value must have at least one character"
                issues.append(Issue("value", message, "error", _expression(where, (*loc, key))))
            elif key == "div" and loc and loc[-1] == "text" and isinstance(value, str):
                issues += _xhtml_char_issues(value, _expression(where, (*loc, key)))
    return None, issues


def _xhtml_char_issues(div: str, expression: str) -> list[Issue]:
    bad = _NOT_XML_CHAR.search(div)
    if bad is None:
        for ref in _CHAR_REF.finditer(div):
            digits = ref.group(1)
            code = int(digits[1:], 16) if digits[0] == "x" else int(digits)
            if code > 0x10FFFF or _NOT_XML_CHAR.match(chr(code)):
                bad = ref
                break
    if bad is None:
        return []
    message = f"The narrative contains {bad.group(0)!r}, which is not an XML character"
    return [Issue("value", message, "error", expression)]


def _resource_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    """The resource's own elements with its R4B model (the common elements only for the types
    R4B lacks or redesigned); each embedded resource on its own, so that one of an R4 type
    missing from R4B is not handed to R4B."""
    rtype = resource["resourceType"]
    issues = _common_issues(resource, where)
    flagged = {i.expression for i in issues}
    shell, embedded = _split_embedded(resource)
    for loc, item in embedded:
        issues += _embedded_issues(item, _expression(where, loc))
    shell = {k: v for k, v in shell.items() if _expression(where, (k,)) not in flagged}
    model = _model(rtype)
    if model is None:
        model = _model("DomainResource")
        shell = {k: v for k, v in shell.items() if k in _json_names("DomainResource")}
    return issues + _model_issues(model, shell, where)


def _common_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    """Shapes of the Resource/DomainResource elements. pydantic would take a JSON string for an
    object (it parses it), which the stored resource would then carry as a string."""
    issues: list[Issue] = []
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_PATTERN.match(rid)):
        issues.append(Issue("invalid", f"Invalid resource id {rid!r}", "error", f"{where}.id"))

    def wrong(loc: Loc, what: str) -> None:
        issues.append(Issue("structure", f"Must be {what}", "error", _expression(where, loc)))

    for key in _OBJECTS:
        if key in resource and not isinstance(resource[key], dict):
            wrong((key,), "a JSON object")
    for key in _OBJECT_ARRAYS:
        value = resource.get(key)
        if key in resource and not isinstance(value, list):
            wrong((key,), "an array of JSON objects")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    wrong((key, i), "a JSON object")
    for key in _STRINGS:
        if key in resource and not isinstance(resource[key], str):
            wrong((key,), "a string")
    return issues


def _split_embedded(resource: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Loc, Any]]]:
    """The resource without the resources it embeds (contained, Bundle.entry.resource and
    .response.outcome, Parameters.parameter(.part).resource), and those with their location."""
    found: list[tuple[Loc, Any]] = []
    shell = dict(resource)
    contained = shell.pop("contained", None)
    if isinstance(contained, list):
        found += [(("contained", i), item) for i, item in enumerate(contained)]
    elif contained is not None:
        shell["contained"] = contained
    if resource["resourceType"] == "Bundle" and isinstance(shell.get("entry"), list):
        shell["entry"] = [_lift(e, ("entry", i), found) for i, e in enumerate(shell["entry"])]
    if resource["resourceType"] == "Parameters":
        shell = _lift(shell, (), found)
    return shell, found


def _lift(node: Any, loc: Loc, found: list[tuple[Loc, Any]]) -> Any:
    """A copy of a Bundle entry or Parameters (part) without its embedded resources."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "resource" in out:
        found.append(((*loc, "resource"), out.pop("resource")))
    response = out.get("response")
    if isinstance(response, dict) and "outcome" in response:
        out["response"] = {k: v for k, v in response.items() if k != "outcome"}
        found.append(((*loc, "response", "outcome"), response["outcome"]))
    for key in ("parameter", "part"):
        if isinstance(out.get(key), list):
            out[key] = [_lift(p, (*loc, key, i), found) for i, p in enumerate(out[key])]
    return out


def _embedded_issues(item: Any, where: str) -> list[Issue]:
    """A resource inside another: an object whose resourceType R4 defines, then validated."""
    if not isinstance(item, dict):
        return [Issue("structure", "Must be a resource (a JSON object)", "error", where)]
    rtype = item.get("resourceType")
    if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
        message = f"Not a resource: unknown resourceType {rtype!r}"
        return [Issue("invalid", message, "error", where)]
    return _resource_issues(item, where)


def _model_issues(model: Any, resource: dict[str, Any], where: str) -> list[Issue]:
    issues: list[Issue] = []
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = err["loc"]
            if err["type"] == "model_validation_format" and loc and loc[-1] == "root":
                loc = loc[:-1]  # fhir.resources' "got type <int>" error sits on a pseudo-field
            issues.append(
                Issue(
                    "structure" if err["type"] == "extra_forbidden" else "value",
                    f"{err['msg']}",
                    "error",
                    _expression(where, loc),
                )
            )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # a fhir.resources validator failing outside pydantic's error protocol, e.g. the url
        # type calling .startswith on a number: the element is unknown, the resource is not
        message = f"A value does not have the JSON type its element needs ({exc})"
        issues.append(Issue("invalid", message, "error", where))
    return issues


class Validator:
    """Structure (fhir.resources models) and our profiles (with their bindings checked against
    the terminology service), built once from the Settings' folders."""

    def __init__(self, catalog: Catalog, terminology: Terminology | None) -> None:
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
        return cls(load_catalog(dirs, stored), terminology)

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


def _expression(where: str, loc: tuple[Any, ...]) -> str:
    """pydantic location ('name', 0, 'given') -> FHIRPath-like 'Patient.name[0].given'."""
    out = where
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}" if out else str(part)
    return out


@cache
def _json_names(rtype: str) -> frozenset[str]:
    """The JSON property names of a model (aliases: `class`, `_language`)."""
    return frozenset(info.alias or name for name, info in _model(rtype).model_fields.items())


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
