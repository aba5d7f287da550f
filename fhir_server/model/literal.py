"""JSON text to Python values and back, numbers keeping their written form.

A FHIR decimal's precision is part of its value (datatypes.html#decimal: "80.00" is not "80.0";
json.html: decimals SHALL keep their precision). A JSON number whose shortest float form writes
back differently (`80.00`, `1.0e2`, 18 significant digits, `-0`) is parsed as a `Number`: a
float for every computation (validation, indexing, comparison) that carries its text, which
`dumps` writes back verbatim. Every other number stays a plain int or float.

msgspec parses (as fast as orjson, and it hands each float's text to a hook); integers keep
their value exactly as Python ints, so only `-0`, an integer no float hook sees, takes the
stdlib parser's slower path.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import msgspec
import orjson

__all__ = ["Number", "dumps", "loads"]


class Number(float):
    """A JSON number as written; `str()` gives that text, arithmetic the float."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Number:
        number = float.__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return Number, (self.text,)


@lru_cache(maxsize=4096)
def _float(text: str) -> float:
    """The float, or a Number when orjson would write the float otherwise than `text`."""
    value = float(text)
    if not math.isfinite(value):  # as orjson: a number beyond a double is not JSON we take
        raise ValueError(f"number is infinity when parsed as double: {text[:40]}")
    return value if orjson.dumps(value) == text.encode() else Number(text)


def _int(text: str) -> int | float:
    return Number(text) if text == "-0" else int(text)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_FAST = msgspec.json.Decoder(float_hook=_float)
_SLOW = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)
#: an integer token `-0` (a date's `-03` is not one): parsed to 0, it would be written `0`
_NEGATIVE_ZERO = re.compile(rb"-0(?:[\s,\]}]|\Z)")


def loads(data: bytes | str) -> Any:
    """Parse JSON (UTF-8, RFC 8259). Raises ValueError (msgspec.DecodeError,
    json.JSONDecodeError and UnicodeDecodeError are ValueErrors) or RecursionError."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if _NEGATIVE_ZERO.search(raw) is None:
        return _FAST.decode(raw)
    return _SLOW.decode(raw.decode("utf-8"))


def _written(value: Any) -> Any:
    if isinstance(value, Number):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int = 0) -> bytes:
    """orjson.dumps that writes each Number as it was written, and integers beyond 64 bits
    (which orjson refuses) as their digits; ValueError for one beyond a double."""
    try:
        return orjson.dumps(value, default=_written, option=option)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return orjson.dumps(_big_ints(value), default=_written, option=option)


def _big_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _big_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_big_ints(v) for v in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        try:
            float(value)
        except OverflowError:  # as a float literal beyond a double: not JSON we take
            raise ValueError("number is infinity when parsed as double") from None
        return orjson.Fragment(str(value))
    return value
