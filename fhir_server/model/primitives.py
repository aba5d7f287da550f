"""The FHIR primitive types as JSON values (datatypes.html#primitive, json.html#primitive): one
checker per type that answers None for a good value or says what is wrong, and the narrative
rules (txt-1, txt-2, narrative.html#xhtml) that R4 writes as `htmlChecks()`."""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable
from datetime import date
from html.entities import name2codepoint
from typing import Any
from xml.etree import ElementTree
from xml.parsers.expat import ExpatError

#: a checker: None when the JSON value is a valid value of the type, else why not
Check = Callable[[Any], str | None]

#: R4 primitive types whose JSON form is a string (json.html#primitive); the numbers and
#: boolean are checked by type
_NUMBER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "decimal"})
INT32 = (-(2**31), 2**31 - 1)
EMPTY = "Empty string: a value must have at least one character (json.html#primitive)"
MAX_STRING = 1024 * 1024  # string.value maxLength (datatypes.html#string)

_SPACE = re.compile(r"\s")


def _valid_date(value: str) -> bool:
    """The regexes let through 2021-02-30; a full date must exist in the calendar."""
    if len(value) < 10 or value[7] != "-":
        return True
    try:
        date.fromisoformat(value[:10])
    except ValueError:
        return False
    return True


def _string_check(name: str, regex: str | None) -> Check:
    pattern = re.compile(regex) if regex else None
    dated = name in ("date", "dateTime", "instant")

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"A {name} must be a JSON string, not {_json_type(value)}"
        if not value:
            return EMPTY
        if pattern is not None and pattern.fullmatch(value) is None:
            return f"Not a valid {name}: {_show(value)}"
        if dated and not _valid_date(value):
            return f"Not a valid {name}: {_show(value)} is not a day of the calendar"
        return None

    return check


def _check_string(value: Any) -> str | None:
    if type(value) is not str:
        return f"A string must be a JSON string, not {_json_type(value)}"
    if not value:
        return EMPTY
    if len(value) > MAX_STRING:
        return f"A string is at most {MAX_STRING} characters"
    return None


def _check_base64(value: Any) -> str | None:
    if type(value) is not str:
        return f"A base64Binary must be a JSON string, not {_json_type(value)}"
    if not value:
        return EMPTY
    text = "".join(value.split()) if _SPACE.search(value) else value
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        return f"Not valid base64 ({exc})"
    return None


def _check_boolean(value: Any) -> str | None:
    return None if type(value) is bool else f"A boolean must be true or false, not {_show(value)}"


def _number_check(name: str) -> Check:
    low, high = {"integer": INT32, "positiveInt": (1, INT32[1]),
                 "unsignedInt": (0, INT32[1])}.get(name, (None, None))  # fmt: skip

    def check(value: Any) -> str | None:
        if name == "decimal":
            number = isinstance(value, int | float) or _is_decimal(value)
            if type(value) is bool or not number:
                return f"A decimal must be a JSON number, not {_json_type(value)}"
            if isinstance(value, float) and not math.isfinite(value):
                return "A decimal must be a finite number"
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            return f"A {name} must be a JSON integer, not {_show(value)}"
        if low is not None and high is not None and not low <= value <= high:
            return f"A {name} must be between {low} and {high}, not {value}"
        return None

    return check


def _is_decimal(value: Any) -> bool:
    """A number kept in its written form by the parser (decimal.Decimal or a subclass)."""
    from decimal import Decimal

    return isinstance(value, Decimal) and value.is_finite()


def checker(name: str, regex: str | None) -> Check:
    """The checker of primitive type `name` (its R4 regex given, from the definitions)."""
    if name in _NUMBER_TYPES:
        return _number_check(name)
    if name == "boolean":
        return _check_boolean
    if name == "base64Binary":
        return _check_base64
    if name in ("string", "markdown"):
        return _check_string
    if name == "xhtml":
        return check_narrative
    return _string_check(name, regex)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- narrative (narrative.html#xhtml; the Java validator's list of allowed names) -------------

XHTML_NS = "http://www.w3.org/1999/xhtml"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ELEMENTS = _words(
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym cite "
    "blockquote hr address bdo kbd sub sup ul ol li dl dt dd pre table caption colgroup col "
    "thead tr tfoot tbody th td code samp img map area"
)
_ATTRIBUTES = _words(
    "title style class id lang xml:lang dir accesskey tabindex span width align valign char "
    "charoff abbr axis headers scope rowspan colspan href name src alt height border "
    "cellpadding cellspacing frame rules summary start type value shape coords nohref "
    "usemap compact noshade clear size"
)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
#: the narrative Synthea and most EMRs write: one div of plain text
_PLAIN = re.compile(r'<div xmlns="http://www\.w3\.org/1999/xhtml">([^<&]*)</div>')
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})
#: XML 1.0 [2] Char (WFC: Legal Character)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CHAR_REF = re.compile(r"&#(x[0-9A-Fa-f]+|[0-9]+);")
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data:text/html)", re.IGNORECASE)


def narrative_has_content(value: str) -> bool:
    """txt-2: some non-whitespace content (or an element: R4's own examples hold `<pre>`s of
    whitespace). The HL7 validator of R4 does not enforce it: it only warns."""
    plain = _PLAIN.fullmatch(value)
    if plain is not None:
        return bool(plain.group(1).strip())
    try:
        root = ElementTree.fromstring(_ENTITY.sub(_entity, value))
    except (ElementTree.ParseError, ExpatError, ValueError):
        return True  # check_narrative reports it
    return len(root) > 0 or bool("".join(root.itertext()).strip())


def check_narrative(value: Any) -> str | None:
    """txt-1 (only the basic HTML elements and attributes: no script, form, object, event
    attribute or javascript: link), well-formed XHTML in the XHTML namespace with a div at the
    root, and only XML characters."""
    if type(value) is not str:
        return f"The narrative must be a JSON string, not {_json_type(value)}"
    plain = _PLAIN.fullmatch(value)
    if plain is not None:
        return _bad_char(value) if _NOT_XML_CHAR.search(value) else None
    bad = _bad_char(value)
    if bad:
        return bad
    try:
        root = ElementTree.fromstring(_ENTITY.sub(_entity, value))
    except (ElementTree.ParseError, ExpatError, ValueError) as exc:
        return f"The narrative is not well-formed XHTML ({exc})"
    if root.tag != f"{{{XHTML_NS}}}div":
        return "The narrative must be a <div> in the XHTML namespace"
    for node in root.iter():
        tag = node.tag if isinstance(node.tag, str) else ""
        name = tag.removeprefix(f"{{{XHTML_NS}}}")
        if name not in _ELEMENTS:
            return f"txt-1: The narrative may not contain <{name}>"
        for attribute, text in node.attrib.items():
            if attribute == _XML_LANG:
                continue
            if attribute not in _ATTRIBUTES:
                return f"txt-1: The narrative may not use the attribute {attribute!r} on <{name}>"
            if attribute in ("href", "src") and _SCRIPT_URL.match(text):
                return f"txt-1: The narrative may not link to a script ({attribute} on <{name}>)"
    return None


def _entity(match: re.Match[str]) -> str:
    """HTML's named character references (FHIR narratives use them) as XML character refs."""
    name = match.group(1)
    if name in _XML_ENTITIES:
        return match.group(0)
    code = name2codepoint.get(name)
    return f"&#{code};" if code is not None else match.group(0)


def _bad_char(div: str) -> str | None:
    bad = _NOT_XML_CHAR.search(div)
    if bad is None:
        for ref in _CHAR_REF.finditer(div):
            digits = ref.group(1)
            code = int(digits[1:], 16) if digits[0] == "x" else int(digits)
            if code > 0x10FFFF or _NOT_XML_CHAR.match(chr(code)):
                bad = ref
                break
    if bad is None:
        return None
    return f"The narrative contains {bad.group(0)!r}, which is not an XML character"
