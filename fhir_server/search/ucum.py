"""A small UCUM canonicaliser for quantity search (search.html#quantity: "the server SHOULD
compare in canonical units where it can"): metric prefixes on mass, volume, length, amount,
equivalents, enzyme units and seconds; calendar time; the customary units Synthea writes;
integer exponents (m2) and quotients (mg/dL -> g/L). Anything else: None.

The factors are UCUM's own (ucum-essence.xml, version 2.1, https://ucum.org/ucum): min = 60 s,
h = 60 min, d = 24 h, wk = 7 d, a = a_j = 365.25 d, mo = mo_j = a_j/12; [lb_av] = 7000 [gr],
[gr] = 64.79891 mg; [oz_av] = [lb_av]/16; [in_i] = 2.54 cm, [ft_i] = 12 [in_i]. A table of
our own rather than a UCUM library: pint does not read UCUM's syntax, and a full UCUM parser
(ucumvert, over pint and lark) would be three dependencies and a slower index path for the
few dozen units clinical quantities use."""

from __future__ import annotations

from functools import cache

UCUM = "http://unitsofmeasure.org"
_PREFIXES = {"k": 1e3, "h": 1e2, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9,
             "p": 1e-12, "f": 1e-15}  # fmt: skip
#: atom -> (factor to the canonical atom, canonical atom); metric atoms take prefixes
_METRIC = {
    "g": (1.0, "g"), "L": (1.0, "L"), "l": (1.0, "L"), "m": (1.0, "m"), "mol": (1.0, "mol"),
    "eq": (1.0, "eq"), "s": (1.0, "s"), "U": (1.0, "U"),
}  # fmt: skip
_NON_METRIC = {
    "min": (60.0, "s"), "h": (3600.0, "s"), "d": (86400.0, "s"), "wk": (604800.0, "s"),
    "a": (31557600.0, "s"), "mo": (2629800.0, "s"),
    "[lb_av]": (453.59237, "g"), "[oz_av]": (28.349523125, "g"),
    "[in_i]": (0.0254, "m"), "[ft_i]": (0.3048, "m"),
}  # fmt: skip


@cache
def _atom(term: str) -> tuple[float, str] | None:
    """A unit atom with its prefix: `kg`, `mo`, `[lb_av]` (exact atoms before prefixes, so
    `d` is a day and `dL` a decilitre)."""
    known = _METRIC.get(term) or _NON_METRIC.get(term)
    if known is not None:
        return known
    prefix, atom = term[:1], term[1:]
    if prefix in _PREFIXES and atom in _METRIC:
        scale, unit = _METRIC[atom]
        return _PREFIXES[prefix] * scale, unit
    return None


def _term(term: str) -> tuple[float, str] | None:
    """An atom with an optional positive integer exponent: `cm2` is (0.01 m)^2 = 1e-4 m2."""
    stem = term.rstrip("0123456789")
    exponent = int(term[len(stem):] or 1)
    atom = _atom(stem) if stem and exponent else None
    if atom is None:
        return None
    return atom[0] ** exponent, atom[1] + (str(exponent) if exponent != 1 else "")


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
