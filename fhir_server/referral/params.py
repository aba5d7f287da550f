"""Reading the Parameters of a referral operation (operations.html#request)."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..operations.registry import Call
from .work import SYSTEM_AGENT, Json


def reference_param(call: Call, name: str) -> Json | None:
    value = call.value(name)
    if isinstance(value, str):
        return {"reference": value}
    if isinstance(value, dict) and "reference" in value:
        return value
    if value is not None:
        raise error(400, "invalid", f"'{name}' must be a Reference", name)
    return None


def concept_param(call: Call, name: str, required: bool = False) -> Json | None:
    """A Coding, CodeableConcept or string parameter as a CodeableConcept."""
    for p in call.values(name):
        if isinstance(p.get("valueCodeableConcept"), dict):
            return dict(p["valueCodeableConcept"])
        if isinstance(p.get("valueCoding"), dict):
            return {"coding": [p["valueCoding"]]}
        if isinstance(p.get("valueString"), str) and p["valueString"].strip():
            return {"text": p["valueString"]}
    if required:
        raise error(
            400, "required", f"Parameter '{name}' (Coding or CodeableConcept) is required", name
        )
    return None


def string_param(call: Call, name: str) -> str | None:
    value = call.value(name)
    return value if isinstance(value, str) else None


def bool_param(call: Call, name: str) -> bool:
    value = call.value(name)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def actor(call: Call, default: Any) -> Json:
    """The agent of a transition: parameter `actor`, else the requester/owner reference."""
    given = reference_param(call, "actor")
    if given:
        return given
    return dict(default) if isinstance(default, dict) else SYSTEM_AGENT

