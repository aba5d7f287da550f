"""Terminology operations over the CodeSystems, ValueSets and ConceptMaps of R4, THO and ours
(terminology/ folder, and those written over REST): CodeSystem/$lookup
(http://hl7.org/fhir/R4/codesystem-operation-lookup.html), ValueSet/$validate-code
(valueset-operation-validate-code.html), CodeSystem/$validate-code
(codesystem-operation-validate-code.html), ValueSet/$expand (valueset-operation-expand.html),
CodeSystem/$subsumes (codesystem-operation-subsumes.html) and ConceptMap/$translate
(conceptmap-operation-translate.html).

GET passes every parameter as a string (a `coding` as `system|code`); POST takes Parameters.
Code systems and value sets that are not ours (SNOMED CT, LOINC, ...) are not supported:
the answer says so in an OperationOutcome rather than guessing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
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
    canonical = _value_set_canonical(call, "$validate-code")
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
    ours: Any = (
        term.code_system(url) if kind == "CodeSystem"
        else term.value_set(url) if kind == "ValueSet" else term.concept_map(url)
    )  # fmt: skip
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


# --- $expand --------------------------------------------------------------------------------

EXPAND = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"


@operation("$expand", "type", types=("ValueSet",), methods=("GET", "POST"), definition=EXPAND)
@operation("$expand", "instance", types=("ValueSet",), methods=("GET", "POST"), definition=EXPAND)
def expand_operation(call: Call) -> Outcome:
    """The value set's codes (valueset-operation-expand.html), narrowed by `filter` (a
    case-insensitive substring of the code or display) and paged by `offset`/`count`. Without
    `count`, an expansion longer than the server's max_count is refused as too-costly rather
    than cut short silently; a value set over codes we cannot enumerate (all of SNOMED CT, of
    LOINC ...) is refused the same way."""
    term = terminology(call)
    canonical = _value_set_canonical(call, "$expand")
    vs = term.value_set(canonical)
    if vs is None:
        raise error(404, "not-found", f"ValueSet {canonical} is not known: {ONLY_OURS}", "url")
    entries = term.expand(canonical)
    if entries is None:
        raise error(
            422, "too-costly",
            f"ValueSet {canonical} includes codes that cannot be enumerated here (e.g. all of "
            "SNOMED CT or LOINC); use $validate-code for single codes", "url",
        )  # fmt: skip
    max_count = call.services.settings.max_count
    offset = _count(call, "offset", 0)
    count = _count(call, "count", None)
    language = _string(call, "displayLanguage")
    text = (_string(call, "filter") or "").casefold()
    rows = [(s, c, (term.display(s, c, language) if language else None) or d)
            for s, c, d in entries]  # fmt: skip
    if text:
        rows = [r for r in rows if text in r[1].casefold() or text in (r[2] or "").casefold()]
    if count is None and len(rows) - offset > max_count:
        raise error(
            422, "too-costly",
            f"The expansion has {len(rows)} codes, more than {max_count}: page it with count "
            "(and offset) or narrow it with filter", "count",
        )  # fmt: skip
    page = rows[offset: offset + min(count if count is not None else max_count, max_count)]
    echo: list[dict[str, Any]] = []
    for name, value in (("filter", _string(call, "filter")), ("displayLanguage", language)):
        if value is not None:
            echo.append({"name": name, "valueString" if name == "filter" else "valueCode": value})
    echo.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        echo.append({"name": "count", "valueInteger": count})
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "total": len(rows),
        "offset": offset,
        "parameter": echo,
        "contains": [
            {"system": s, "code": c, **({"display": d} if d else {})} for s, c, d in page
        ],
    }
    out: dict[str, Any] = {"resourceType": "ValueSet", "url": split_canonical(canonical)[0]}
    if call.rid is not None:
        out["id"] = call.rid
    for key in ("version", "name", "title"):
        if vs.get(key):
            out[key] = vs[key]
    out.update({"status": vs.get("status") or "active", "expansion": expansion})
    return Outcome(out)


def _count(call: Call, name: str, default: int | None) -> Any:
    raw = _string(call, name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise error(400, "invalid", f"{name} must be a non-negative integer, not '{raw}'", name)
    return int(raw)


# --- $subsumes ------------------------------------------------------------------------------

SUBSUMES = "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes"


@operation("$subsumes", "type", types=("CodeSystem",), methods=("GET", "POST"), definition=SUBSUMES)
@operation(
    "$subsumes", "instance", types=("CodeSystem",), methods=("GET", "POST"), definition=SUBSUMES
)
def subsumes_operation(call: Call) -> Outcome:
    """How codeA relates to codeB in one code system (codesystem-operation-subsumes.html):
    equivalent, subsumes (A is an ancestor of B), subsumed-by or not-subsumed."""
    term = terminology(call)
    coding_a = _coding(call.value("codingA"), "codingA")
    coding_b = _coding(call.value("codingB"), "codingB")
    system = _string(call, "system") or coding_a.get("system") or coding_b.get("system")
    if call.rid is not None:
        system = _instance(call, "CodeSystem")[0]
    for coding, name in ((coding_a, "codingA"), (coding_b, "codingB")):
        if coding.get("system") and system and coding["system"] != system:
            raise error(400, "invalid", f"{name} is not in CodeSystem {system}", name)
    a = _string(call, "codeA") or coding_a.get("code")
    b = _string(call, "codeB") or coding_b.get("code")
    if not system:
        raise error(400, "required", "$subsumes needs a system (system or codings)", "system")
    if not a or not b:
        raise error(400, "required", "$subsumes needs codeA and codeB (or codings)", "codeA")
    if term.code_system(system) is None:
        raise error(404, "not-found", f"CodeSystem {system} is not known: {ONLY_OURS}", "system")
    for code, name in ((a, "codeA"), (b, "codeB")):
        if term.concept(system, code) is None:
            raise error(400, "code-invalid", f"Unknown code '{code}' in CodeSystem {system}", name)
    outcome = term.subsumes(system, a, b)
    return Outcome({"resourceType": "Parameters",
                    "parameter": [{"name": "outcome", "valueCode": outcome}]})  # fmt: skip


# --- $translate -----------------------------------------------------------------------------

TRANSLATE = "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"
#: equivalences that say the concepts do not correspond (conceptmap-operation-translate.html)
NO_MATCH = frozenset({"unmatched", "disjoint"})


@operation(
    "$translate", "type", types=("ConceptMap",), methods=("GET", "POST"), definition=TRANSLATE
)
@operation(
    "$translate", "instance", types=("ConceptMap",), methods=("GET", "POST"), definition=TRANSLATE
)
def translate_operation(call: Call) -> Outcome:
    """A code's counterparts in R4's ConceptMaps and ours: the one named (url or instance),
    or every map between the `source` and `target` value sets."""
    term = terminology(call)
    if call.value("conceptMap") is not None:
        raise error(400, "not-supported", f"A conceptMap parameter is not supported: {ONLY_OURS}")
    url = _string(call, "url")
    if call.rid is not None:
        url = _instance(call, "ConceptMap")[0]
    coding = _coding(call.value("coding"), "coding")
    concept = call.value("codeableConcept")
    if not coding and isinstance(concept, dict):
        coding = next((c for c in concept.get("coding") or [] if isinstance(c, dict)), {})
    code = _string(call, "code") or coding.get("code")
    system = _string(call, "system") or coding.get("system")
    if not code or not system:
        raise error(400, "required", "$translate needs a code and system (or a coding)", "code")
    if url and term.concept_map(url) is None:
        raise error(404, "not-found", f"ConceptMap {url} is not known: {ONLY_OURS}", "url")
    target = _string(call, "target") or _string(call, "targetsystem")
    source = _string(call, "source")
    reverse = _string(call, "reverse") == "true"
    matches = term.translate(system, code, url, source, _string(call, "target"), reverse)
    targetsystem = _string(call, "targetsystem")
    if targetsystem:
        matches = [m for m in matches if m["system"] == targetsystem]
    found = [m for m in matches if m["equivalence"] not in NO_MATCH]
    params: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(found)}]
    if not found:
        where = f" to {target}" if target else ""
        message = f"No mapping of {system}#{code}{where} is known"
        params.append({"name": "message", "valueString": message})
    for m in matches:
        concept_coding = {k: m[k] for k in ("system", "code", "display") if m.get(k)}
        params.append({"name": "match", "part": [
            {"name": "equivalence", "valueCode": m["equivalence"]},
            {"name": "concept", "valueCoding": concept_coding},
            {"name": "source", "valueUri": m["source"]},
        ]})  # fmt: skip
    return Outcome({"resourceType": "Parameters", "parameter": params})


def _value_set_canonical(call: Call, name: str) -> str:
    """The value set an operation at ValueSet level is about: `url` (+ `valueSetVersion`), or
    the instance's, which a `url` given beside it must agree with."""
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
        raise error(400, "required", f"ValueSet/{name} needs a url (or an instance)", "url")
    canonical = f"{split_canonical(url)[0]}|{version}" if version else url
    return canonical
