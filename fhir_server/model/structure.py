"""Base validation of R4 resources against the R4 StructureDefinitions, read as data
(spec/structures.json.gz, made by scripts/build_validation_data.py): JSON shape, known
elements, cardinality, choice types, primitive formats, fixed/pattern values, Reference
targets, bindings and invariants (validation.html#structure, #cardinality, #value, #binding,
#invariants). Each type compiles once into a `Shape`, a table from JSON property to `Slot`.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import Issue
from ..spec import SPEC_DIR
from .invariants import Env, Invariant, compile_invariant
from .primitives import Check, checker, narrative_has_content
from .profiles import matches_pattern

if TYPE_CHECKING:  # typing only: the terminology service answers the binding checks
    from ..terminology import Terminology

#: JSON nested deeper than this is refused (the deepest R4 example nests 21 levels)
MAX_DEPTH = 64
#: how many (element, value) pairs found valid are remembered (about 10 MB at most)
VALID_CACHE = 50_000
#: lookups after which a slot whose values rarely repeat stops remembering them
USEFUL_AFTER = 500
ELE_1 = "ele-1"
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REF_TYPE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")
Loc = list[str | int]

# slot kinds
PRIMITIVE, COMPLEX, RESOURCE, PRIMITIVE_EXT = range(4)


class TooDeep(Exception):
    def __init__(self, loc: Loc) -> None:
        self.loc = list(loc)


@dataclass(eq=False)
class Slot:
    """One JSON property of a type: `valueQuantity` of Observation, `_birthDate` of Patient."""

    key: str
    element: str  # the element's name in the definition, e.g. value[x]
    path: str  # the element's path, e.g. Observation.value[x]
    kind: int
    many: bool
    type: str
    check: Check | None = None  # primitives
    shape: Shape | None = None  # complex types and backbone elements
    #: (strength, ValueSet url)
    binding: tuple[str, str] | None = None
    fixed: Any = None
    pattern: Any = None
    targets: frozenset[str] | None = None  # Reference(...) target types; None: any
    invariants: tuple[Invariant, ...] = ()
    modifier_extension: bool = False
    #: the choice element the key belongs to (value[x]), if any
    choice: str | None = None
    #: whether a valid value may be remembered (Structures.pure); None until first asked,
    #: False too once remembering proved useless here (values that never repeat: references)
    pure: bool | None = None
    tries: int = 0
    hits: int = 0

    #: a primitive checked by its type alone: nothing more to do once the value is
    plain: bool = False


@dataclass(eq=False)
class Shape:
    """A complex type, or a backbone element of a resource or type."""

    name: str
    slots: dict[str, Slot] = field(default_factory=dict)
    #: (element name, its JSON keys, min, max or None for *)
    counted: list[tuple[str, tuple[str, ...], int, int | None]] = field(default_factory=list)
    invariants: tuple[Invariant, ...] | None = None  # None while being compiled
    resource: bool = False


class Structures:
    """The R4 types compiled from the definitions, and the walk that validates an instance."""

    def __init__(self, data: dict[str, Any], terminology: Terminology | None,
                 extensions: dict[str, bool] | None = None) -> None:  # fmt: skip
        self.types: dict[str, Any] = data["types"]
        self.table: list[list[str]] = data["constraints"]
        self.terminology = terminology
        #: known extension urls -> whether each is a modifier extension
        self.extensions = extensions or {}
        self._shapes: dict[str, Shape] = {}
        self._checks: dict[str, Check] = {}
        self._members: dict[str, frozenset[Any] | None] = {}
        self._pure: dict[int, bool] = {}
        #: (slot, JSON bytes) of values found valid in write mode: a value seen again (the same
        #: LOINC code, the same unit) is not walked again. Bounded: cleared when full.
        self.valid: set[tuple[int, bytes]] = set()
        self.resource_types = frozenset(
            t for t, d in self.types.items() if d["kind"] == "resource" and not d["abstract"]
        )
        # every type compiled now (60 ms): a shape is never seen half-built by another thread
        for name, definition in self.types.items():
            if definition["kind"] != "primitive-type":
                self.shape(name)

    @classmethod
    def load(cls, terminology: Terminology | None,
             extensions: dict[str, bool] | None = None) -> Structures:  # fmt: skip
        data = orjson.loads(gzip.decompress((SPEC_DIR / "structures.json.gz").read_bytes()))
        return cls(data, terminology, extensions)

    # -- compiling ---------------------------------------------------------------------------

    def shape(self, name: str) -> Shape:
        """The compiled shape of a type."""
        found = self._shapes.get(name)
        if found is None:
            found = self._compile_type(name)
        return found

    def _compile_type(self, name: str) -> Shape:
        elements = self.types[name]["elements"]
        by_path = {e["path"]: e for e in elements}
        children: dict[str, list[dict[str, Any]]] = {}
        for e in elements[1:]:
            children.setdefault(e["path"].rsplit(".", 1)[0], []).append(e)
        types = frozenset(self.types)
        root = elements[0]["path"]
        # registered before its elements are: types refer to themselves (Extension.extension,
        # Identifier.assigner.identifier)
        top = self._shapes[name] = Shape(name, resource=self.types[name]["kind"] == "resource")
        shapes: dict[str, Shape] = {root: top}

        def build(path: str) -> Shape:
            shape = shapes.get(path)
            if shape is not None and shape.invariants is not None:
                return shape
            if shape is None:
                shape = shapes[path] = Shape(path)
            shape.invariants = self._invariants(by_path[path], types)
            for e in children.get(path, ()):
                self._add_element(shape, e, children, build, types)
            return shape

        return build(root)

    def _invariants(self, element: dict[str, Any], types: frozenset[str],
                    skip: tuple[Invariant, ...] = ()) -> tuple[Invariant, ...]:  # fmt: skip
        out = []
        for index in element.get("constraints") or ():
            key, severity, human, expression = self.table[index]
            if key == ELE_1:
                continue  # checked by the walk itself: no empty objects
            inv = compile_invariant(key, severity, human, expression, types)
            if inv not in skip:
                out.append(inv)
        return tuple(out)

    def _add_element(self, shape: Shape, e: dict[str, Any],
                     children: dict[str, list[dict[str, Any]]],
                     build: Callable[[str], Shape], types: frozenset[str]) -> None:  # fmt: skip
        path: str = e["path"]
        name = path.rsplit(".", 1)[-1]
        max_ = e["max"]
        many = max_ != "1"
        binding = tuple(e["binding"]) if e.get("binding") else None
        fixed = next(iter(e["fixed"].values())) if e.get("fixed") else None
        pattern = next(iter(e["pattern"].values())) if e.get("pattern") else None
        keys: list[str] = []
        if e.get("contentReference") or path in children:
            target = e.get("contentReference") or path
            sub = build(target)
            inv = self._invariants(e, types, sub.invariants or ()) if path in children else ()
            shape.slots[name] = Slot(name, name, path, COMPLEX, many, "BackboneElement",
                                     shape=sub, invariants=inv)  # fmt: skip
            keys.append(name)
        else:
            for t in e.get("types") or ():
                tname, targets = (t[0], frozenset(t[1])) if isinstance(t, list) else (t, None)
                suffix = self.types.get(tname, {}).get("profileOf", tname)
                key = name[:-3] + suffix[0].upper() + suffix[1:] if name.endswith("[x]") else name
                slot = self._slot(key, name, path, tname, many, e, types)
                slot.binding, slot.fixed, slot.pattern = binding, fixed, pattern  # type: ignore[assignment]
                slot.targets = targets
                slot.plain = (slot.kind == PRIMITIVE and fixed is None and pattern is None
                              and binding is None and not slot.invariants
                              and tname != "xhtml")  # fmt: skip
                shape.slots[key] = slot
                keys.append(key)
                if slot.kind == PRIMITIVE:
                    element = self.shape("Element")
                    shape.slots["_" + key] = Slot("_" + key, name, path, PRIMITIVE_EXT, many,
                                                  "Element", shape=element)  # fmt: skip
        if name.endswith("[x]") and len(keys) > 1:
            for k in keys:
                for key in (k, "_" + k):
                    if key in shape.slots:
                        shape.slots[key].choice = name
        low = e["min"]
        high = None if max_ == "*" else int(max_)
        if low or (high is not None and high != 1):
            counted = tuple(keys) + tuple("_" + k for k in keys if "_" + k in shape.slots)
            shape.counted.append((name, counted, low, high))

    def _slot(self, key: str, name: str, path: str, tname: str, many: bool,
              e: dict[str, Any], types: frozenset[str]) -> Slot:  # fmt: skip
        kind = self.types.get(tname, {}).get("kind")
        if tname == "Resource":
            return Slot(key, name, path, RESOURCE, many, tname)
        if kind == "primitive-type" or tname not in self.types:
            inv = self._invariants(e, types)
            return Slot(key, name, path, PRIMITIVE, many, tname, check=self._check(tname),
                        invariants=inv)  # fmt: skip
        sub = self.shape(tname)
        return Slot(key, name, path, COMPLEX, many, tname, shape=sub,
                    invariants=self._invariants(e, types, sub.invariants or ()),
                    modifier_extension=name == "modifierExtension")  # fmt: skip

    def pure(self, shape: Shape, seen: set[int] | None = None) -> bool:
        """Whether validating a value of this shape depends on the value alone (no resource
        inside, no invariant that reads the resource), so a valid one may be remembered."""
        cached = self._pure.get(id(shape))
        if cached is not None:
            return cached
        seen = seen if seen is not None else set()
        if id(shape) in seen:
            return True  # a cycle (Extension.extension): decided by the rest
        seen.add(id(shape))
        result = not any(i.uses_env for i in shape.invariants or ()) and all(
            slot.kind != RESOURCE
            and not any(i.uses_env for i in slot.invariants)
            and (slot.shape is None or self.pure(slot.shape, seen))
            for slot in shape.slots.values()
        )
        if len(seen) == 1 or not result:
            self._pure[id(shape)] = result
        return result

    def _check(self, tname: str) -> Check:
        found = self._checks.get(tname)
        if found is None:
            regex = self.types.get(tname, {}).get("regex")
            found = self._checks[tname] = checker(tname, regex)
        return found

    # -- terminology -------------------------------------------------------------------------

    def members(self, valueset: str) -> frozenset[Any] | None:
        """(system, code) pairs and bare codes of a value set, or None when it cannot be
        enumerated here (unknown, or over SNOMED CT, LOINC ...)."""
        if valueset in self._members:
            return self._members[valueset]
        found = None
        if self.terminology is not None:
            expansion = self.terminology.expand(valueset)
            if expansion is not None:
                found = frozenset([(s, c) for s, c, _ in expansion] + [c for _, c, _ in expansion])
        self._members[valueset] = found
        return found

    # -- walking -----------------------------------------------------------------------------

    def contexts(self, resource: dict[str, Any]) -> list[Evaluation]:
        """Every invariant evaluation a full validation of the resource makes (for the
        differential test of the compiled invariants)."""
        walk = _Walk(self, True, [])
        walk.resource(resource, [str(resource.get("resourceType"))], None)
        return walk.record or []

    def validate(self, resource: dict[str, Any], full: bool = False) -> list[Issue]:
        """Every issue of the resource: errors, and in `full` mode (for $validate) also the
        warnings (extensible and preferred bindings, warning invariants)."""
        walk = _Walk(self, full)
        rtype = resource.get("resourceType")
        try:
            walk.resource(resource, [str(rtype)], None)
        except TooDeep as exc:
            message = f"The JSON is too deeply nested (more than {MAX_DEPTH} levels)"
            return [Issue("structure", message, "error", _expression(exc.loc))]
        return walk.issues


def _expression(loc: Loc) -> str:
    """['Patient', 'name', 0, 'given'] -> 'Patient.name[0].given'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # beyond what JSON numbers orjson writes hold, or a decimal as written
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


#: one invariant evaluation: the invariant, the element's value, the environment, and the
#: element's type or path (what FHIRPath engines take as the context's type)
Evaluation = tuple[Invariant, Any, Env, str]


class _Walk:
    """One validation: the issues found so far, and the resources in scope for invariants."""

    def __init__(self, structures: Structures, full: bool,
                 record: list[Evaluation] | None = None) -> None:  # fmt: skip
        self.s = structures
        self.full = full
        self.issues: list[Issue] = []
        self.record = record

    def issue(self, code: str, message: str, loc: Loc, severity: str = "error") -> None:
        self.issues.append(Issue(code, message, severity, _expression(loc)))

    def resource(self, value: Any, loc: Loc, root: dict[str, Any] | None) -> None:
        """A resource: at the top, contained, or in a Bundle entry or Parameters."""
        if type(value) is not dict:
            self.issue("structure", "Must be a resource (a JSON object)", loc)
            return
        rtype = value.get("resourceType")
        if type(rtype) is not str or rtype not in self.s.resource_types:
            self.issue("invalid", f"Not a resource: unknown resourceType {rtype!r}", loc)
            return
        rid = value.get("id")
        if rid is not None and (type(rid) is not str or ID_PATTERN.fullmatch(rid) is None):
            self.issue("invalid", f"Invalid resource id {rid!r}", [*loc, "id"])
        env = Env(value, root if root is not None else value)
        self.object(self.s.shape(rtype), value, loc, env)

    def object(self, shape: Shape, obj: Any, loc: Loc, env: Env) -> None:  # noqa: C901, PLR0912
        if len(loc) >= MAX_DEPTH:
            raise TooDeep(loc)
        if type(obj) is not dict:
            self.issue("structure", f"Must be a JSON object (a {shape.name}), not {_show(obj)}",
                       loc)  # fmt: skip
            return
        slots = shape.slots
        chosen: dict[str, str] | None = None
        for key, value in obj.items():
            slot = slots.get(key)
            if slot is None:
                if key == "resourceType" and shape.resource:
                    continue
                self.issue("structure", f"Unknown element '{key}' in {shape.name}", [*loc, key])
                continue
            if slot.choice is not None:
                chosen = chosen or {}
                other = chosen.get(slot.choice)
                if other is not None and other.lstrip("_") != key.lstrip("_"):
                    self.issue("structure", f"Only one of {other.lstrip('_')}, {key.lstrip('_')} "
                               f"may be present ({shape.name}.{slot.choice})", loc)  # fmt: skip
                chosen[slot.choice] = key
            if value is None:
                self.issue("structure", "null is not a value (leave the element out)",
                           [*loc, key])  # fmt: skip
            elif slot.many:
                loc.append(key)
                if type(value) is not list:
                    self.issue("structure", f"'{key}' must be a JSON array", loc)
                elif not value:
                    self.issue("structure", "An array must not be empty", loc)
                else:
                    for i, item in enumerate(value):
                        loc.append(i)
                        if item is None:
                            if not self._null_allowed(slot, obj, i):
                                self.issue("structure", "null in an array without an extension "
                                           "at the same position", loc)  # fmt: skip
                        elif slot.plain:
                            problem = slot.check(item)  # type: ignore[misc]
                            if problem is not None:
                                self.issue("value", problem, loc)
                        else:
                            self.value(slot, item, loc, env)
                        loc.pop()
                loc.pop()
            elif type(value) is list:
                self.issue("structure", f"'{key}' must be a single value, not an array",
                           [*loc, key])  # fmt: skip
            elif slot.plain:
                problem = slot.check(value)  # type: ignore[misc]
                if problem is not None:
                    self.issue("value", problem, [*loc, key])
            else:
                loc.append(key)
                self.value(slot, value, loc, env)
                loc.pop()
        if len(obj) <= 1 and (not obj or "id" in obj) and not shape.resource:
            self.issue("invariant", "ele-1: All FHIR elements must have a @value or children",
                       loc)  # fmt: skip
        for name, keys, low, high in shape.counted:
            n = 0
            for k in keys:
                v = obj.get(k)
                if v is not None:
                    n = max(n, len(v) if type(v) is list else 1)
            if n < low:
                self.issue("required", f"{shape.name}.{name}: minimum required = {low}, but only "
                           f"found {n}", [*loc, name.replace("[x]", "")])  # fmt: skip
            elif high is not None and n > high:
                self.issue("structure", f"{shape.name}.{name}: maximum allowed = {high}, but "
                           f"found {n}", [*loc, name.replace("[x]", "")])  # fmt: skip
        if shape.invariants:
            self._invariants(shape.invariants, obj, loc, env, shape.name)

    def _null_allowed(self, slot: Slot, obj: dict[str, Any], i: int) -> bool:
        other = obj.get(slot.key[1:] if slot.kind == PRIMITIVE_EXT else "_" + slot.key)
        return type(other) is list and i < len(other) and other[i] is not None

    def value(self, slot: Slot, value: Any, loc: Loc, env: Env) -> None:
        if slot.kind == COMPLEX and not self.full:
            pure = slot.pure
            if pure is None:
                assert slot.shape is not None
                pure = slot.pure = self.s.pure(slot.shape) and not any(
                    i.uses_env for i in slot.invariants
                )
            if pure:
                self._remembered(slot, value, loc, env)
                return
        self._value(slot, value, loc, env)

    def _value(self, slot: Slot, value: Any, loc: Loc, env: Env) -> None:
        kind = slot.kind
        if kind == PRIMITIVE:
            assert slot.check is not None
            problem = slot.check(value)
            if problem is not None:
                self.issue("value", problem, loc)
                return
            if self.full and slot.type == "xhtml" and not narrative_has_content(value):
                self.issue("invariant", "txt-2: The narrative SHALL have some non-whitespace "
                           "content", loc, "warning")  # fmt: skip
        elif kind == COMPLEX:
            assert slot.shape is not None
            before = len(self.issues)
            self.object(slot.shape, value, loc, env)
            if len(self.issues) > before and any(
                i.severity == "error" for i in self.issues[before:]
            ):
                return  # its bindings and invariants mean nothing on a malformed value
            if slot.modifier_extension:
                self._modifier_extension(value, loc)
            if slot.targets is not None:
                self._target(slot, value, loc)
        elif kind == RESOURCE:
            if len(loc) >= MAX_DEPTH:
                raise TooDeep(loc)
            contained = slot.element == "contained"
            self.resource(value, loc, env.root if contained else None)
            return
        else:
            assert slot.shape is not None
            self.object(slot.shape, value, loc, env)
            return
        if slot.fixed is not None and value != slot.fixed:
            self.issue("value", f"Value must be exactly {_show(slot.fixed)}", loc)
        if slot.pattern is not None and not matches_pattern(value, slot.pattern):
            self.issue("value", f"Value must match the pattern {_show(slot.pattern)}", loc)
        if slot.binding is not None and (self.full or slot.binding[0] == "required"):
            self._binding(slot, value, loc)
        if slot.invariants:
            base = slot.type if slot.path.endswith("[x]") else slot.path
            self._invariants(slot.invariants, value, loc, env, base)

    def _remembered(self, slot: Slot, value: Any, loc: Loc, env: Env) -> None:
        """A value of a pure slot: skipped when the same JSON was valid there before."""
        try:
            key = (id(slot), orjson.dumps(value))
        except TypeError:  # a value orjson does not write (a decimal kept as written)
            key = None
        valid = self.s.valid
        slot.tries += 1
        if key is not None and key in valid:
            slot.hits += 1
            return
        if slot.tries == USEFUL_AFTER and slot.hits * 5 < slot.tries:
            slot.pure = False  # fewer than one in five seen before: not worth the bytes
        before = len(self.issues)
        self._value(slot, value, loc, env)
        if key is not None and len(self.issues) == before and b'"#' not in key[1]:
            if len(valid) >= VALID_CACHE:
                valid.clear()
            valid.add(key)

    def _invariants(self, invariants: tuple[Invariant, ...], value: Any, loc: Loc,
                    env: Env, base: str) -> None:  # fmt: skip
        if self.record is not None:
            self.record += [(inv, value, env, base) for inv in invariants]
        is_object = type(value) is dict
        for inv in invariants:
            if is_object and inv.guard and not all(k in value for k in inv.guard):
                continue  # an element the invariant needs is absent: it holds
            error = inv.severity == "error"
            if (error or self.full) and not inv.holds(value, env):
                self.issue("invariant", f"{inv.key}: {inv.human}", loc,
                           "error" if error else "warning")  # fmt: skip

    def _binding(self, slot: Slot, value: Any, loc: Loc) -> None:
        """A required binding: a code must be in the value set, a Coding too, and a
        CodeableConcept must have a coding in it (terminologies.html#required); extensible and
        preferred ones warn. Skipped when the value set cannot be enumerated here."""
        assert slot.binding is not None
        strength, valueset = slot.binding
        members = self.s.members(valueset)
        if members is None:
            return
        codings = _codings(value, slot.type)
        if not codings or any(c in members if s is None else (s, c) in members
                              for s, c in codings):  # fmt: skip
            return
        shown = ", ".join(f"{s}#{c}" if s else f"'{c}'" for s, c in codings)
        severity = "error" if strength == "required" else "warning"
        self.issue("code-invalid", f"{shown} is not in the {strength} value set {valueset}",
                   loc, severity)  # fmt: skip

    def _modifier_extension(self, value: Any, loc: Loc) -> None:
        """A modifier extension must be understood to process the resource
        (extensibility.html#modifierExtension): an unknown one, or one not defined as a
        modifier, is refused."""
        url = value.get("url") if type(value) is dict else None
        if type(url) is not str:
            return
        known = self.s.extensions.get(url)
        if known is None:
            self.issue("extension", f"Unknown modifier extension {url}: the resource cannot be "
                       "safely processed", loc)  # fmt: skip
        elif not known:
            self.issue("extension", f"{url} is not a modifier extension", loc)

    def _target(self, slot: Slot, value: Any, loc: Loc) -> None:
        assert slot.targets is not None
        ref = value.get("reference") if type(value) is dict else None
        if type(ref) is not str or "Resource" in slot.targets:
            return
        m = _REF_TYPE.search(ref)
        if m is not None and m.group(1) in self.s.resource_types and m.group(1) not in slot.targets:
            self.issue("structure", f"A reference to a {m.group(1)} is not allowed here "
                       f"(allowed: {', '.join(sorted(slot.targets))})", loc)  # fmt: skip


def _codings(value: Any, tname: str) -> list[tuple[str | None, str]]:
    """(system, code) of a code, Coding, CodeableConcept or Quantity value."""
    if type(value) is str:
        return [(None, value)]
    if type(value) is not dict:
        return []
    if tname == "CodeableConcept":
        codings = value.get("coding")
        if type(codings) is not list:
            return []
        return [pair for c in codings for pair in _codings(c, "Coding")]
    code = value.get("code")
    if type(code) is not str:
        return []
    system = value.get("system")
    return [(system if type(system) is str else None, code)]
