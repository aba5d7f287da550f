"""Pure value normalisers shared by index extraction and query parsing.

Index time and query time must normalise identically, otherwise searches silently miss; keeping
both sides on these few functions is what guarantees that.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal

__all__ = ["MAX_INSTANT", "MIN_INSTANT", "date_bounds", "normalize_string", "number_bounds"]

MIN_INSTANT = "0001-01-01T00:00:00.000000Z"
MAX_INSTANT = "9999-12-31T23:59:59.999999Z"

# Only diacritics of the Latin/Greek/Cyrillic kind are dropped. A blanket "drop every combining
# mark" would turn Japanese ガ into カ (the dakuten is a combining mark) and, after NFKD, leave
# Hangul as loose jamo; NFC afterwards puts such scripts back together unchanged.
_DIACRITIC_RANGES = (
    (0x0300, 0x036F),  # Combining Diacritical Marks
    (0x1AB0, 0x1AFF),  # ... Extended
    (0x1DC0, 0x1DFF),  # ... Supplement
    (0x20D0, 0x20FF),  # ... for Symbols
    (0xFE20, 0xFE2F),  # Combining Half Marks
)


_DIACRITICS = re.compile(
    "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _DIACRITIC_RANGES) + "]"
)


def normalize_string(s: str) -> str:
    """Case-fold, strip accents and collapse whitespace, for FHIR's default string matching.

    ``"  José  ÁLVAREZ "`` -> ``"jose alvarez"``; CJK, kana and Hangul come back unchanged.
    """
    if s.isascii():  # fast path: the overwhelmingly common case
        return " ".join(s.lower().split())
    stripped = _DIACRITICS.sub("", unicodedata.normalize("NFKD", s.casefold()))
    return " ".join(unicodedata.normalize("NFC", stripped).split())


_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _fmt(dt: datetime) -> str:
    # isoformat zero-pads the year to 4 digits (strftime('%Y') does not on every platform)
    return dt.isoformat(timespec="microseconds") + "Z"


def _to_utc(dt: datetime, offset: timedelta) -> str:
    try:
        return _fmt(dt - offset)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: clamp to the representable range
        return MIN_INSTANT if offset > timedelta(0) else MAX_INSTANT


#: what a time of each precision covers past its start (none crosses its unit)
_SECOND = timedelta(microseconds=999_999)
_MINUTE = timedelta(seconds=59, microseconds=999_999)
_HOUR = timedelta(minutes=59, seconds=59, microseconds=999_999)


def date_bounds(value: str) -> tuple[str, str]:
    """Return the (first, last) UTC instant covered by a FHIR date/dateTime/instant.

    FHIR date search compares ranges, so each value stands for the whole interval its precision
    implies: ``2020-03`` covers March. Bounds are fixed-width strings so they compare correctly as
    plain text in any database. Values without a timezone are taken as UTC.
    """
    m = _DATE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"invalid FHIR date/time: {value!r}")
    ys, ms, ds, hs, mis, ss_, frac, tz = m.groups()
    y = int(ys)
    if ms is None:
        if y < 1:
            raise ValueError(f"invalid year: {value!r}")
        return f"{y:04d}-01-01T00:00:00.000000Z", f"{y:04d}-12-31T23:59:59.999999Z"
    mo = int(ms)
    if not 1 <= mo <= 12 or y < 1:
        raise ValueError(f"invalid month: {value!r}")
    if ds is None:
        last = calendar.monthrange(y, mo)[1]
        return (
            f"{y:04d}-{mo:02d}-01T00:00:00.000000Z",
            f"{y:04d}-{mo:02d}-{last:02d}T23:59:59.999999Z",
        )
    d = int(ds)
    if not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise ValueError(f"invalid day: {value!r}")
    if hs is None:
        if tz is not None:
            raise ValueError(f"timezone without time: {value!r}")
        day = f"{y:04d}-{mo:02d}-{d:02d}"
        return f"{day}T00:00:00.000000Z", f"{day}T23:59:59.999999Z"
    hh = int(hs)
    mi = int(mis or 0)
    ss = int(ss_ or 0)
    if hh > 23 or mi > 59 or ss > 59:
        raise ValueError(f"invalid time: {value!r}")
    low = datetime(y, mo, d, hh, mi, ss, int(frac[:6].ljust(6, "0")) if frac else 0)
    if frac is not None:
        # .123 covers .123000-.123999; 6+ digits is already a single microsecond
        span = timedelta(microseconds=10 ** max(0, 6 - len(frac)) - 1)
    else:
        span = _SECOND if ss_ is not None else _MINUTE if mis is not None else _HOUR
    offset = timedelta(0)
    if tz and tz != "Z":
        oh, om = int(tz[1:3]), int(tz[4:6])
        if oh > 14 or om > 59:
            raise ValueError(f"invalid timezone: {value!r}")
        offset = timedelta(minutes=oh * 60 + om if tz[0] == "+" else -(oh * 60 + om))
    try:  # the span stays within its unit, so low + span never passes datetime.max
        utc = low - offset
        return _fmt(utc), _fmt(utc + span)
    except OverflowError:  # near year 1 or 9999: each bound clamped on its own
        return _to_utc(low, offset), _to_utc(low + span, offset)


def number_bounds(value: str) -> tuple[float, float]:
    """Return the implicit precision range of a decimal, per the FHIR search spec.

    ``"100"`` -> (99.5, 100.5); ``"100.00"`` -> (99.995, 100.005); ``"1e2"`` -> (50, 150):
    half a unit of the last significant digit either side.
    """
    try:
        d = Decimal(value.strip())
        if not d.is_finite():
            raise ValueError(f"invalid number: {value!r}")
        exp = d.as_tuple().exponent
        assert isinstance(exp, int)
        half = Decimal(5).scaleb(exp - 1)
        low, high = float(d - half), float(d + half)
    except (ArithmeticError, AttributeError) as exc:  # InvalidOperation, Overflow
        raise ValueError(f"invalid number: {value!r}") from exc
    return low, high
