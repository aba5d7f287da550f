"""Matching keys (an attribute and the value to match) as Matches, checked: the same rules for
C-FIND identifiers and QIDO-RS query parameters (PS3.4 C.2.2.2, PS3.18 §8.3.4)."""

from __future__ import annotations

import re

from .attributes import LEVELS, MATCHABLE, keyword
from .dataset import normal_name, valid_uid
from .storage.query import Match

_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?")
_DATES = frozenset({"study_date", "birth_date"})
_TIMES = frozenset({"study_time"})
_NAMES = frozenset({"patient_name", "referring"})
_UIDS = frozenset({"uid", "sop_class"})
_NUMBERS = frozenset({"number"})


class BadMatch(ValueError):
    """A matching key that cannot be: names the attribute and says why."""

    def __init__(self, tag: int, reason: str) -> None:
        super().__init__(f"{keyword(tag)} ({tag:08X}): {reason}")
        self.tag = tag


def match(tag: int, value: str, level: str) -> Match | None:
    """The Match for matching `tag` against `value` in a query at `level`; None for
    universal matching (empty value) or an attribute the index does not match on (it is
    then only returned). BadMatch for a malformed value."""
    found = MATCHABLE.get(tag)
    value = value.strip()
    if found is None or not value:
        return None
    where, column = found
    if LEVELS.index(where) > LEVELS.index(level) and level != "PATIENT":
        return None  # a lower level's key in a higher level's query: not a matching key
    if column in _DATES:
        return Match(where, column, *_range(tag, value, _DATE, "YYYYMMDD"))
    if column in _TIMES:
        return Match(where, column, *_range(tag, value, _TIME, "HHMMSS"))
    if column == "modalities":
        return Match(where, column, "list", tuple(_split(value)))
    if column in _UIDS:
        uids = _split(value)
        bad = [u for u in uids if not valid_uid(u)]
        if bad:
            raise BadMatch(tag, f"'{bad[0][:70]}' is not a UID")
        return Match(where, column, "list", tuple(uids)) if len(uids) > 1 else Match(
            where, column, "exact", uids[0]
        )
    if column in _NUMBERS:
        if not re.fullmatch(r"[+-]?[0-9]{1,10}", value):
            raise BadMatch(tag, f"'{value[:20]}' is not an integer")
        return Match(where, column, "exact", int(value))
    if column in _NAMES:
        pattern = "=".join(normal_name(g) for g in value.split("="))
        return Match(where, column, "name", pattern)
    if "*" in value or "?" in value:
        return Match(where, column, "wildcard", value)
    return Match(where, column, "exact", value)


def _range(tag: int, value: str, form: re.Pattern[str], shape: str) -> tuple[str, object]:
    low, dash, high = value.partition("-")
    for bound in (low, high):
        if bound and not form.fullmatch(bound):
            raise BadMatch(tag, f"'{value[:40]}' is not {shape} or a range {shape}-{shape}")
    if not dash:
        return "range", (low, low)
    if not (low or high):
        raise BadMatch(tag, "a range needs at least one bound")
    return "range", (low, high)


def _split(value: str) -> list[str]:
    """A value list: backslash-separated (DICOM), or comma-separated (QIDO-RS)."""
    return [v.strip() for v in re.split(r"[\\,]", value) if v.strip()]
