"""The citizen identification number (居民身份证号码) of GB 11643-1999: 6 digits of the
address code, 8 of the birth date (YYYYMMDD), 3 of the sequence code (odd for men, even for
women) and a check character computed by ISO 7064 MOD 11-2."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
#: GB 11643-1999 §5.3: weight of position i (1-based from the left) is 2^(18-i) mod 11
WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
#: the check character for (sum of weighted digits) mod 11
CHECK = "10X98765432"


@dataclass(frozen=True)
class ResidentId:
    """A well-formed number: its canonical form (upper-case X), birth date and sex."""

    value: str
    birth_date: date
    gender: str  # "male" | "female" (administrative gender)


def check_character(first17: str) -> str:
    return CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def parse(raw: str) -> ResidentId | str:
    """The number, or why it is not one (for the OperationOutcome): wrong length, a character
    that is not a digit (or X last), an impossible birth date, a wrong check character."""
    value = raw.strip().upper()
    if len(value) != 18:
        return f"has {len(value)} characters, not 18"
    if not _SHAPE.fullmatch(value):
        return "must be 17 digits and a digit or X"
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"holds no valid birth date ({value[6:14]})"
    expected = check_character(value[:17])
    if value[17] != expected:
        return f"has check character {value[17]}, but its digits give {expected}"
    return ResidentId(value, born, "male" if int(value[16]) % 2 else "female")
