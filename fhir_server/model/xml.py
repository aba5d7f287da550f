"""FHIR XML to FHIR JSON and back (http://hl7.org/fhir/R4/xml.html, json.html#xml).

Driven by the R4 element definitions (spec/elements.json): the order XML requires, which
elements repeat, which are primitives (`value` attributes; `id` and extensions in JSON's `_name`)
and which are attributes (`Element.id`, `Extension.url`). Every R4 type converts, including the
ones fhir.resources' R4B models lack. Decimals keep their written form both ways (literal.py);
the narrative's XHTML is embedded as written in JSON, and read back as lxml serialises it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lxml import etree

from ..errors import FhirError, error
from ..spec import RESOURCE_TYPES, load
from .literal import Number, dumps, loads

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_FHIR = "{" + FHIR_NS + "}"
_XHTML_DIV = "{" + XHTML_NS + "}div"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
#: json.html: the primitive types JSON writes as numbers or booleans; all others are strings
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Element:
    """A child element as JSON and XML name it: `valueQuantity` for `value[x]` of Quantity."""

    name: str
    type: str  # a primitive, a complex type, "@Path" of a backbone element, "Resource"
    repeats: bool
    attribute: bool
    #: position in the definition, the order XML writes (reading takes any order, as HAPI
    #: does; the HL7 validator would warn)
    rank: int


def _definitions() -> tuple[frozenset[str], dict[str, dict[str, Element]]]:
    data: Any = load("elements.json")
    open_types = data["open"]
    out: dict[str, dict[str, Element]] = {}
    for path, records in data["types"].items():
        children: dict[str, Element] = {}
        for rank, (name, types, repeats, *attr) in enumerate(records):
            kinds = open_types if types == ["*"] else types
            for kind in kinds:
                json_name = name
                if name.endswith("[x]"):
                    json_name = name[:-3] + kind[0].upper() + kind[1:]
                element = Element(json_name, kind, bool(repeats), bool(attr and attr[0]), rank)
                children[json_name] = element
        out[path] = children
    return frozenset(data["primitives"]), out


PRIMITIVES, TYPES = _definitions()


# --- JSON -> XML --------------------------------------------------------------------------


def to_xml(resource: dict[str, Any], pretty: bool = False) -> bytes:
    """The XML form of a resource (406 when it has something XML cannot carry, e.g. a
    narrative that is not well-formed XHTML, or an element R4 does not define)."""
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
    _Writer(out, pretty).resource(resource, 0, ' xmlns="' + FHIR_NS + '"')
    if pretty:
        out.append("\n")
    return "".join(out).encode("utf-8")


class _Writer:
    def __init__(self, out: list[str], pretty: bool) -> None:
        self.out = out
        self.pretty = pretty

    def indent(self, depth: int) -> None:
        if self.pretty:
            self.out.append("\n" + "  " * depth)

    def resource(self, resource: Any, depth: int, xmlns: str = "") -> None:
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
            raise _not_xml(f"'{rtype}' is not a resource type")
        self.indent(depth)
        self.out.append(f"<{rtype}{xmlns}>")
        self.children(resource, rtype, depth + 1, rtype)
        self.indent(depth)
        self.out.append(f"</{rtype}>")

    def complex(self, name: str, value: Any, path: str, depth: int, where: str) -> None:
        if not isinstance(value, dict):
            raise _not_xml(f"{where} must be an object")
        definition = TYPES[path]
        attrs = "".join(
            f' {key}="{_attr(value[key])}"'
            for key, element in definition.items()
            if element.attribute and key in value
        )
        self.indent(depth)
        self.out.append(f"<{name}{attrs}>")
        self.children(value, path, depth + 1, where)
        self.indent(depth)
        self.out.append(f"</{name}>")

    def children(self, obj: dict[str, Any], path: str, depth: int, where: str) -> None:
        definition = TYPES[path]
        names = [k[1:] if k[:1] == "_" else k for k in obj]
        if path in RESOURCE_TYPES:
            names.remove("resourceType")
        unknown = [n for n in names if n not in definition]
        if unknown:
            raise _not_xml(f"{where}.{unknown[0]} is not an element of {path}")
        for name in sorted(set(names), key=lambda n: definition[n].rank):
            element = definition[name]
            if element.attribute:
                continue
            value, extra = obj.get(name), obj.get("_" + name)
            at = f"{where}.{name}"
            kind = element.type
            if kind in PRIMITIVES:
                if kind == "xhtml":
                    self.indent(depth)
                    self.out.append(_xhtml(value, at))
                    continue
                values = value if isinstance(value, list) else [value]
                extras = extra if isinstance(extra, list) else [extra]
                if len(extras) < len(values):
                    extras += [None] * (len(values) - len(extras))
                if len(values) < len(extras):
                    values += [None] * (len(extras) - len(values))
                for item, ext in zip(values, extras, strict=True):
                    self.primitive(name, item, ext, depth, at)
                continue
            for item in value if isinstance(value, list) else [value]:
                if kind == "Resource":
                    self.indent(depth)
                    self.out.append(f"<{name}>")
                    self.resource(item, depth + 1)
                    self.indent(depth)
                    self.out.append(f"</{name}>")
                else:
                    self.complex(name, item, kind.lstrip("@"), depth, at)

    def primitive(self, name: str, value: Any, ext: Any, depth: int, where: str) -> None:
        if value is None and ext is None:
            return
        self.indent(depth)
        head = f"<{name}"
        if isinstance(ext, dict) and ext.get("id") is not None:
            head += f' id="{_attr(ext["id"])}"'
        if value is not None:
            head += f' value="{_attr(_text(value, where))}"'
        extensions = ext.get("extension") if isinstance(ext, dict) else None
        if not extensions:
            self.out.append(head + "/>")
            return
        self.out.append(head + ">")
        for item in extensions:
            self.complex("extension", item, "Extension", depth + 1, f"{where}.extension")
        self.indent(depth)
        self.out.append(f"</{name}>")


def _text(value: Any, where: str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Number):
        return value.text
    if isinstance(value, int | float):
        return dumps(value).decode()
    raise _not_xml(f"{where} is not a primitive value")


_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;",
     "\t": "&#9;"}
)  # fmt: skip


#: XML 1.0 [2] Char: JSON strings may hold other code points, XML cannot
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _attr(value: Any) -> str:
    """An attribute value; line ends and tabs as references, which attribute-value
    normalisation would otherwise turn into spaces (XML 1.0 §3.3.3)."""
    text = str(value)
    bad = _NOT_XML_CHAR.search(text)
    if bad is not None:
        raise _not_xml(f"U+{ord(bad.group()):04X} is not an XML character")
    return text.translate(_ATTR_ESCAPES)


_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
    remove_comments=False, remove_pis=False,  # a narrative keeps its comments
)  # fmt: skip
_SKIPPED = (etree.Comment, etree.PI)


def _xhtml(div: Any, where: str) -> str:
    """The narrative as written, once it is known to be one well-formed XHTML div."""
    if isinstance(div, str) and div.startswith("<div"):
        try:
            root = etree.fromstring(div.encode("utf-8"), _PARSER)
        except etree.XMLSyntaxError:
            root = None
        if root is not None and root.tag == _XHTML_DIV:
            return div
    raise _not_xml(f"{where} is not a well-formed XHTML <div> in the XHTML namespace")


def _not_xml(message: str) -> FhirError:
    return error(
        406, "not-supported", f"Cannot write this resource as XML: {message}; ask for JSON"
    )


# --- XML -> JSON --------------------------------------------------------------------------


def from_xml(body: bytes) -> dict[str, Any]:
    """A FHIR XML document as the JSON resource it stands for (400 naming what is wrong)."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise error(400, "structure", f"Malformed XML: {exc}") from None
    doctype = root.getroottree().docinfo.doctype
    if doctype:  # entities and external subsets: nothing FHIR needs, everything an attack does
        raise error(400, "structure", "A FHIR XML document may not have a DOCTYPE")
    return _Reader().resource(root, "")


class _Reader:
    def resource(self, elem: Any, where: str) -> dict[str, Any]:
        rtype = _local(elem, where)
        if rtype not in RESOURCE_TYPES:
            raise _bad(f"<{rtype}> is not a FHIR resource", where or rtype)
        out: dict[str, Any] = {"resourceType": rtype}
        self.fill(out, elem, rtype, where or rtype)
        return out

    def fill(self, out: dict[str, Any], elem: Any, path: str, where: str) -> None:
        """The element's attributes and children into `out`, by the definition at `path`."""
        definition = TYPES[path]
        for name, value in elem.attrib.items():
            if name.startswith(_XSI):  # xsi:schemaLocation: for XML tools, not content
                continue
            element = definition.get(name)
            if element is None or not element.attribute:
                raise _bad(f"Unknown attribute '{name}'", where)
            out[name] = value
        once: set[int] = set()  # the elements (a choice counts as one) that may not repeat
        for child in elem:
            if child.tag in _SKIPPED:
                continue
            name = _local(child, where, xhtml=True)
            element = definition.get(name)
            at = f"{where}.{name}"
            if element is None or element.attribute:
                raise _bad(f"Unknown element '{name}' in {path}", at)
            if not element.repeats:
                if element.rank in once:
                    raise _bad(f"Element '{name}' (or another of its choice) occurs twice", at)
                once.add(element.rank)
            self.child(out, child, element, at)
        if _has_text(elem):
            raise _bad("Text is not allowed here: values go in value attributes", where)
        for key in [k for k in out if k[:1] == "_" and isinstance(out.get(k[1:]), list)]:
            if all(v is None for v in out[key[1:]]):
                del out[key[1:]]  # json.html: values all in extensions, only `_name` is written

    def child(self, out: dict[str, Any], elem: Any, element: Element, where: str) -> None:
        name, kind = element.name, element.type
        if kind == "xhtml":
            if elem.tag != _XHTML_DIV:
                raise _bad("The narrative must be an XHTML <div>", where)
            out[name] = etree.tostring(elem, encoding="unicode", with_tail=False)
            return
        if elem.tag != _FHIR + name:
            raise _bad(f"<{name}> must be in the FHIR namespace", where)
        if kind in PRIMITIVES:
            value, extra = self.primitive(elem, kind, where)
            _put(out, name, value, extra, element.repeats)
            return
        if kind == "Resource":
            inner = [c for c in elem if c.tag not in _SKIPPED]
            if len(inner) != 1 or _has_text(elem):
                raise _bad(f"<{name}> must hold exactly one resource", where)
            value = self.resource(inner[0], where)
        else:
            value = {}
            self.fill(value, elem, kind.lstrip("@"), where)
            if not value:
                raise _bad(f"<{name}> is empty", where)
        if element.repeats:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value

    def primitive(self, elem: Any, kind: str, where: str) -> tuple[Any, dict[str, Any] | None]:
        extra: dict[str, Any] = {}
        value: Any = None
        for attr, text in elem.attrib.items():
            if attr == "value":
                value = _parse_value(text, kind, where)
            elif attr == "id":
                extra["id"] = text
            else:
                raise _bad(f"Unknown attribute '{attr}'", where)
        for child in elem:
            if child.tag in _SKIPPED:
                continue
            if child.tag != _FHIR + "extension":
                other = _local(child, where)
                raise _bad(f"A primitive element holds extensions only, not <{other}>", where)
            extension: dict[str, Any] = {}
            self.fill(extension, child, "Extension", f"{where}.extension")
            extra.setdefault("extension", []).append(extension)
        if _has_text(elem):
            raise _bad("Text is not allowed here: the value goes in the value attribute", where)
        if value is None and not extra:
            raise _bad("A primitive element needs a value or an extension", where)
        return value, extra or None


def _parse_value(text: str, kind: str, where: str) -> Any:
    """The JSON value of a primitive's value attribute (json.html#primitive)."""
    if kind == "boolean":
        if text not in ("true", "false"):
            raise _bad(f"'{text}' is not a boolean", where)
        return text == "true"
    if kind in _INTEGERS:
        if not _INTEGER.fullmatch(text) or len(text) > 12:
            raise _bad(f"'{text}' is not an {kind}", where)
        return int(text)
    if kind == "decimal":
        if not _DECIMAL.fullmatch(text):
            raise _bad(f"'{text}' is not a decimal", where)
        try:
            return loads(text)
        except ValueError:
            raise _bad(f"'{text}' is beyond a double", where) from None
    return text


def _put(out: dict[str, Any], name: str, value: Any, extra: Any, repeats: bool) -> None:
    """JSON's two properties for a primitive: `name` and `_name` (arrays aligned with null)."""
    if not repeats:
        if value is not None:
            out[name] = value
        if extra is not None:
            out["_" + name] = extra
        return
    values: list[Any] = out.setdefault(name, [])
    extras: list[Any] | None = out.get("_" + name)
    if extra is not None and extras is None:
        extras = out["_" + name] = [None] * len(values)
    values.append(value)
    if extras is not None:
        extras.append(extra)


def _local(elem: Any, where: str, xhtml: bool = False) -> str:
    tag = elem.tag
    if not isinstance(tag, str):
        raise _bad("Unexpected XML content", where)
    if tag.startswith(_FHIR):
        return str(tag[len(_FHIR) :])
    if xhtml and tag == _XHTML_DIV:
        return "div"
    raise _bad(f"<{etree.QName(tag).localname}> is not in the FHIR namespace ({FHIR_NS})", where)


def _has_text(elem: Any) -> bool:
    if elem.text and elem.text.strip():
        return True
    return any(child.tail and child.tail.strip() for child in elem)


def _bad(message: str, where: str) -> FhirError:
    return error(400, "structure", message, where or None)
