"""_summary and _elements (http://hl7.org/fhir/R4/search.html#summary, #elements)."""

from __future__ import annotations

from typing import Any

from ..model.validate import summary_elements

_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


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
        keep = {*_ALWAYS, *(e.split(".")[0] for e in elements)}
        out = {k: v for k, v in resource.items() if k in keep}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out
