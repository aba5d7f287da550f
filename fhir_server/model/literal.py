"""JSON text to Python values and back, numbers keeping their written form.

A FHIR decimal's precision is part of its value (datatypes.html#decimal: "80.00" is not "80.0";
json.html: decimals SHALL keep their precision). A JSON number whose shortest float form writes
back differently (`80.00`, `1.0e2`, 18 significant digits, `-0`) is parsed as a `Number`: a
float for every computation (validation, indexing, comparison) that carries its text, which
`dumps` writes back verbatim. Every other number stays a plain int or float.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

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
        raise ValueError(f"number is infinity when parsed as double: {text}")
    return value if orjson.dumps(value) == text.encode() else Number(text)


def _int(text: str) -> int | float:
    """orjson writes 64-bit integers only, and `-0` as `0`: those others keep their text."""
    if len(text) < 19 and text != "-0":
        return int(text)
    number = Number(text)
    if not math.isfinite(number):
        raise ValueError(f"number is infinity when parsed as double: {text[:20]}...")
    return number


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)


def loads(data: bytes | str) -> Any:
    """Parse JSON (UTF-8, RFC 8259). Raises ValueError (UnicodeDecodeError and
    json.JSONDecodeError are ValueErrors) or RecursionError."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray | memoryview) else data
    return _DECODER.decode(text)


def _written(value: Any) -> Any:
    if isinstance(value, Number):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int = 0) -> bytes:
    """orjson.dumps that writes each Number as it was written."""
    return orjson.dumps(value, default=_written, option=option)
