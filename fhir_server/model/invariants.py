"""The invariants of the R4 definitions (ElementDefinition.constraint.expression, FHIRPath:
http://hl7.org/fhirpath/N1/) compiled once into Python closures, like the search extractors.

The compiler covers the FHIRPath that R4's invariants use (paths, choice elements, the
boolean and comparison operators with FHIRPath's empty-propagation, where/all/select/exists,
count/first/tail, isDistinct, type tests, string functions, children()/descendants(),
htmlChecks()); an expression it does not cover is evaluated by fhirpathpy, compiled once. A
differential test runs both over the R4 examples.

An invariant fails when its expression evaluates to `false`; an empty result (say, a comparison
of dates of different precision) does not fail it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
from fhirpathpy import compile as fp_compile
from fhirpathpy.models import models as fp_models

from .primitives import check_narrative

__all__ = ["Env", "Invariant", "Unsupported", "compile_invariant", "evaluate"]

log = logging.getLogger(__name__)

Node = tuple[Any, str | None]  # (JSON value, FHIR type when known)
Nodes = list[Node]


class Env:
    """The environment variables of one evaluation (fhirpath.html#vars, FHIR's %resource)."""

    __slots__ = ("resource", "root", "context")

    def __init__(self, resource: Any, root: Any, context: Any = None) -> None:
        self.resource = resource
        self.root = root
        self.context = context


Fn = Callable[[Nodes, Env], Nodes]
UCUM = "http://unitsofmeasure.org"
_MODEL = fp_models["r4"]
_PARENT: dict[str, str] = _MODEL["type2Parent"]
#: element names that are choices somewhere in R4 (`value` finds `valueQuantity`)
_CHOICE_NAMES = frozenset(p.rsplit(".", 1)[-1] for p in _MODEL["choiceTypePaths"])
_STRINGISH = frozenset({"string", "code", "id", "uri", "url", "canonical", "oid", "uuid",
                        "markdown", "base64Binary", "xhtml"})  # fmt: skip


_ENV_USE = re.compile(r"%(resource|rootResource|context)\b|resolve\(\)")


class Unsupported(Exception):
    """The compiler does not cover this expression: fhirpathpy evaluates it."""


class Prim:
    """A primitive with its `_name` sibling (id, extensions): `value` may be None."""

    __slots__ = ("value", "ext")

    def __init__(self, value: Any, ext: Any) -> None:
        self.value = value
        self.ext = ext

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prim) and (self.value, self.ext) == (other.value, other.ext)

    def __hash__(self) -> int:
        return hash(repr(self.value))


def _val(v: Any) -> Any:
    return v.value if type(v) is Prim else v


# -- tokens and syntax ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<date>@[0-9T:\-.+Z]+)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<bq>`[^`]*`)|(?P<var>%[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<dollar>\$[a-z]+)|(?P<op><=|>=|!=|!~|[().\[\]|=,<>+\-*/&~{}]))"
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}  # fmt: skip


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", lambda m: _ESCAPES.get(m.group(1))
                  or chr(int(m.group(1)[1:], 16)), s[1:-1])  # fmt: skip


#: binary operators by precedence, loosest first (fhirpath.html#operator-precedence)
_LEVELS: list[tuple[str, ...]] = [
    ("implies",), ("or", "xor"), ("and",), ("in", "contains"), ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="), ("|",), ("is", "as"), ("+", "-", "&"), ("*", "/", "div", "mod"),
]  # fmt: skip

Ast = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "")

    def take(self, text: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "eof" or (text is not None and tok[1] != text):
            raise Unsupported(f"expected {text!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Ast:
        ast = self.binary(0)
        if self.peek()[0] != "eof":
            raise Unsupported(f"trailing {self.peek()[1]!r}")
        return ast

    def binary(self, level: int) -> Ast:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[1] in _LEVELS[level] and self.peek()[0] in ("op", "id"):
            op = self.take()[1]
            if op in ("is", "as"):
                left = ("type", op, left, self.type_name())
            else:
                left = ("op", op, left, self.binary(level + 1))
        return left

    def unary(self) -> Ast:
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = self.take()[1]
            inner = self.unary()
            return ("op", "-", ("lit", 0), inner) if sign == "-" else inner
        return self.postfix()

    def postfix(self) -> Ast:
        ast = self.term()
        while True:
            if self.peek() == ("op", "."):
                self.take()
                ast = self.invocation(ast)
            elif self.peek() == ("op", "["):
                self.take()
                index = self.binary(0)
                self.take("]")
                ast = ("index", ast, index)
            else:
                return ast

    def term(self) -> Ast:
        kind, text = self.peek()
        if kind == "op" and text == "(":
            self.take()
            ast = self.binary(0)
            self.take(")")
            return ast
        if kind == "op" and text == "{":
            self.take()
            self.take("}")
            return ("empty",)
        if kind == "str":
            self.take()
            return ("lit", _unquote(text))
        if kind == "num":
            self.take()
            return ("lit", float(text) if "." in text else int(text))
        if kind == "id" and text in ("true", "false"):
            self.take()
            return ("lit", text == "true")
        if kind == "var":
            self.take()
            return ("var", text[1:])
        if kind == "dollar":
            self.take()
            if text != "$this":
                raise Unsupported(text)
            return ("this",)
        if kind in ("id", "bq"):
            return self.invocation(None)
        raise Unsupported(f"unexpected {text!r}")

    def invocation(self, base: Ast | None) -> Ast:
        kind, text = self.take()
        if kind not in ("id", "bq"):
            raise Unsupported(f"expected a name, got {text!r}")
        name = text.strip("`")
        if self.peek() != ("op", "("):
            return ("member", base, name)
        self.take()
        args: list[Ast] = []
        if name in ("is", "as", "ofType"):
            args.append(("lit", self.type_name()))
        elif self.peek() != ("op", ")"):
            args.append(self.binary(0))
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.binary(0))
        self.take(")")
        return ("call", base, name, args)

    def type_name(self) -> str:
        name = self.take()[1].strip("`")
        while self.peek() == ("op", "."):
            self.take()
            name = self.take()[1]
        return name


# -- values -----------------------------------------------------------------------------------

_DATE = re.compile(
    r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?"
    r"(Z|[+-]\d\d:\d\d)?)?)?)?"
)
_TIME = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?")


def _date_key(text: str) -> tuple[int, datetime | tuple[int, ...]] | None:
    """(precision, comparable) of a date/dateTime/instant string, or None: times with a zone
    as UTC instants, the rest as tuples of their parts."""
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    parts = [int(g) for g in m.groups()[:6] if g is not None]
    zone = m.group(8)
    if len(parts) < 5 or zone is None:
        return len(parts), tuple(parts)
    micro = int(float("0." + m.group(7)) * 1e6) if m.group(7) else 0
    offset = 0 if zone == "Z" else int(zone[1:3]) * 60 + int(zone[4:6])
    if zone[0] == "-":
        offset = -offset
    year, month, day, hour, minute = parts[:5]
    second = parts[5] if len(parts) == 6 else 0
    try:
        when = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        return None
    return len(parts), when - timedelta(minutes=offset)


def _compare(a: Any, b: Any) -> int | None:
    """-1/0/1, or None when FHIRPath answers empty (different precision, other units)."""
    a, b = _val(a), _val(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        ka, kb = _date_key(a), _date_key(b)
        if ka is not None and kb is not None:
            if ka[0] != kb[0] or type(ka[1]) is not type(kb[1]):
                ta, tb = ka[1], kb[1]
                if isinstance(ta, tuple) and isinstance(tb, tuple):
                    common = min(len(ta), len(tb))
                    if ta[:common] != tb[:common]:
                        return (ta[:common] > tb[:common]) - (ta[:common] < tb[:common])
                return None
            x: Any = ka[1]
            y: Any = kb[1]
            return (x > y) - (x < y)
        return (a > b) - (a < b)
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        unit_a = a.get("code", a.get("unit"))
        unit_b = b.get("code", b.get("unit"))
        if unit_a != unit_b:
            return None
        return _compare(a["value"], b["value"])
    return None


def _equal(a: Any, b: Any) -> bool | None:
    a, b = _val(a), _val(b)
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        if not (a[:4].isdigit() and b[:4].isdigit()):
            return False
        ka, kb = _date_key(a), _date_key(b)
        if ka is not None and kb is not None and ka[0] != kb[0]:
            return None
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    return bool(a == b)


def _truth(nodes: Nodes) -> bool | None:
    """Singleton evaluation of collections to a boolean (fhirpath.html#singleton-evaluation)."""
    if not nodes:
        return None
    if len(nodes) == 1:
        v = _val(nodes[0][0])
        return v if type(v) is bool else True
    raise Unsupported("a collection of several items where a boolean is needed")


def _bool(value: bool | None) -> Nodes:
    return [] if value is None else [(value, "boolean")]


def _children(v: Any) -> Nodes:
    out: Nodes = []
    if type(v) is dict:
        for key, x in v.items():
            if key == "resourceType" or key.startswith("_"):
                continue
            ext = v.get("_" + key)
            if type(x) is list:
                exts = ext if type(ext) is list else [None] * len(x)
                out += [(Prim(i, e) if e is not None else i, None)
                        for i, e in zip(x, exts, strict=False) if i is not None]  # fmt: skip
            else:
                out.append((Prim(x, ext) if ext is not None else x, None))
        for key, ext in v.items():
            if key.startswith("_") and key[1:] not in v:
                items = ext if type(ext) is list else [ext]
                out += [(Prim(None, e), None) for e in items if e is not None]
    elif type(v) is Prim and type(v.ext) is dict:
        out += _children(v.ext)
    return out


def _descendants(nodes: Nodes) -> Nodes:
    out: Nodes = []
    stack = [n for n in reversed(nodes)]
    while stack:
        v, _t = stack.pop()
        kids = _children(v)
        out += kids
        stack += reversed(kids)
    return out


def _type_of(node: Node) -> str | None:
    v, t = node
    if t is not None:
        return t
    v = _val(v)
    if type(v) is dict and type(v.get("resourceType")) is str:
        return str(v["resourceType"])
    if type(v) is bool:
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):  # a float subclass keeps a decimal's written form
        return "decimal"
    if type(v) is str:
        return "string"
    return None


def _is(node: Node, wanted: str) -> bool:
    t = _type_of(node)
    if t is None:
        return False
    low = wanted[:1].lower() + wanted[1:]
    if node[1] is None and t == "string" and low in _STRINGISH:
        return True  # an untyped string may be any of the string types
    while t:
        if t in (wanted, low):
            return True
        t = _PARENT.get(t)
    return False


def _member(nodes: Nodes, name: str) -> Nodes:
    out: Nodes = []
    choice = name in _CHOICE_NAMES
    for v, _t in nodes:
        if type(v) is Prim:
            v = v.ext
        if type(v) is not dict:
            continue
        x = v.get(name)
        ext = v.get("_" + name)
        if x is None and ext is None:
            if choice:
                for key, x in v.items():
                    if key.startswith(name) and key[len(name):len(name) + 1].isupper():
                        suffix = key[len(name):]
                        typ = suffix if suffix in _PARENT else suffix[0].lower() + suffix[1:]
                        out += [(i, typ) for i in x] if type(x) is list else [(x, typ)]
            continue
        if ext is not None:
            xs = x if type(x) is list else ([] if x is None else [x])
            es = ext if type(ext) is list else [ext]
            for i in range(max(len(xs), len(es))):
                xi = xs[i] if i < len(xs) else None
                ei = es[i] if i < len(es) else None
                out.append((Prim(xi, ei) if ei is not None else xi, None))
        elif type(x) is list:
            out += [(i, None) for i in x if i is not None]
        else:
            out.append((x, None))
    return out


# -- the compiler ---------------------------------------------------------------------------


def _compile(ast: Ast, types: frozenset[str]) -> Fn:
    kind = ast[0]
    if kind == "lit":
        lit: Nodes = [(ast[1], None)]
        return lambda nodes, env: lit
    if kind == "empty":
        return lambda nodes, env: []
    if kind == "this":
        return lambda nodes, env: nodes
    if kind == "var":
        return _variable(ast[1])
    if kind == "member":
        return _compile_member(ast[1], ast[2], types)
    if kind == "index":
        base, index = _compile(ast[1], types), _compile(ast[2], types)

        def at(nodes: Nodes, env: Env) -> Nodes:
            i = index(nodes, env)
            items = base(nodes, env)
            return items[i[0][0] : i[0][0] + 1] if i and type(i[0][0]) is int else []

        return at
    if kind == "type":
        base = _compile(ast[2], types)
        wanted = ast[3]
        if ast[1] == "is":
            return lambda nodes, env: _single_is(base(nodes, env), wanted)
        return lambda nodes, env: [n for n in base(nodes, env) if _is(n, wanted)]
    if kind == "call":
        return _compile_call(ast, types)
    if kind == "op":
        return _compile_op(ast[1], _compile(ast[2], types), _compile(ast[3], types))
    raise Unsupported(str(kind))


def _single_is(items: Nodes, wanted: str) -> Nodes:
    if len(items) != 1:
        return []
    return [(_is(items[0], wanted), "boolean")]


def _variable(name: str) -> Fn:
    if name == "ucum":
        return lambda nodes, env: [(UCUM, "uri")]
    if name == "resource":
        return lambda nodes, env: [(env.resource, None)]
    if name == "rootResource":
        return lambda nodes, env: [(env.root, None)]
    if name == "context":
        return lambda nodes, env: [(env.context, None)]
    raise Unsupported(f"%{name}")


def _compile_member(base_ast: Ast | None, name: str, types: frozenset[str]) -> Fn:
    if base_ast is None and name[:1].isupper() and name in types:
        # `Appointment.status` on an Appointment: the leading type name selects the input
        return lambda nodes, env: [n for n in nodes if _type_of(n) in (None, name) or _is(n, name)]
    base = _compile(base_ast, types) if base_ast is not None else None
    if base is None:
        return lambda nodes, env: _member(nodes, name)
    return lambda nodes, env: _member(base(nodes, env), name)


def _compile_op(op: str, left: Fn, right: Fn) -> Fn:  # noqa: C901 - one table of operators
    if op in ("and", "or", "xor", "implies"):
        return _logic(op, left, right)
    if op in ("=", "!="):
        negate = op == "!="

        def eq(nodes: Nodes, env: Env) -> Nodes:
            a, b = left(nodes, env), right(nodes, env)
            if not a or not b:
                return []
            if len(a) != len(b):
                return [(negate, "boolean")]
            result: bool | None = True
            for x, y in zip(a, b, strict=True):
                same = _equal(x[0], y[0])
                if same is None:
                    return []
                result = result and same
            return [(bool(result) != negate, "boolean")]

        return eq
    if op in ("<", ">", "<=", ">="):

        def cmp(nodes: Nodes, env: Env) -> Nodes:
            a, b = left(nodes, env), right(nodes, env)
            if len(a) != 1 or len(b) != 1:
                return []
            c = _compare(a[0][0], b[0][0])
            if c is None:
                return []
            ok = {"<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[op]
            return [(ok, "boolean")]

        return cmp
    if op in ("in", "contains"):
        item, coll = (left, right) if op == "in" else (right, left)

        def member(nodes: Nodes, env: Env) -> Nodes:
            a = item(nodes, env)
            if not a:
                return []
            if len(a) > 1:
                raise Unsupported("in/contains with several items")
            wanted = _key(a[0][0])
            return [(any(_key(b[0]) == wanted for b in coll(nodes, env)), "boolean")]

        return member
    if op == "|":
        return lambda nodes, env: _distinct(left(nodes, env) + right(nodes, env))
    if op == "&":

        def concat(nodes: Nodes, env: Env) -> Nodes:
            a, b = left(nodes, env), right(nodes, env)
            return [(str(_val(a[0][0]) if a else "") + str(_val(b[0][0]) if b else ""),
                     "string")]  # fmt: skip

        return concat
    if op in ("+", "-", "*", "/"):

        def arithmetic(nodes: Nodes, env: Env) -> Nodes:
            a, b = left(nodes, env), right(nodes, env)
            if len(a) != 1 or len(b) != 1:
                return []
            x, y = _val(a[0][0]), _val(b[0][0])
            if op == "+" and isinstance(x, str) and isinstance(y, str):
                return [(x + y, "string")]
            if not (isinstance(x, int | float) and isinstance(y, int | float)):
                raise Unsupported(f"{op} on {type(x).__name__}")
            if op == "/":
                return [] if y == 0 else [(x / y, "decimal")]
            return [({"+": x + y, "-": x - y, "*": x * y}[op], None)]

        return arithmetic
    raise Unsupported(f"operator {op}")


def _logic(op: str, left: Fn, right: Fn) -> Fn:
    """Three-valued logic (fhirpath.html#boolean-logic); the right side is evaluated only when
    the left does not decide."""
    if op == "and":

        def conj(nodes: Nodes, env: Env) -> Nodes:
            a = _truth(left(nodes, env))
            if a is False:
                return [(False, "boolean")]
            b = _truth(right(nodes, env))
            if b is False:
                return [(False, "boolean")]
            return _bool(None if a is None or b is None else True)

        return conj
    if op == "or":

        def disj(nodes: Nodes, env: Env) -> Nodes:
            a = _truth(left(nodes, env))
            if a is True:
                return [(True, "boolean")]
            b = _truth(right(nodes, env))
            if b is True:
                return [(True, "boolean")]
            return _bool(None if a is None or b is None else False)

        return disj
    if op == "implies":

        def implies(nodes: Nodes, env: Env) -> Nodes:
            a = _truth(left(nodes, env))
            if a is False:
                return [(True, "boolean")]
            b = _truth(right(nodes, env))
            if a is True:
                return _bool(b)
            return [(True, "boolean")] if b is True else []

        return implies

    def xor(nodes: Nodes, env: Env) -> Nodes:
        a, b = _truth(left(nodes, env)), _truth(right(nodes, env))
        return _bool(None if a is None or b is None else a != b)

    return xor


def _key(value: Any) -> Any:
    """A hashable stand-in for a value under FHIRPath equality (dates aside)."""
    value = _val(value)
    if isinstance(value, dict | list):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # numbers orjson does not write (beyond 64 bits, kept as written)
            return repr(value)
    return (type(value) is bool, value)


def _distinct(nodes: Nodes) -> Nodes:
    seen: set[Any] = set()
    out: Nodes = []
    for n in nodes:
        k = _key(n[0])
        if k not in seen:
            seen.add(k)
            out.append(n)
    return out


Call = Callable[[Nodes, Nodes, Env], Nodes]  # (the function's input, $this, env)


def _compile_call(ast: Ast, types: frozenset[str]) -> Fn:
    """A function: its input is its base (or $this), plain arguments are evaluated against
    $this, criteria (where, all, select, exists, iif) against each item."""
    _, base_ast, name, arg_asts = ast
    base = _compile(base_ast, types) if base_ast is not None else None
    fn = _function(name, [_compile(a, types) for a in arg_asts], arg_asts)
    if base is None:
        return lambda nodes, env: fn(nodes, nodes, env)
    return lambda nodes, env: fn(base(nodes, env), nodes, env)


def _function(name: str, args: list[Fn], arg_asts: list[Ast]) -> Call:  # noqa: C901, PLR0911, PLR0912
    n = len(args)
    if name == "exists" and n == 0:
        return lambda items, this, env: [(bool(items), "boolean")]
    if name == "exists" and n == 1:
        crit = args[0]
        return lambda items, this, env: [
            (any(_truth(crit([i], env)) is True for i in items), "boolean")
        ]
    if name == "empty" and n == 0:
        return lambda items, this, env: [(not items, "boolean")]
    if name == "not" and n == 0:

        def negate(items: Nodes, this: Nodes, env: Env) -> Nodes:
            t = _truth(items)
            return [] if t is None else [(not t, "boolean")]

        return negate
    if name == "count" and n == 0:
        return lambda items, this, env: [(len(items), "integer")]
    if name == "first" and n == 0:
        return lambda items, this, env: items[:1]
    if name == "last" and n == 0:
        return lambda items, this, env: items[-1:]
    if name == "tail" and n == 0:
        return lambda items, this, env: items[1:]
    if name == "where" and n == 1:
        crit = args[0]
        return lambda items, this, env: [i for i in items if _truth(crit([i], env)) is True]
    if name == "all" and n == 1:
        crit = args[0]
        return lambda items, this, env: [
            (all(_truth(crit([i], env)) is True for i in items), "boolean")
        ]
    if name == "select" and n == 1:
        proj = args[0]
        return lambda items, this, env: [x for i in items for x in proj([i], env)]
    if name == "trace" and n >= 1:
        return lambda items, this, env: items
    if name == "hasValue" and n == 0:
        return lambda items, this, env: [
            (len(items) == 1 and _val(items[0][0]) is not None
             and type(_val(items[0][0])) not in (dict, list), "boolean")
        ]  # fmt: skip
    if name == "children" and n == 0:
        return lambda items, this, env: [c for v, _ in items for c in _children(v)]
    if name == "descendants" and n == 0:
        return lambda items, this, env: _descendants(items)
    if name in ("is", "as", "ofType") and n == 1:
        wanted = arg_asts[0][1]
        if name == "is":
            return lambda items, this, env: _single_is(items, wanted)
        return lambda items, this, env: [i for i in items if _is(i, wanted)]
    if name == "isDistinct" and n == 0:
        return lambda items, this, env: [(len(_distinct(items)) == len(items), "boolean")]
    if name == "distinct" and n == 0:
        return lambda items, this, env: _distinct(items)
    if name in ("combine", "union", "intersect", "exclude") and n == 1:
        other = args[0]
        return lambda items, this, env: _set_op(name, items, other(this, env))
    if name == "iif" and n in (2, 3):
        cond, yes = args[0], args[1]
        no = args[2] if n == 3 else None

        def iif(items: Nodes, this: Nodes, env: Env) -> Nodes:
            if _truth(cond(items, env)) is True:
                return yes(items, env)
            return no(items, env) if no is not None else []

        return iif
    if name == "extension" and n == 1:
        url = args[0]

        def extension(items: Nodes, this: Nodes, env: Env) -> Nodes:
            wanted = url(this, env)
            if len(wanted) != 1:
                return []
            return [e for e in _member(items, "extension")
                    if type(e[0]) is dict and e[0].get("url") == wanted[0][0]]  # fmt: skip

        return extension
    if name == "htmlChecks" and n == 0:
        return lambda items, this, env: [
            (all(check_narrative(_val(v)) is None for v, _ in items), "boolean")
        ]
    if name == "resolve" and n == 0:
        return lambda items, this, env: [r for v, _ in items for r in _resolve(_val(v))]
    if name in _STRING_FUNCTIONS:
        return _string_function(name, args)
    raise Unsupported(f"{name}() with {n} arguments")


def _set_op(name: str, a: Nodes, b: Nodes) -> Nodes:
    if name == "combine":
        return a + b
    if name == "union":
        return _distinct(a + b)
    keys = {_key(y[0]) for y in b}
    if name == "intersect":
        return _distinct([x for x in a if _key(x[0]) in keys])
    return [x for x in a if _key(x[0]) not in keys]


def _resolve(value: Any) -> Nodes:
    """Only the type that a literal reference names: validation does not read the database."""
    if type(value) is not dict or type(value.get("reference")) is not str:
        return []
    m = re.search(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/.*)?$",
                  value["reference"])  # fmt: skip
    return [({"resourceType": m.group(1)}, m.group(1))] if m else []


_STRING_FUNCTIONS = frozenset({"matches", "replaceMatches", "startsWith", "endsWith", "contains",
                               "substring", "toString", "toInteger", "length", "lower",
                               "upper", "replace", "indexOf"})  # fmt: skip


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _string_function(name: str, args: list[Fn]) -> Call:  # noqa: C901 - one table
    def run(items: Nodes, this: Nodes, env: Env) -> Nodes:
        if not items:
            return []
        if len(items) > 1:
            raise Unsupported(f"{name}() on several items")
        v = _val(items[0][0])
        if name == "toString":
            if isinstance(v, bool):
                return [("true" if v else "false", "string")]
            return [(str(v), "string")] if isinstance(v, str | int | float) else []
        if name == "toInteger":
            if isinstance(v, bool):
                return [(int(v), "integer")]
            if isinstance(v, int):
                return [(v, "integer")]
            if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
                return [(int(v), "integer")]
            return []
        if not isinstance(v, str):
            return []
        values = []
        for arg in args:
            got = arg(this, env)
            if not got:
                return []
            values.append(_val(got[0][0]))
        if name == "matches":
            return [(_regex(values[0]).search(v) is not None, "boolean")]
        if name == "replaceMatches":
            return [(_regex(values[0]).sub(values[1].replace("$", "\\"), v), "string")]
        if name == "startsWith":
            return [(v.startswith(values[0]), "boolean")]
        if name == "endsWith":
            return [(v.endswith(values[0]), "boolean")]
        if name == "contains":
            return [(values[0] in v, "boolean")]
        if name == "substring":
            start = values[0]
            if not 0 <= start < len(v):
                return []
            end = start + values[1] if len(values) > 1 else None
            return [(v[start:end], "string")]
        if name == "length":
            return [(len(v), "integer")]
        if name == "lower":
            return [(v.lower(), "string")]
        if name == "upper":
            return [(v.upper(), "string")]
        if name == "replace":
            return [(v.replace(values[0], values[1]), "string")]
        return [(v.find(values[0]), "integer")]  # indexOf

    return run


# -- guards: elements whose absence alone lets an invariant hold ---------------------------------
# Most invariants read like `dataAbsentReason.empty() or value.empty()` or
# `contained.contained.empty()`: with `dataAbsentReason` (or `contained`) absent they hold
# whatever else the element has. Those names are found from the syntax tree once, and the walk
# does not evaluate the invariant on an element that lacks one of them.

#: functions whose result is empty when their input is
_EMPTY_IN_EMPTY_OUT = frozenset({
    "where", "select", "first", "last", "tail", "ofType", "as", "trace", "distinct",
    "substring", "startsWith", "endsWith", "matches", "replaceMatches", "contains", "toString",
    "toInteger", "length", "lower", "upper", "replace", "indexOf", "extension", "children",
    "descendants", "resolve",
})  # fmt: skip


def _root(ast: Ast) -> str | None:
    """The element of the context a path starts from (`contained` in contained.meta...)."""
    kind = ast[0]
    if kind == "member":
        base = ast[1]
        if base is None:
            return None if ast[2][:1].isupper() else str(ast[2])
        if base[0] == "member" and base[1] is None and str(base[2])[:1].isupper():
            return str(ast[2])  # Appointment.status on an Appointment
        return _root(base)
    if kind == "call" and ast[1] is not None and ast[2] in _EMPTY_IN_EMPTY_OUT:
        return _root(ast[1])
    if kind == "index":
        return _root(ast[1])
    return None


def _empty_when(ast: Ast) -> set[str]:
    """Names whose absence makes the expression empty."""
    kind = ast[0]
    if kind in ("member", "index") or (kind == "call" and ast[2] in _EMPTY_IN_EMPTY_OUT):
        root = _root(ast)
        return {root} if root else set()
    if kind == "call" and ast[2] == "not" and ast[1] is not None:
        return _empty_when(ast[1])
    if kind == "op" and ast[1] in ("=", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/"):
        return _empty_when(ast[2]) | _empty_when(ast[3])
    if kind == "op" and ast[1] == "in":
        return _empty_when(ast[2])
    return set()


def _passes_when(ast: Ast) -> set[str]:
    """Names whose absence makes the expression true or empty: the invariant holds."""
    kind = ast[0]
    if kind == "call" and ast[1] is not None and ast[2] in ("empty", "all"):
        return _empty_when(ast[1])
    if kind == "call" and ast[1] is not None and ast[2] == "not":
        return _false_when(ast[1])
    if kind == "op" and ast[1] == "or":
        return _passes_when(ast[2]) | _passes_when(ast[3])
    if kind == "op" and ast[1] == "and":
        return _passes_when(ast[2]) & _passes_when(ast[3])
    if kind == "op" and ast[1] == "implies":
        return _false_when(ast[2]) | _passes_when(ast[3])
    return _empty_when(ast)


def _false_when(ast: Ast) -> set[str]:
    """Names whose absence makes the expression false or empty."""
    kind = ast[0]
    if kind == "call" and ast[1] is not None and ast[2] in ("exists", "hasValue"):
        return _empty_when(ast[1])
    if kind == "call" and ast[1] is not None and ast[2] == "not":
        return _passes_when(ast[1])
    if kind == "op" and ast[1] == "and":
        return _false_when(ast[2]) | _false_when(ast[3])
    if kind == "op" and ast[1] == "or":
        return _false_when(ast[2]) & _false_when(ast[3])
    return _empty_when(ast)


def guard(expression: str) -> frozenset[str]:
    """JSON names such that an element lacking any one of them meets the invariant (choice
    elements left out: their JSON names vary)."""
    try:
        names = _passes_when(_Parser(expression).parse())
    except Unsupported:
        return frozenset()
    return frozenset(n for n in names if n not in _CHOICE_NAMES)


# -- the invariants --------------------------------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    """One constraint of a definition, ready to run on an element (its context)."""

    key: str
    severity: str
    human: str
    expression: str
    #: (the element's JSON value, env) -> False when violated, else True or None
    run: Callable[[Any, Env], bool | None]
    compiled: bool  # False: fhirpathpy evaluates it
    #: an element (object) lacking any of these meets the invariant (see guard())
    guard: frozenset[str] = frozenset()

    @property
    def uses_env(self) -> bool:
        """Whether the verdict may depend on more than the element itself (the resource, the
        container, resolve()). ref-1 reads the container only for a local reference (`#id`),
        which the caller tells by the value."""
        return self.key != "ref-1" and _ENV_USE.search(self.expression) is not None

    def holds(self, value: Any, env: Env) -> bool:
        """Whether the invariant holds for the element; one that cannot be evaluated holds
        (and is logged): an engine failure must not refuse good data."""
        try:
            return self.run(value, env) is not False
        except Exception:  # noqa: BLE001 - fail open, logged
            log.warning("invariant %s could not be evaluated: %s", self.key, self.expression)
            return True


def compile_native(expression: str, types: Iterable[str] = ()) -> Callable[[Any, Env], Nodes]:
    """The compiled expression (raises Unsupported when the compiler does not cover it)."""
    fn = _compile(_Parser(expression).parse(), frozenset(types))

    def run(value: Any, env: Env) -> Nodes:
        return fn([(value, None)], env)

    return run


_FP_MODEL = _MODEL


def compile_fallback(expression: str) -> Callable[[Any, Env], list[Any]]:
    """fhirpathpy's evaluation of the expression, compiled once."""
    fn = fp_compile(expression, _FP_MODEL)

    def run(value: Any, env: Env) -> list[Any]:
        variables = {"resource": env.resource, "rootResource": env.root, "ucum": UCUM,
                     "context": value}  # fmt: skip
        return list(fn(value, variables))

    return run


# -- hand-compiled: the invariants every resource or most elements meet ------------------------
# Each equals its R4 expression (the differential test runs them against fhirpathpy).


def _contained(v: Any) -> list[dict[str, Any]]:
    items = v.get("contained") if type(v) is dict else None
    return [c for c in items if type(c) is dict] if type(items) is list else []


def _dom_2(v: Any, env: Env) -> bool:  # contained.contained.empty()
    return not any(c.get("contained") for c in _contained(v))


def _dom_3(v: Any, env: Env) -> bool:
    """Every contained resource is referenced from elsewhere in the resource, or refers to its
    container (`#`)."""
    contained = _contained(v)
    if not contained:
        return True
    strings = {x for x in _strings(env.resource)}
    for c in contained:
        if type(c.get("id")) is str and "#" + c["id"] in strings:
            continue
        if "#" in _strings(c):
            continue
        return False
    return True


def _strings(value: Any) -> set[str]:
    """Every string below a value (the untyped `descendants().as(canonical)` and the
    `reference`s of dom-3)."""
    out: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            stack.extend(x for k, x in v.items() if k != "resourceType")
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is str:
            out.add(v)
    return out


def _dom_4(v: Any, env: Env) -> bool:
    # contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()
    for c in _contained(v):
        meta = c.get("meta")
        if type(meta) is dict and (meta.get("versionId") is not None
                                   or meta.get("lastUpdated") is not None):  # fmt: skip
            return False
    return True


def _dom_5(v: Any, env: Env) -> bool:  # contained.meta.security.empty()
    for c in _contained(v):
        meta = c.get("meta")
        if type(meta) is dict and meta.get("security"):
            return False
    return True


def _ext_1(v: Any, env: Env) -> bool:  # extension.exists() != value.exists()
    if type(v) is not dict:
        return True
    has_value = any(k.startswith(("value", "_value")) and k[5 + (k[0] == "_")].isupper()
                    for k in v if len(k) > 5 + (k[0] == "_"))  # fmt: skip
    return bool(v.get("extension")) != has_value


def _ref_1(v: Any, env: Env) -> bool | None:
    # reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)
    ref = v.get("reference") if type(v) is dict else None
    if type(ref) is not str or not ref.startswith("#"):
        return True
    if ref == "#":
        return None  # substring(1) of '#' is empty: the expression is empty
    return any(c.get("id") == ref[1:] for c in _contained(env.root))


def _per_1(v: Any, env: Env) -> bool | None:
    # start.hasValue().not() or end.hasValue().not() or (start <= end)
    start, end = (v.get("start"), v.get("end")) if type(v) is dict else (None, None)
    if type(start) is not str or type(end) is not str:
        return True
    c = _compare(start, end)
    return None if c is None else c <= 0


def _qty_3(v: Any, env: Env) -> bool:  # code.empty() or system.exists()
    return type(v) is not dict or v.get("code") is None or v.get("system") is not None


NATIVE: dict[tuple[str, str], Callable[[Any, Env], bool | None]] = {
    ("dom-2", "contained.contained.empty()"): _dom_2,
    ("dom-3", "contained.where((('#'+id in (%resource.descendants().reference | "
     "%resource.descendants().as(canonical) | %resource.descendants().as(uri) | "
     "%resource.descendants().as(url))) or descendants().where(reference = '#').exists() or "
     "descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = "
     "'#').exists()).not()).trace('unmatched', id).empty()"): _dom_3,
    ("dom-4", "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"): _dom_4,
    ("dom-5", "contained.meta.security.empty()"): _dom_5,
    ("ext-1", "extension.exists() != value.exists()"): _ext_1,
    ("ref-1", "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
     "%rootResource.contained.id.trace('ids'))"): _ref_1,
    ("per-1", "start.hasValue().not() or end.hasValue().not() or (start <= end)"): _per_1,
    ("qty-3", "code.empty() or system.exists()"): _qty_3,
}  # fmt: skip


@cache
def compile_invariant(
    key: str, severity: str, human: str, expression: str, types: frozenset[str]
) -> Invariant:
    """The invariant hand-compiled, or compiled natively when the compiler covers it, else by
    fhirpathpy."""
    hand = NATIVE.get((key, expression))
    if hand is not None:
        return Invariant(key, severity, human, expression, hand, True, guard(expression))
    try:
        native = compile_native(expression, types)
    except Unsupported:
        fallback = compile_fallback(expression)

        def run_fallback(value: Any, env: Env) -> bool | None:
            result = fallback(value, env)
            return None if not result else (result[0] if len(result) == 1 else True)

        return Invariant(key, severity, human, expression, run_fallback, False)

    def run(value: Any, env: Env) -> bool | None:
        local = Env(env.resource, env.root, value)
        try:
            return _truth(native(value, local))
        except Unsupported:
            return None

    return Invariant(key, severity, human, expression, run, True, guard(expression))


def evaluate(expression: str, value: Any, resource: Any, types: Iterable[str] = ()) -> Nodes:
    """Evaluate an expression natively on one element (for tests and the differential)."""
    return compile_native(expression, types)(value, Env(resource, resource, value))
