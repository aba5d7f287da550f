"""A small UCUM canonicaliser for quantity search (search.html#quantity: "the server SHOULD
compare in canonical units where it can"): metric prefixes on mass, volume, length, amount,
equivalents and time, and quotients of them (mg/dL -> g/L). Anything else: None."""

from __future__ import annotations

from functools import cache

UCUM = "http://unitsofmeasure.org"
_PREFIXES = {"k": 1e3, "h": 1e2, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9,
             "p": 1e-12}  # fmt: skip
#: atom -> (factor to the canonical atom, canonical atom)
_ATOMS = {
    "g": (1.0, "g"), "L": (1.0, "L"), "l": (1.0, "L"), "m": (1.0, "m"), "mol": (1.0, "mol"),
    "eq": (1.0, "eq"), "s": (1.0, "s"), "min": (60.0, "s"), "h": (3600.0, "s"),
    "d": (86400.0, "s"), "wk": (604800.0, "s"),
}  # fmt: skip


@cache
def _term(term: str) -> tuple[float, str] | None:
    if term in _ATOMS:
        return _ATOMS[term]
    prefix, atom = term[:1], term[1:]
    if prefix in _PREFIXES and atom in _ATOMS and atom not in ("min", "h", "d", "wk"):
        factor, unit = _ATOMS[atom]
        return _PREFIXES[prefix] * factor, unit
    return None


@cache
def factor(code: str) -> tuple[float, str] | None:
    """(multiplier, canonical unit) for a UCUM code such as `mg/dL`, or None."""
    parts = code.split("/")
    if len(parts) > 2 or not all(parts):
        return None
    num = _term(parts[0])
    if num is None:
        return None
    if len(parts) == 1:
        return num
    den = _term(parts[1])
    if den is None:
        return None
    return num[0] / den[0], f"{num[1]}/{den[1]}"
