"""Search URL -> backend-neutral query AST (http://hl7.org/fhir/R4/search.html).

Parsing is pure: it knows the registry of search parameters but nothing about storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import error
from ..spec import RESOURCE_TYPES, load
from .composite import component_types
from .unions import union_parts

COMPARTMENTS: dict[str, dict[str, list[str]]] = load("compartments.json")  # type: ignore[assignment]

if TYPE_CHECKING:
    from .registry import Registry, SearchParam

#: result parameters (search.html#return) and others that are not filters
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_page",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_format",
        "_pretty",
        "_include",
        "_revinclude",
        "_contained",
        "_containedType",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
#: the common parameters served from the resource table itself, not from index tables
SPECIAL = {
    "_id": "token",
    "_lastUpdated": "date",
    "_text": "string",
    "_content": "string",
    "_list": "reference",
}
#: the modifiers this server implements, per parameter type (reference also takes `:Type`);
#: token :in/:not-in/:above/:below are resolved by search/codes.py into `Clause.codes`
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "missing", "of-type", "in", "not-in", "above", "below"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"below", "above", "missing"}),
    "composite": frozenset(),
}
SPECIAL_MODIFIERS: dict[str, frozenset[str]] = {
    "_id": frozenset({"not"}),
    "_text": frozenset({"not"}),
    "_content": frozenset({"not"}),
}
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Param:
    """A search parameter as the compiler needs it (registry entries or the special ones)."""

    code: str
    type: str
    targets: tuple[str, ...] = ()
    #: composite parameters: the search type of each component
    components: tuple[str, ...] = ()
    #: a union of other parameters (search/unions.py): theirs are the index rows to read
    reads: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters whose index rows hold this one's values."""
        return self.reads or (self.code,)


@dataclass(frozen=True)
class Clause:
    """One query parameter: values are ORed; clauses are ANDed (search.html#combining)."""

    param: Param
    values: tuple[str, ...]
    modifier: str | None = None
    #: for chains: the clause to apply to the referenced resources of `target_type`
    chain: Clause | None = None
    target_type: str | None = None
    #: for _has: the referring type, its reference parameter, and the clause on it
    has: tuple[str, str, Clause] | None = None
    #: for compartment search: (compartment type, id, the parameters that link into it)
    compartment: tuple[str, str, tuple[str, ...]] | None = None
    #: a system search confined per type (policy/enforce.py): (type, clauses ANDed) branches,
    #: ORed; a resource matches when its type's branch does
    by_type: tuple[tuple[str, tuple[Clause, ...]], ...] | None = None
    #: the consortium rule (policy/decide.py): in the Patient compartment of a patient the
    #: organization may see
    patients: PatientSet | None = None
    #: a token clause's (system, code) pairs, resolved from :in/:not-in/:below/:above
    codes: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class CareRelationship:
    """Which Tasks make a care relationship between the organizations they name (Task.owner,
    the requester and performer of the ServiceRequest in Task.focus) for their patient
    (Task.for): those with this Task.code (system, code) and a businessStatus of this system.
    Registered by a feature (Services.care): the core knows no workflow's codes."""

    code: tuple[str, str]
    business_system: str
    #: Task.status values in which the relationship holds
    live: tuple[str, ...]
    #: Task.status values in which it has ended: it holds until `days` after Task.lastModified
    ended: tuple[str, ...]
    days: int
    #: the Communications that are `partOf` such a Task (its message thread) are seen only by
    #: the organizations that are its parties, whoever else sees the patient
    confines_messages: bool = False


@dataclass(frozen=True)
class PatientSet:
    """The patients Organization/`organization` may see: those it manages
    (Patient.managingOrganization), and those of a care relationship it is a party to or of a
    Consent permitting it, unless a Consent denies it (policy/decide.py). `relationships` pairs
    each with the instant after which an ended one still counts. `params`: the reference
    parameters putting the type in the Patient compartment. `excluding`: a Task id whose own
    relationship does not count (the check of its write: a Task cannot grant its writer
    access). `consents_at`: the instant Consents are judged at; None: they do not count.
    `shared_unless_patient`: a resource naming no Patient through `params` is in nobody's
    compartment and visible to all (a practitioner's Schedule). `through`: (reference
    parameter, type, that type's parameters naming its patient): a resource is also seen
    with a resource of that type it references whose patient is seen (the Provenance of a
    referral's transition, which targets the Task: seen by whoever sees the Task)."""

    organization: str
    relationships: tuple[tuple[CareRelationship, str], ...]
    params: tuple[str, ...]
    excluding: str | None = None
    consents_at: str | None = None
    shared_unless_patient: bool = False
    through: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass
class Query:
    rtype: str | None
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    #: system search: the types asked for with _type
    types: list[str] = field(default_factory=list)
    #: keyset cursor of the page asked for (None: the first page)
    page: str | None = None
    sort: list[tuple[Param, bool]] = field(default_factory=list)  # (param, descending)
    total: str = "accurate"
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    revincludes: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    #: (name, value) pairs actually applied, for the self link
    applied: list[tuple[str, str]] = field(default_factory=list)
    #: parameters ignored under lenient handling, with the reason
    ignored: list[tuple[str, str]] = field(default_factory=list)


def compartment_clause(ctype: str, cid: str, rtype: str) -> Clause:
    """Membership of `ctype/cid`'s compartment for `rtype` (compartmentdefinition.html):
    the reference parameters the R4 CompartmentDefinition lists, or the resource itself."""
    params = COMPARTMENTS.get(ctype, {}).get(rtype)
    if params is None and rtype != ctype:
        raise error(400, "not-supported", f"{rtype} is not in the {ctype} compartment")
    return Clause(
        Param("_compartment", "special"),
        (),
        compartment=(ctype, cid, tuple(p for p in params or () if p != "{def}")),
    )


def split_values(raw: str, name: str = "") -> tuple[str, ...]:
    """Comma-separated OR values (search.html#combining). Each keeps its escapes, for the
    splitting its type does (`|`, `$`); 400 for a backslash that escapes nothing."""
    check_escapes(raw, name)
    return tuple(split_escaped(raw, ","))


#: the characters a backslash escapes in a search value (search.html#escaping)
ESCAPED = frozenset("\\,$|")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def check_escapes(value: str, name: str) -> None:
    """search.html#escaping: `\\` must precede `\\`, `,`, `$` or `|` ("xx\\xx is illegal")."""
    i = value.find("\\")
    while i >= 0:
        if value[i + 1 : i + 2] not in ESCAPED:
            raise error(
                400,
                "invalid",
                f"'{name}': a backslash in a search value must escape '\\', ',', '$' or '|' "
                f"(write \\\\ for a backslash)",
                name or None,
            )
        i = value.find("\\", i + 2)


def split_escaped(value: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split at each `sep` no backslash escapes; the parts keep their escapes."""
    if "\\" not in value:
        return value.split(sep, maxsplit)
    parts: list[str] = []
    start = i = 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            i += 2
            continue
        if char == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def unescape(value: str) -> str:
    """A value part as the literal it stands for: `\\,` `\\$` `\\|` `\\\\` -> `, $ | \\`."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(r"\1", value)


def split_composite(value: str) -> list[str]:
    """`a$b` -> ['a', 'b'] at each unescaped `$`; each part keeps its escapes, since it is
    a value of its component's type (a token component splits at its own `|`)."""
    return split_escaped(value, "$")


def split_token(value: str) -> tuple[str | None, str]:
    """`system|code` -> (system, code); `|code` -> ('', code); `code` -> (None, code);
    unescaped (search.html#escaping)."""
    parts = split_escaped(value, "|", 1)
    if len(parts) == 1:
        return None, unescape(parts[0])
    return unescape(parts[0]), unescape(parts[1])


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


class Unknown(Exception):
    """A parameter the server does not know or support (handled leniently or strictly)."""


def lookup(
    registry: Registry, rtype: str | None, code: str, types: tuple[str, ...] = ()
) -> Param:
    """The parameter `code` of `rtype`; in a system search restricted by `_type`, one defined,
    with the same type, for every type listed (search.html#all)."""
    if rtype is None and types and code not in SPECIAL:
        found = {lookup(registry, t, code) for t in types}
        kinds = {p.type for p in found}
        if len(kinds) != 1 or "composite" in kinds or len({p.reads for p in found}) != 1:
            raise Unknown(f"'{code}' is not a parameter of the same type for every _type")
        targets = sorted({t for p in found for t in p.targets})
        return Param(code, kinds.pop(), tuple(targets), reads=found.pop().reads)
    if code in SPECIAL:
        return Param(code, SPECIAL[code])
    sp: SearchParam | None = registry.get(rtype or "Resource", code)
    if sp is None or sp.type == "special":
        raise Unknown(f"Unknown or unsupported search parameter '{code}'")
    if sp.type == "composite":
        components = component_types(sp, registry)
        if components is None:
            raise Unknown(f"Composite parameter '{code}' has unknown components")
        return Param(sp.code, sp.type, components=components, reads=_reads(registry, rtype, code))
    return Param(sp.code, sp.type, tuple(sp.targets), reads=_reads(registry, rtype, code))


def _reads(registry: Registry, rtype: str | None, code: str) -> tuple[str, ...]:
    return union_parts(rtype, registry).get(code, ()) if rtype else ()


def parse_clause(
    registry: Registry, rtype: str | None, name: str, raw: str, types: tuple[str, ...] = ()
) -> Clause:
    """One `name[:modifier][.chain]=value` pair into a Clause (raises Unknown)."""
    if name.startswith("_has:"):
        return _parse_has(registry, rtype, name, raw)
    head, dot, rest = name.partition(".")
    code, colon, modifier = head.partition(":")
    param = lookup(registry, rtype, code, types)
    mod = modifier if colon else None
    if dot:
        if param.type != "reference":
            raise Unknown(f"Chained parameter '{name}': '{code}' is not a reference parameter")
        targets = [mod] if mod else list(param.targets)
        targets = [t for t in targets if _has_param(registry, t, rest)]
        if len(targets) != 1:
            raise Unknown(
                f"Chained parameter '{name}' is ambiguous or unknown; name the target type "
                f"as '{code}:Type.{rest}'"
            )
        inner = parse_clause(registry, targets[0], rest, raw)
        return Clause(param, (), None, chain=inner, target_type=targets[0])
    if mod is not None:
        _check_modifier(param, mod)
    return Clause(param, split_values(raw, name), mod)


def _has_param(registry: Registry, rtype: str, name: str) -> bool:
    code = name.partition(".")[0].partition(":")[0]
    return code in SPECIAL or registry.get(rtype, code) is not None


def _parse_has(registry: Registry, rtype: str | None, name: str, raw: str) -> Clause:
    """`_has:Observation:patient:code=x` (search.html#has), nesting allowed."""
    parts = name.split(":", 3)
    if len(parts) < 4:
        raise Unknown(f"Malformed _has parameter '{name}'")
    _, other, ref, rest = parts
    ref_param = registry.get(other, ref)
    if ref_param is None or ref_param.type != "reference":
        raise Unknown(f"'{ref}' is not a reference parameter of '{other}' in '{name}'")
    inner = parse_clause(registry, other, rest, raw)
    return Clause(Param("_has", "special"), (), None, has=(other, ref, inner))


def modifiers(param: Param) -> frozenset[str]:
    """What may follow `param:` (search.html#modifiers), as implemented here."""
    if param.code in SPECIAL:
        return SPECIAL_MODIFIERS.get(param.code, frozenset())
    allowed = MODIFIERS.get(param.type, frozenset())
    if param.type == "reference":
        allowed = allowed | set(param.targets)
    return allowed


def _check_modifier(param: Param, mod: str) -> None:
    if mod not in modifiers(param):
        raise Unknown(f"Modifier ':{mod}' is not supported on parameter '{param.code}'")


def parse(
    registry: Registry,
    rtype: str | None,
    pairs: list[tuple[str, str]],
    default_count: int,
    max_count: int,
    strict: bool,
) -> Query:
    """All query pairs into a Query; unknown parameters are ignored or, if strict, a 400."""
    q = Query(rtype, count=default_count)
    for name, raw in pairs:  # first, since the types decide which parameters exist
        if name == "_type" and rtype is None:
            _apply(q, registry, name, raw, max_count)
    for name, raw in pairs:
        if name == "_type" and rtype is None:
            continue
        try:
            _apply(q, registry, name, raw, max_count)
        except Unknown as exc:
            if strict:
                raise error(400, "not-supported", str(exc), name) from None
            q.ignored.append((name, str(exc)))
    return q


def _apply(q: Query, registry: Registry, name: str, raw: str, max_count: int) -> None:
    if name in ("_format", "_pretty"):
        return
    if name == "_count":
        q.count = min(_int(name, raw), max_count)
    elif name == "_page":
        q.page = raw
    elif name == "_type":
        q.types = [t for t in raw.split(",") if t]
        unknown = [t for t in q.types if t not in RESOURCE_TYPES]
        if unknown:
            raise error(400, "not-supported", f"Unknown resource type(s) {unknown}", "_type")
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise error(400, "invalid", f"Invalid _total '{raw}'", "_total")
        q.total = raw
    elif name == "_summary":
        if raw not in ("true", "false", "text", "data", "count"):
            raise error(400, "invalid", f"Invalid _summary '{raw}'", "_summary")
        q.summary = None if raw == "false" else raw
    elif name == "_elements":
        q.elements = [e.strip() for e in raw.split(",") if e.strip()]
    elif name == "_sort":
        for key in raw.split(","):
            desc = key.startswith("-")
            q.sort.append((lookup(registry, q.rtype, key.lstrip("-"), tuple(q.types)), desc))
    elif name.startswith("_include") or name.startswith("_revinclude"):
        _parse_include(q, registry, name, raw)
        return
    elif name in RESULT_PARAMS:
        raise Unknown(f"Result parameter '{name}' is not supported")
    else:
        q.clauses.append(parse_clause(registry, q.rtype, name, raw, tuple(q.types)))
    q.applied.append((name, raw))


def _parse_include(q: Query, registry: Registry, name: str, raw: str) -> None:
    """`_include=Source:param[:Target]`, `:iterate` (search.html#include)."""
    base, _, mod = name.partition(":")
    if mod not in ("", "iterate", "recurse"):
        raise Unknown(f"Unknown modifier on '{name}'")
    parts = raw.split(":")
    if raw == "*" or len(parts) not in (2, 3):
        raise Unknown(f"Unsupported {base} value '{raw}'")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    sp = registry.get(source, code)
    if sp is None or sp.type != "reference":
        raise Unknown(f"'{source}:{code}' is not a reference search parameter")
    entry = (source, code, target, bool(mod))
    (q.includes if base == "_include" else q.revincludes).append(entry)
    q.applied.append((name, raw))


def _int(name: str, raw: str) -> int:
    """ASCII digits only (str.isdigit() takes '²'); huge values are clamped by the caller."""
    if not _DIGITS.fullmatch(raw):
        raise error(400, "invalid", f"'{name}' must be a non-negative integer", name)
    return int(raw) if len(raw) <= 18 else 10**18
