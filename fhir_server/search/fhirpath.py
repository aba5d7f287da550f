"""FHIRPath-subset compiler for SearchParameter expressions (http://hl7.org/fhir/R4/fhirpath.html,
searchparameter.html): each expression becomes, once per resource type, a fast extractor of
(value, FHIR type) pairs; what the subset cannot express is evaluated by fhirpathpy."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhirpathpy import compile as fp_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as fp_models

from fhir_server.search.registry import COMMON_BASES

__all__ = [
    "Extractor",
    "Node",
    "Unsupported",
    "compile_expression",
    "compile_fhirpath",
    "parse_reference",
    "split_union",
]

Node = tuple[Any, str | None]  # (JSON value, FHIR type name or None when unknown)
Op = Callable[[list[Node]], list[Node]]

_MODEL: dict[str, Any] = fp_models["r4"]
_PATH2TYPE: dict[str, str] = _MODEL["path2Type"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]
_PARENT: dict[str, str] = _MODEL["type2Parent"]
# Backbone elements have no entry of their own in path2Type, only their children do.
_BACKBONES: frozenset[str] = frozenset(
    p.rsplit(".", i)[0] for p in _PATH2TYPE for i in range(1, p.count(".") + 1)
)


class Unsupported(Exception):
    """The native compiler does not handle this expression; use fhirpathpy."""


# --------------------------------------------------------------------------------------------
# Tokenising and splitting

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bq>`[^`]*`)|(?P<op>!=|<=|>=|[().\[\]|=,<>+\-*/&~!$%]))"
)


def _tokenize(expr: str) -> list[tuple[str, str, int, int]]:
    """Return (kind, text, start, end) tokens; raise Unsupported on anything unexpected."""
    out: list[tuple[str, str, int, int]] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot tokenize at {pos}: {expr!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind), m.end(kind)))
        pos = m.end()
    return out


def split_union(expression: str) -> list[tuple[str | None, str]]:
    """Split a top-level ``|`` union into (resource-type prefix or None, part text) pairs."""
    toks = _tokenize(expression)
    parts: list[tuple[str | None, str]] = []
    depth = 0
    start = 0
    bounds: list[tuple[int, int]] = []
    for i, (kind, text, _s, _e) in enumerate(toks):
        if kind == "op" and text in "([":
            depth += 1
        elif kind == "op" and text in ")]":
            depth -= 1
        elif kind == "op" and text == "|" and depth == 0:
            bounds.append((start, i))
            start = i + 1
    bounds.append((start, len(toks)))
    for a, b in bounds:
        seg = toks[a:b]
        if not seg:
            raise Unsupported(f"empty union part in {expression!r}")
        text = expression[seg[0][2] : seg[-1][3]]
        prefix = next((t[1] for t in seg if t[0] != "op" or t[1] != "("), None)
        first_id = next((t for t in seg if not (t[0] == "op" and t[1] == "(")), None)
        if first_id is None or first_id[0] != "id" or not first_id[1][:1].isupper():
            prefix = None
        parts.append((prefix, text))
    return parts


# --------------------------------------------------------------------------------------------
# Static typing against the FHIRPath R4 model


def _lookup(owner: str, name: str) -> tuple[str | None, list[tuple[str, str]] | None]:
    """Resolve element ``name`` on type/backbone path ``owner``.

    Returns (static type, None) for a plain element or (None, [(json key, type), ...]) for a
    choice element. Raises Unsupported if the model does not know the element.
    """
    t: str | None = owner
    while t:
        path = f"{t}.{name}"
        path = _ELSEWHERE.get(path, path)
        if path in _CHOICES:
            keys = []
            for suffix in _CHOICES[path]:
                ctype = suffix if suffix in _PARENT else suffix[0].lower() + suffix[1:]
                keys.append((name + suffix, ctype))
            return None, keys
        typ = _PATH2TYPE.get(path)
        if typ is not None:
            if typ in ("BackboneElement", "Element") and path in _BACKBONES:
                return path, None
            return typ, None
        if path in _BACKBONES:
            return path, None
        # inherited element (Resource.meta on Patient, Quantity.value on Age, Element.extension
        # on a backbone path): walk the parents
        t = _PARENT.get(t) if t in _PARENT else ("BackboneElement" if "." in t else None)
    raise Unsupported(f"unknown element {owner}.{name}")


def _is_type(node_type: str | None, value: Any, wanted: str) -> bool:
    t = node_type
    if (t is None or t == "Resource") and isinstance(value, dict):
        rtype = value.get("resourceType")
        t = rtype if type(rtype) is str else t
    while t:
        if t == wanted:
            return True
        t = _PARENT.get(t)
    return False


def _norm_type(name: str) -> str:
    """``FHIR.Quantity`` / ``Quantity`` / ``dateTime``: the model's spelling."""
    name = name.split(".")[-1]
    if name in _PARENT:
        return name
    low = name[0].lower() + name[1:]
    return low if low in _PARENT else name


# --------------------------------------------------------------------------------------------
# Runtime ops (each maps a node list to a node list)


class _Step:
    """Element access (one key, or several for a choice element). A class rather than a
    closure so the extractor can see which top-level keys a pipeline needs and skip it
    cheaply when the resource has none of them."""

    __slots__ = ("keys", "names")

    def __init__(self, keys: list[tuple[str, str | None]]) -> None:
        self.keys = tuple(keys)
        self.names = tuple(k for k, _ in keys)

    def __call__(self, nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for v, _t in nodes:
            if type(v) is dict:
                for key, typ in self.keys:
                    x = v.get(key)
                    if x is None:
                        continue
                    if type(x) is list:
                        out.extend((i, typ) for i in x if i is not None)
                    else:
                        out.append((x, typ))
        return out


def _op_child(key: str, typ: str | None) -> Op:
    return _Step([(key, typ)])


def _op_choice(keys: list[tuple[str, str]]) -> Op:
    return _Step(list(keys))


def _op_as(wanted: str) -> Op:
    def op(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if _is_type(n[1], n[0], wanted)]

    return op


_REF_RE = re.compile(
    r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None] | None:
    """Split a Reference.reference into (type, id, url) as stored in the reference index.

    ``Patient/1`` -> ("Patient", "1", None); ``http://x/fhir/Patient/1`` -> ("Patient", "1",
    url); ``urn:uuid:...`` or other absolute URIs -> (None, None, url); ``#c1`` -> None.
    """
    ref = ref.strip()
    if not ref or ref.startswith("#"):
        return None
    m = _REF_RE.match(ref)
    if m is not None and (m["base"] is None or "://" in m["base"]):
        return m["type"], m["id"], (ref if m["base"] is not None else None)
    return None, None, ref


def _reference_type(value: Any) -> str | None:
    if type(value) is dict:
        ref = value.get("reference")
        if type(ref) is str:
            parsed = parse_reference(ref)
            if parsed is not None:
                return parsed[0]
    return None


def _op_resolve_is(wanted: str) -> Op:
    def op(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if _reference_type(n[0]) == wanted]

    return op


def _op_where_eq(field: str, literal: Any) -> Op:
    def op(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if type(n[0]) is dict and n[0].get(field) == literal]

    return op


def _op_extension(url: str) -> Op:
    def op(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for v, _t in nodes:
            exts = v.get("extension") if type(v) is dict else None
            if type(exts) is list:
                out += [(e, "Extension") for e in exts if type(e) is dict and e.get("url") == url]
        return out

    return op


def _op_exists(nodes: list[Node]) -> list[Node]:
    return [(bool(nodes), "boolean")]


def _run(ops: list[Op], nodes: list[Node]) -> list[Node]:
    # Empty stays empty through every op except exists(), so stop early unless one follows.
    short = _op_exists not in ops
    for op in ops:
        if not nodes and short:
            break
        nodes = op(nodes)
    return nodes


def _truth(nodes: list[Node]) -> bool | None:
    """FHIRPath singleton evaluation for boolean operators: empty is 'unknown' (None)."""
    return bool(nodes[0][0]) if len(nodes) == 1 else (None if not nodes else True)


def _op_logic(conj: str, left: list[Op], right: list[Op]) -> Op:
    """Three-valued ``and`` / ``or``, both sides evaluated from the same input."""

    def op(nodes: list[Node]) -> list[Node]:
        a, b = _truth(_run(left, nodes)), _truth(_run(right, nodes))
        if conj == "and":
            r = False if a is False or b is False else (None if a is None or b is None else True)
        else:
            r = True if a is True or b is True else (None if a is None or b is None else False)
        return [] if r is None else [(r, "boolean")]

    return op


def _op_compare(ops: list[Op], literal: Any, negate: bool) -> Op:
    """``path = literal`` / ``!=``: empty stays empty; values of another type are unequal."""

    def op(nodes: list[Node]) -> list[Node]:
        vals = _run(ops, nodes)
        if not vals:
            return []
        eq = len(vals) == 1 and type(vals[0][0]) is type(literal) and vals[0][0] == literal
        return [(eq != negate, "boolean")]

    return op


def _op_index(i: int) -> Op:
    def op(nodes: list[Node]) -> list[Node]:
        return nodes[i : i + 1]

    return op


# --------------------------------------------------------------------------------------------
# The compiler: a recursive-descent parser over a FHIRPath subset


def _unquote(s: str) -> str:
    return s[1:-1].replace("\\'", "'").replace("\\\\", "\\")


class _Parser:
    """Compiles one union part for one concrete resource type into ops.

    Grammar: ``part := term ('.' step | '[' n ']')* ('as' Type)?``;
    ``term := '(' part ')' | TypeName``. Steps: element names, ``as(T)``, ``ofType(T)``,
    ``where(resolve() is T)``, ``where(elem = 'literal')``, ``exists()``, ``extension('url')``,
    ``first()``.
    """

    def __init__(self, text: str, resource_type: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.rt = resource_type

    def peek(self, off: int = 0) -> tuple[str, str]:
        j = self.i + off
        return (self.toks[j][0], self.toks[j][1]) if j < len(self.toks) else ("eof", "")

    def take(self, kind: str, text: str | None = None) -> str:
        k, t = self.peek()
        if k != kind or (text is not None and t != text):
            raise Unsupported(f"expected {text or kind}, got {t!r}")
        self.i += 1
        return t

    def compile(self) -> list[Op]:
        ops = self.bool_expr()
        if self.peek()[0] != "eof":
            raise Unsupported(f"trailing {self.peek()[1]!r}")
        return ops

    def bool_expr(self) -> list[Op]:
        """``a and b`` over comparisons (``Patient.deceased.exists() and ... != false``)."""
        left = self.comparison()
        while self.peek() in (("id", "and"), ("id", "or")):
            conj = self.take("id")
            left = [_op_logic(conj, left, self.comparison())]
        return left

    def comparison(self) -> list[Op]:
        ops, _typ = self.part()
        k, t = self.peek()
        if k == "op" and t in ("=", "!="):
            self.i += 1
            lk, lt = self.peek()
            self.i += 1
            literal: Any
            if lk == "id" and lt in ("true", "false"):
                literal = lt == "true"
            elif lk == "str":
                literal = _unquote(lt)
            else:
                raise Unsupported(f"comparison with {lt!r}")
            return [_op_compare(ops, literal, t == "!=")]
        return ops

    def part(self) -> tuple[list[Op], str | None]:
        ops, typ, choice = self.term()
        while True:
            k, t = self.peek()
            if k == "op" and t == ".":
                self.i += 1
                ops, typ, choice = self.step(ops, typ, choice)
            elif k == "op" and t == "[":
                self.i += 1
                n = int(self.take("num"))
                self.take("op", "]")
                ops, typ, choice = self.flush(ops, typ, choice)
                ops.append(_op_index(n))
            elif k == "id" and t == "as":
                self.i += 1
                ops, typ = self.as_type(ops, typ, choice, self.type_name())
                choice = None
            else:
                break
        ops, typ, _ = self.flush(ops, typ, choice)
        return ops, typ

    def term(self) -> tuple[list[Op], str | None, Any]:
        k, t = self.peek()
        if k == "op" and t == "(":
            self.i += 1
            ops, typ = self.part()
            self.take("op", ")")
            return ops, typ, None
        if k == "id" and (t in COMMON_BASES or t == self.rt):
            self.i += 1
            return [], self.rt, None
        if k == "id" and t[:1].islower():  # ``name | alias``: relative to the resource
            return self.step([], self.rt, None)
        raise Unsupported(f"part does not start with {self.rt}: {t!r}")

    def type_name(self) -> str:
        name = self.take("id")
        while self.peek() == ("op", "."):  # FHIR.Quantity / System.String
            self.i += 1
            name = self.take("id")
        return _norm_type(name)

    def flush(
        self, ops: list[Op], typ: str | None, choice: list[tuple[str, str]] | None
    ) -> tuple[list[Op], str | None, None]:
        """Emit a pending choice step that no type filter narrowed down."""
        if choice is not None:
            ops = [*ops, _op_choice(choice)]
            typ = None
        return ops, typ, None

    def as_type(
        self, ops: list[Op], typ: str | None, choice: list[tuple[str, str]] | None, wanted: str
    ) -> tuple[list[Op], str | None]:
        if choice is not None:
            # peephole: value.as(Quantity) reads valueQuantity directly
            keep = [(k, t) for k, t in choice if _is_type(t, None, wanted)]
            if len(keep) == 1:
                return [*ops, _op_child(*keep[0])], keep[0][1]
            return [*ops, _op_choice(keep)], (wanted if keep else None)
        return [*ops, _op_as(wanted)], wanted

    def step(
        self, ops: list[Op], typ: str | None, choice: list[tuple[str, str]] | None
    ) -> tuple[list[Op], str | None, list[tuple[str, str]] | None]:
        name = self.take("id")
        if self.peek() != ("op", "("):
            ops, typ, _ = self.flush(ops, typ, choice)
            if typ is None:
                raise Unsupported("element access on an untyped collection")
            child_type, keys = _lookup(typ, name)
            if keys is not None:
                return ops, None, keys
            return [*ops, _op_child(name, child_type)], child_type, None
        self.i += 1  # '('
        if name in ("as", "ofType"):
            wanted = self.type_name()
            self.take("op", ")")
            ops, typ = self.as_type(ops, typ, choice, wanted)
            return ops, typ, None
        ops, typ, _ = self.flush(ops, typ, choice)
        if name == "exists":
            self.take("op", ")")
            return [*ops, _op_exists], "boolean", None
        if name == "first":
            self.take("op", ")")
            return [*ops, _op_index(0)], typ, None
        if name == "extension":
            url = _unquote(self.take("str"))
            self.take("op", ")")
            return [*ops, _op_extension(url)], "Extension", None
        if name == "where":
            op = self.where_cond(typ)
            self.take("op", ")")
            return [*ops, op], typ, None
        raise Unsupported(f"function {name}()")

    def where_cond(self, typ: str | None) -> Op:
        if self.peek() == ("id", "resolve"):
            self.i += 1
            self.take("op", "(")
            self.take("op", ")")
            self.take("id", "is")
            return _op_resolve_is(self.type_name())
        field = self.take("id")
        if typ is None:
            raise Unsupported("where() on an untyped collection")
        ftype, keys = _lookup(typ, field)
        if keys is not None or ftype not in ("code", "string", "uri", "id"):
            raise Unsupported(f"where({field}=...) on {ftype}")
        self.take("op", "=")
        return _op_where_eq(field, _unquote(self.take("str")))


# --------------------------------------------------------------------------------------------
# Extractors


def _fp_resolve(refs: list[Any]) -> list[Any]:
    """fhirpathpy has no resolve(); give it the same type-only answer the native side uses."""
    out = []
    for r in refs:
        t = _reference_type(r)
        if t is not None:
            out.append(ResourceNode({"resourceType": t}, t))
    return out


_FP_OPTIONS = {"userInvocationTable": {"resolve": {"fn": _fp_resolve}}}


def compile_fhirpath(part: str, resource_type: str) -> Callable[[dict[str, Any]], list[Any]]:
    """Compile one union part with fhirpathpy for a concrete type (values only, no types).

    ``Resource.meta.tag`` is rewritten to ``Patient.meta.tag``: fhirpathpy only matches the
    leading name against the actual resourceType.
    """
    toks = _tokenize(part)
    first = next((t for t in toks if t[0] == "id"), None)
    if first is not None and first[1] in COMMON_BASES:
        part = part[: first[2]] + resource_type + part[first[3] :]
    fn = fp_compile(part, _MODEL, _FP_OPTIONS)

    def run(resource: dict[str, Any]) -> list[Any]:
        return list(fn(resource, {}))

    return run


class Extractor:
    """A compiled expression for one resource type: call it to get [(value, type), ...].

    Nearly every R4 expression is a plain path, a ``|`` union of paths, a type filter (``as``,
    ``.as()``, ``.ofType()``) or a simple ``.where()``. Those are compiled into a short list of
    dictionary look-ups, with element types resolved statically from the FHIRPath R4 model that
    ships with ``fhirpathpy`` (so ``Observation.value`` knows to read ``valueQuantity``,
    ``valueString``...). Anything else is handed to ``fhirpathpy``, compiled once per
    (expression part, resource type).

    Unions are split on their resource-type prefix (``AllergyIntolerance.patient |
    CarePlan.subject``) so each type evaluates only its own part; ``Resource.``/
    ``DomainResource.`` parts go to every type.

    ``resolve()`` is not evaluated against the database: ``.where(resolve() is Patient)`` keeps
    the references whose literal ``reference`` names a Patient (relative or absolute URL), which
    is what every FHIR server does at index time.

    ``native_parts`` and ``fallback_parts`` list the union parts each side handles (tests and
    the report use them); ``type`` is None for values fhirpathpy produced.
    """

    __slots__ = ("_native", "_fallback", "native_parts", "fallback_parts", "needs")

    def __init__(self, expression: str, resource_type: str) -> None:
        # (ops, top-level keys of which at least one must be present, or None: always run)
        self._native: list[tuple[list[Op], tuple[str, ...] | None]] = []
        self._fallback: list[Callable[[dict[str, Any]], list[Any]]] = []
        self.native_parts: list[str] = []
        self.fallback_parts: list[str] = []
        try:
            parts = split_union(expression)
        except Unsupported:
            parts = [(resource_type, expression)]
        for prefix, text in parts:
            if prefix is not None and prefix != resource_type and prefix not in COMMON_BASES:
                continue
            try:
                ops = _Parser(text, resource_type).compile()
            except Unsupported:
                self._fallback.append(compile_fhirpath(text, resource_type))
                self.fallback_parts.append(text)
                continue
            first = ops[0] if ops else None
            needs = first.names if isinstance(first, _Step) and _op_exists not in ops else None
            self._native.append((ops, needs))
            self.native_parts.append(text)
        #: top-level keys of which one must be present for any value (None: unknown)
        self.needs: frozenset[str] | None = None
        if not self._fallback and all(n is not None for _, n in self._native):
            self.needs = frozenset(k for _, n in self._native for k in n or ())

    def __bool__(self) -> bool:
        return bool(self._native or self._fallback)

    def __call__(self, resource: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for ops, needs in self._native:
            if needs is not None and resource.keys().isdisjoint(needs):
                continue
            out.extend(_run(ops, [(resource, None)]))
        for fn in self._fallback:
            try:
                out.extend((v, None) for v in fn(resource))
            except Exception:  # noqa: BLE001 - a bad value must not block the write
                continue
        return out


def compile_expression(expression: str, resource_type: str) -> Extractor:
    """Compile ``expression`` for ``resource_type`` (only that type's union parts)."""
    return Extractor(expression, resource_type)
