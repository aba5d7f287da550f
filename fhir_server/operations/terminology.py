"""Terminology operations over our own CodeSystems and ValueSets (terminology/ folder):
CodeSystem/$lookup (http://hl7.org/fhir/R4/codesystem-operation-lookup.html),
ValueSet/$validate-code (http://hl7.org/fhir/R4/valueset-operation-validate-code.html) and
CodeSystem/$validate-code (http://hl7.org/fhir/R4/codesystem-operation-validate-code.html).

GET passes every parameter as a string (a `coding` as `system|code`); POST takes Parameters.
Code systems and value sets that are not ours (SNOMED CT, LOINC, ...) are not supported:
the answer says so in an OperationOutcome rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..errors import error
from ..interactions.read import read
from ..terminology import Terminology, split_canonical
from .registry import Call, Operations, Outcome

LOOKUP = "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"
VS_VALIDATE = "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"
CS_VALIDATE = "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code"
#: check(system, code, display) -> (result, message or display), None if it cannot tell
Check = Callable[[str | None, str, str | None], tuple[bool, str] | None]
ONLY_OURS = ("this server only supports the CodeSystems and ValueSets of R4, of HL7 Terminology "
             "and of its own terminology/")


OPERATIONS = Operations()
operation = OPERATIONS.operation


def terminology(call: Call) -> Terminology:
    return call.services.terminology


# --- $lookup --------------------------------------------------------------------------------


@operation("$lookup", "type", types=("CodeSystem",), methods=("GET", "POST"), definition=LOOKUP)
@operation("$lookup", "instance", types=("CodeSystem",), methods=("GET", "POST"), definition=LOOKUP)
def lookup_operation(call: Call) -> Outcome:
    """Display, designations and properties of one code."""
    term = terminology(call)
    coding = _coding(call.value("coding"), "coding")
    code = _string(call, "code") or coding.get("code")
    system = _string(call, "system") or coding.get("system")
    version = _string(call, "version") or coding.get("version")
    if call.rid is not None:
        url, stored_version = _instance(call, "CodeSystem")
        if system and split_canonical(system)[0] != url:
            raise error(400, "invalid", f"system '{system}' is not CodeSystem/{call.rid}", "system")
        system, version = url, version or stored_version
    if not code:
        raise error(400, "required", "$lookup needs a code (code or coding)", "code")
    if not system:
        raise error(400, "required", "$lookup needs a system (system or coding)", "system")
    if term.code_system(system) is None:
        raise error(404, "not-found", f"CodeSystem {system} is not known: {ONLY_OURS}", "system")
    found = term.lookup(system, code, version)
    if found is None:
        if version and term.code_system(system, version) is None:
            msg = f"Version '{version}' of CodeSystem {split_canonical(system)[0]} is not known"
            raise error(404, "not-found", msg, "version")
        raise error(404, "code-invalid", f"Unknown code '{code}' in CodeSystem {system}", "code")
    language = _string(call, "displayLanguage")
    wanted = {str(p.get("valueCode") or p.get("valueString")) for p in call.values("property")}
    return Outcome(_lookup_parameters(found, language, wanted))


def _lookup_parameters(
    found: dict[str, Any], language: str | None, wanted: set[str]
) -> dict[str, Any]:
    display = found["display"]
    if language:
        for d in found["designation"]:
            if d.get("language") == language and d.get("value"):
                display = d["value"]
                break
    params: list[dict[str, Any]] = [{"name": "name", "valueString": found["name"]}]
    if found["version"]:
        params.append({"name": "version", "valueString": found["version"]})
    if display:
        params.append({"name": "display", "valueString": display})
    for d in found["designation"]:
        part: list[dict[str, Any]] = []
        if d.get("language"):
            part.append({"name": "language", "valueCode": d["language"]})
        if d.get("use"):
            part.append({"name": "use", "valueCoding": d["use"]})
        part.append({"name": "value", "valueString": d.get("value")})
        params.append({"name": "designation", "part": part})
    props: list[tuple[str, str, Any]] = [
        (p["code"], p["type"], p["value"]) for p in found["property"]
    ]
    if found["definition"]:
        props.append(("definition", "valueString", found["definition"]))
    if found["parent"]:
        props.append(("parent", "valueCode", found["parent"]))
    props.extend(("child", "valueCode", child) for child in found["child"])
    for code, key, value in props:
        if wanted and code not in wanted:
            continue
        part = [{"name": "code", "valueCode": code}, {"name": "value", key: value}]
        params.append({"name": "property", "part": part})
    return {"resourceType": "Parameters", "parameter": params}


# --- $validate-code -------------------------------------------------------------------------


@operation(
    "$validate-code", "type", types=("ValueSet",), methods=("GET", "POST"), definition=VS_VALIDATE
)
@operation(
    "$validate-code",
    "instance",
    types=("ValueSet",),
    methods=("GET", "POST"),
    definition=VS_VALIDATE,
)
def validate_valueset_operation(call: Call) -> Outcome:
    """Is the code (or coding, or any coding of the CodeableConcept) in the value set?"""
    term = terminology(call)
    url = _string(call, "url")
    version = _string(call, "valueSetVersion")
    if call.rid is not None:
        stored_url, stored_version = _instance(call, "ValueSet")
        if url and split_canonical(url)[0] != stored_url:
            raise error(400, "invalid", f"url '{url}' is not ValueSet/{call.rid}", "url")
        url, version = stored_url, version or stored_version
    if call.value("valueSet") is not None:
        raise error(400, "not-supported", f"A valueSet parameter is not supported: {ONLY_OURS}")
    if not url:
        raise error(400, "required", "ValueSet/$validate-code needs a url (or an instance)", "url")
    canonical = f"{split_canonical(url)[0]}|{version}" if version else url
    if term.value_set(canonical) is None:
        raise error(404, "not-found", f"ValueSet {canonical} is not known: {ONLY_OURS}", "url")

    def check(system: str | None, code: str, display: str | None) -> tuple[bool, str] | None:
        return term.validate_code(canonical, system, code, display)

    return Outcome(_validate(call, term, check))


@operation(
    "$validate-code", "type", types=("CodeSystem",), methods=("GET", "POST"), definition=CS_VALIDATE
)
@operation(
    "$validate-code",
    "instance",
    types=("CodeSystem",),
    methods=("GET", "POST"),
    definition=CS_VALIDATE,
)
def validate_codesystem_operation(call: Call) -> Outcome:
    """Is the code defined in the code system (and the display one of its displays)?"""
    term = terminology(call)
    url = _string(call, "url")
    version = _string(call, "version")
    if call.rid is not None:
        stored_url, stored_version = _instance(call, "CodeSystem")
        if url and split_canonical(url)[0] != stored_url:
            raise error(400, "invalid", f"url '{url}' is not CodeSystem/{call.rid}", "url")
        url, version = stored_url, version or stored_version
    if call.value("codeSystem") is not None:
        raise error(400, "not-supported", f"A codeSystem parameter is not supported: {ONLY_OURS}")

    def check(system: str | None, code: str, display: str | None) -> tuple[bool, str] | None:
        target = url or system
        if not target:
            raise error(400, "required", "CodeSystem/$validate-code needs a url", "url")
        if system and split_canonical(system)[0] != split_canonical(target)[0]:
            return False, f"The system {system} is not CodeSystem {target}"
        if term.code_system(target, version) is None:
            raise error(404, "not-found", f"CodeSystem {target} is not known: {ONLY_OURS}", "url")
        return term.check_code(target, code, display, version)

    return Outcome(_validate(call, term, check))


def _validate(call: Call, term: Terminology, check: Check) -> dict[str, Any]:
    """Run `check(system, code, display)` on the code, the coding or each coding of the
    codeableConcept, and build the Parameters answer."""
    candidates: list[tuple[str | None, str, str | None]] = []
    concept = call.value("codeableConcept")
    coding = call.value("coding")
    code = _string(call, "code")
    if code is not None:
        candidates.append((_string(call, "system"), code, _string(call, "display")))
    elif coding is not None:
        c = _coding(coding, "coding")
        if not c.get("code"):
            raise error(400, "required", "The coding has no code", "coding")
        candidates.append((c.get("system"), c["code"], c.get("display")))
    elif concept is not None:
        if not isinstance(concept, dict):
            raise error(
                400, "invalid", "codeableConcept must be a CodeableConcept", "codeableConcept"
            )
        for c in concept.get("coding") or []:
            if isinstance(c, dict) and c.get("code"):
                candidates.append((c.get("system"), c["code"], c.get("display")))
        if not candidates:
            return _answer(False, "The CodeableConcept has no coded value", None)
    else:
        raise error(400, "required", "$validate-code needs code, coding or codeableConcept", "code")
    messages: list[str] = []
    for system, code, display in candidates:
        answer = check(system, code, display)
        if answer is None:
            raise error(400, "not-supported", f"Cannot check {code} here: {ONLY_OURS}")
        ok, message = answer
        if ok:
            return _answer(True, None, message)
        messages.append(message)
    system, code, _ = candidates[0]
    right = term.display(system, code) if system else None
    return _answer(False, "; ".join(messages), right)


def _answer(result: bool, message: str | None, display: str | None) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
    if message:
        params.append({"name": "message", "valueString": message})
    if display:
        params.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": params}


# --- helpers --------------------------------------------------------------------------------


def _instance(call: Call, kind: str) -> tuple[str, str | None]:
    """The url and version of the CodeSystem/ValueSet the operation was invoked on."""
    assert call.rid is not None
    stored = read(call.services.store.reader(), kind, call.rid)
    resource = orjson.loads(stored.json or b"{}")
    url = resource.get("url")
    if not isinstance(url, str) or not url:
        raise error(400, "not-supported", f"{kind}/{call.rid} has no url: {ONLY_OURS}")
    version = resource.get("version")
    term = terminology(call)
    ours = term.code_system(url) if kind == "CodeSystem" else term.value_set(url)
    if ours is None:
        raise error(400, "not-supported", f"{kind}/{call.rid} ({url}) is not ours: {ONLY_OURS}")
    return url, version if isinstance(version, str) else None


def _string(call: Call, name: str) -> str | None:
    value = call.value(name)
    if value is None:
        return None
    if not isinstance(value, str | int | float | bool):
        raise error(400, "invalid", f"Parameter '{name}' must be a simple value", name)
    return str(value)


def _coding(value: Any, name: str) -> dict[str, Any]:
    """A Coding from POST, or `system|code` from GET; {} when absent."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        system, sep, code = value.rpartition("|")
        return {"system": system, "code": code} if sep else {"code": code}
    raise error(400, "invalid", f"Parameter '{name}' must be a Coding", name)
