"""_summary and _elements (http://hl7.org/fhir/R4/search.html#summary, #elements)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from ..errors import error
from ..model import literal
from ..model.validate import R4B_INCOMPATIBLE, summary_elements

_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_SUMMARIES = ("true", "false", "text", "data", "count")


def shape_read(body: bytes, params: dict[str, str]) -> bytes:
    """A read's stored JSON reduced by its `_summary` / `_elements` (the same object when
    neither asks for less)."""
    summary, elements = params.get("_summary"), params.get("_elements")
    if not ((summary and summary != "false") or elements):
        return body
    if summary not in (None, *_SUMMARIES):
        raise error(400, "invalid", f"Invalid _summary '{summary}'", "_summary")
    chosen = [e.strip() for e in elements.split(",")] if elements else None
    return literal.dumps(filter_elements(literal.loads(body), summary, chosen))


def filter_elements(
    resource: dict[str, Any], summary: str | None, elements: list[str] | None
) -> dict[str, Any]:
    """A copy reduced to the requested view, tagged SUBSETTED as the spec requires."""
    rtype = resource.get("resourceType", "")
    keep: set[str] | frozenset[str]
    if summary == "text":
        keep = {*_ALWAYS, "text"}
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif summary in ("true", "count"):
        keep = summary_elements(rtype)
        out = {k: v for k, v in resource.items() if k in keep}
    elif elements is not None:
        # search.html#elements: servers SHOULD return the mandatory elements too
        keep = {*_ALWAYS, *mandatory_elements(rtype), *(e.split(".")[0] for e in elements)}
        out = {k: v for k, v in resource.items() if k in keep or k[:1] == "_" and k[1:] in keep}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out


@cache
def mandatory_elements(rtype: str) -> frozenset[str]:
    """Top-level JSON names of a type's elements with min >= 1 (a required choice element
    `value[x]` gives every one of its names), from the fhir.resources R4B model."""
    if rtype in R4B_INCOMPATIBLE:
        return frozenset()
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        return frozenset()
    names = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if info.is_required() or extra.get("element_required") or extra.get("one_of_many_required"):
            names.add(info.alias or name)
    return frozenset(names - {"resourceType"})
