"""How Patient/$match scores a candidate against the patient asked about: evidence per
attribute, each adding (or, when both records disagree, removing) a fixed weight; the sum,
clipped to [0, 1], is the score (README "Patient index" explains the table). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..model import resident_id
from ..search import pinyin
from ..search.values import normalize_string

#: (weight when both records agree, weight when both have the attribute and disagree)
WEIGHTS: dict[str, tuple[float, float]] = {
    "national-id": (0.80, -0.80),  # 居民身份证号, check character valid on both sides
    "identifier": (0.60, 0.0),  # the same system and value (another hospital's record number)
    "name": (0.25, 0.0),  # the same name in characters (or the same Latin name)
    "name-pinyin": (0.20, 0.0),  # the same name read in pinyin (zhang san = 张三 = 章三)
    "family": (0.05, 0.0),  # only the family name agrees
    "birth-date": (0.20, -0.25),
    "birth-date-swapped": (0.05, 0.0),  # day and month swapped (03-05 for 05-03)
    "gender": (0.05, -0.25),
    "phone": (0.20, 0.0),
    "address": (0.05, 0.0),
}
_NOT_DIGIT = re.compile(r"[^0-9]")


@dataclass
class Person:
    """What $match compares, read once from a Patient."""

    national_ids: set[str] = field(default_factory=set)
    #: national ids that do not parse, with the reason (only reported for the input)
    bad_national_ids: list[tuple[int, str, str]] = field(default_factory=list)
    identifiers: set[tuple[str, str]] = field(default_factory=set)
    #: full names in characters (no spaces, case-folded), and read in pinyin (no spaces)
    names: set[str] = field(default_factory=set)
    pinyin: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    birth_date: str | None = None
    gender: str | None = None
    phones: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    replaced: bool = False


def person(patient: dict[str, Any], national_systems: Iterable[str]) -> Person:
    systems = set(national_systems)
    out = Person()
    for i, ident in enumerate(_dicts(patient.get("identifier"))):
        system, value = _str(ident.get("system")), _str(ident.get("value"))
        if not system or not value:
            continue
        if system in systems:
            parsed = resident_id.parse(value)
            if isinstance(parsed, str):
                out.bad_national_ids.append((i, value, parsed))
            else:
                out.national_ids.add(parsed.value)
        else:
            out.identifiers.add((system, value.strip()))
    for name in _dicts(patient.get("name")):
        _read_name(name, out)
    birth = _str(patient.get("birthDate"))
    out.birth_date = birth or None
    gender = _str(patient.get("gender"))
    out.gender = gender if gender in ("male", "female") else None
    for telecom in _dicts(patient.get("telecom")):
        if telecom.get("system") in ("phone", "sms", None):
            digits = phone_digits(_str(telecom.get("value")))
            if len(digits) >= 7:
                out.phones.add(digits)
    for address in _dicts(patient.get("address")):
        parts = [_str(address.get(k)) for k in ("state", "city", "district")]
        parts += [s for s in address.get("line") or [] if isinstance(s, str)]
        text = "".join(normalize_string(p).replace(" ", "") for p in parts if p)
        if text:
            out.addresses.add(text)
    out.replaced = any(link.get("type") == "replaced-by" for link in _dicts(patient.get("link")))
    return out


def _read_name(name: dict[str, Any], out: Person) -> None:
    family = _str(name.get("family"))
    given = "".join(g for g in name.get("given") or [] if isinstance(g, str))
    text = _str(name.get("text"))
    if not family and not given and text:
        if pinyin.has_han(text):
            family, given = pinyin.split_text(text)
        else:  # a Latin name written whole: both word orders
            words = normalize_string(text).split()
            out.names.add("".join(words))
            out.names.add("".join(reversed(words)))
            return
    if not family and not given:
        return
    compact = normalize_string(family + given).replace(" ", "").replace("·", "")
    if pinyin.has_han(compact):
        out.names.add(compact)
        out.families.add(normalize_string(family).replace(" ", ""))
        for surname in pinyin.surname_readings(family) or [[]]:
            out.families.add("".join(surname))
            for forename in pinyin.given_readings(given) or [[]]:
                out.pinyin.add("".join(surname + forename))
    else:
        # a name typed in Latin letters may be pinyin (Zhang San) or a foreign name, in
        # either order (San Zhang)
        fam, giv = (normalize_string(x).replace(" ", "") for x in (family, given))
        out.names |= {fam + giv, giv + fam}
        out.pinyin |= {fam + giv, giv + fam}
        out.families.add(fam)


def phone_digits(value: str) -> str:
    """A phone number as its digits, without China's country code (+86, 0086)."""
    digits = _NOT_DIGIT.sub("", value)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) >= 11:
            return digits[len(prefix):]
    return digits


def swapped(birth_date: str) -> str | None:
    """1980-03-05 -> 1980-05-03: the date with day and month exchanged, if it is a date."""
    if len(birth_date) != 10 or birth_date[4] != "-" or birth_date[7] != "-":
        return None
    year, month, day = birth_date[:4], birth_date[5:7], birth_date[8:10]
    if month == day or not day.isdigit() or int(day) > 12:
        return None
    return f"{year}-{day}-{month}"


def evidence(query: Person, candidate: Person) -> list[tuple[str, float]]:
    """Each attribute's contribution: (evidence name, weight); absent attributes add nothing."""
    found: list[tuple[str, float]] = []

    def judge(name: str, agree: bool) -> None:
        found.append((name, WEIGHTS[name][0 if agree else 1]))

    if query.national_ids and candidate.national_ids:
        judge("national-id", bool(query.national_ids & candidate.national_ids))
    if query.identifiers & candidate.identifiers:
        judge("identifier", True)
    if query.names & candidate.names:
        judge("name", True)
    elif query.pinyin & candidate.pinyin:
        judge("name-pinyin", True)
    elif query.families & candidate.families:
        judge("family", True)
    if query.birth_date and candidate.birth_date:
        if query.birth_date == candidate.birth_date:
            judge("birth-date", True)
        elif swapped(query.birth_date) == candidate.birth_date:
            judge("birth-date-swapped", True)
        else:
            judge("birth-date", False)
    if query.gender and candidate.gender:
        judge("gender", query.gender == candidate.gender)
    if query.phones & candidate.phones:
        judge("phone", True)
    if query.addresses & candidate.addresses:
        judge("address", True)
    return found


#: attributes found through an index lookup, costliest first (a common name or birth date
#: matches many records); the others (gender, address, family only) are only scored
LOOKUPS = ("name", "birth-date-swapped", "birth-date", "phone", "identifier", "national-id")


def lookups(query: Person, possible: float) -> set[str]:
    """The lookups worth making: a candidate sharing none of the looked-up attributes can
    score at most the weights of the others, and a lookup is left out while that stays below
    `possible` (with the default weights and grades: the name alone, name, gender and address
    together, or a swapped birth date cannot make a possible match, so these lookups, which
    find many records, are not made)."""
    present = {
        "national-id": bool(query.national_ids), "identifier": bool(query.identifiers),
        "name": bool(query.names or query.pinyin), "birth-date": bool(query.birth_date),
        "birth-date-swapped": bool(query.birth_date and swapped(query.birth_date)),
        "phone": bool(query.phones),
    }  # fmt: skip
    needed = {name for name, here in present.items() if here}

    def bound(made: set[str]) -> float:
        """The best score of a candidate sharing no attribute in `made`."""
        def w(name: str) -> float:
            return WEIGHTS[name][0] if present[name] and name not in made else 0.0

        names = max(w("name"), WEIGHTS["family"][0] if query.families else 0.0)
        births = max(w("birth-date"), w("birth-date-swapped"))
        free = (WEIGHTS["gender"][0] if query.gender else 0.0) + (
            WEIGHTS["address"][0] if query.addresses else 0.0)  # fmt: skip
        return names + births + w("national-id") + w("identifier") + w("phone") + free

    for name in LOOKUPS:
        if name in needed and bound(needed - {name}) < possible:
            needed.discard(name)
    return needed


def score(found: list[tuple[str, float]]) -> float:
    return round(min(1.0, max(0.0, sum(w for _, w in found))), 4)


def grade(value: float, certain: float, probable: float, possible: float) -> str | None:
    """The match-grade code (http://hl7.org/fhir/match-grade) of a score; None below possible."""
    if value >= certain:
        return "certain"
    if value >= probable:
        return "probable"
    if value >= possible:
        return "possible"
    return None


def _dicts(x: Any) -> list[dict[str, Any]]:
    return [d for d in x if isinstance(d, dict)] if isinstance(x, list) else []


def _str(x: Any) -> str:
    return x if isinstance(x, str) else ""
