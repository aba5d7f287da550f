"""v2 datatypes as FHIR datatypes, after the IG's datatype maps (mappings/datatypes: DTM[dateTime],
CWE[CodeableConcept], CX[Identifier], XPN[HumanName], XAD[Address], XTN[ContactPoint],
NM[Quantity], SN[Quantity|Range|Ratio], NR[Range]). A value that is not what its datatype says
raises MappingError naming the field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fhir_server.referral.codes import SID

from .. import tables
from ..ack import Err
from ..er7 import Composite, Segment
from .plan import MappingError

V2_TABLE = "http://terminology.hl7.org/CodeSystem/v2-"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class At:
    """Where a value came from, for the ERR segment of an error."""

    segment: str
    occurrence: int
    field: int
    component: int = 0

    def error(self, code: int, text: str) -> MappingError:
        return MappingError(Err(code, text, self.segment, self.occurrence, self.field,
                                self.component))  # fmt: skip

    def of(self, component: int) -> At:
        return At(self.segment, self.occurrence, self.field, component)


def at(segment: Segment, occurrence: int, field: int) -> At:
    return At(segment.name, occurrence, field)


# --- dates and times (DTM, HL7 v2.5 §2.A.22; TS is DTM^precision) --------------------------

_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,4})?)?)?)?)?)?"
    r"([+-]\d{4})?"
)


def date_time(raw: str, where: At, zone: str) -> str | None:
    """A FHIR dateTime: its precision kept (YYYY, YYYY-MM, YYYY-MM-DD), a time of day with
    seconds and an offset (FHIR requires both: the v2 offset, else `zone`)."""
    if not raw:
        return None
    m = _DTM.fullmatch(raw.strip())
    if m is None:
        raise where.error(102, f"'{raw}' is not a date/time (YYYYMMDDHHMMSS[+ZZZZ])")
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    try:
        if month and not 1 <= int(month) <= 12 or day and not 1 <= int(day) <= _days(year, month):
            raise ValueError
        if hour and int(hour) > 23 or minute and int(minute) > 59 or second and int(second) > 59:
            raise ValueError
    except ValueError:
        raise where.error(102, f"'{raw}' is not a valid date/time") from None
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    if not hour:
        return f"{year}-{month}-{day}"
    tz = f"{offset[:3]}:{offset[3:]}" if offset else zone
    return (f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
            f"{tz}")  # fmt: skip


def _days(year: str, month: str) -> int:
    m, y = int(month), int(year)
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def date(raw: str, where: At, zone: str) -> str | None:
    """A FHIR date: the date part of a DTM."""
    value = date_time(raw, where, zone)
    return value[:10] if value else None


def instant(raw: str, where: At, zone: str) -> str | None:
    """A FHIR instant (precise to the second at least): a DTM without seconds is an error."""
    value = date_time(raw, where, zone)
    if value and len(value) < 20:
        raise where.error(102, f"'{raw}' is not precise to the second (an instant is)")
    return value


# --- codes --------------------------------------------------------------------------------


def system_uri(name: str, facility: str) -> str | None:
    """The FHIR system of a v2 coding system name (CWE.3): a known one (`known_system`), else
    the sending facility's own code system (a local code means local to its sender)."""
    if not name:
        return None
    return known_system(name, facility) or local_system(name, facility)


def known_system(name: str, facility: str) -> str | None:
    """A coding system name we can place, None otherwise: a name of table 0396 we know
    (local.json CodingSystem), HL7nnnn for v2 table nnnn, a URI or OID as written, and the
    local systems table 0396 reserves (99zzz, L) as the sending facility's own."""
    known = tables.local()["CodingSystem"].get(name.upper())
    if known:
        return str(known)
    if re.fullmatch(r"HL7\d{4}", name, re.I):
        return f"{V2_TABLE}{name[3:]}"
    if re.fullmatch(r"[0-2](\.\d+)+", name):
        return f"urn:oid:{name}"
    if ":" in name:
        return name
    if name == "L" or re.fullmatch(r"99[A-Za-z0-9]{3}", name):
        return local_system(name, facility)
    return None


def local_system(name: str, facility: str) -> str:
    return f"{SID}code/{quote(facility, safe='')}/{quote(name, safe='')}"


def codeable(c: Composite, facility: str, table: str | None = None,
             v2_table: str = "") -> dict[str, Any] | None:  # fmt: skip
    """CWE/CE/CNE -> CodeableConcept (IG CWE[CodeableConcept]): the identifier and the
    alternate identifier as codings, CWE.9 (else CWE.2) as text. With `table` (an IG concept
    map), the v2 code's FHIR coding comes first; `v2_table` (nnnn) is the system of a code
    sent without one (an IS or ID field: DG1-6, AL1-2)."""
    if not c:
        return None
    codings = []
    for code_at, text_at, system_at in ((1, 2, 3), (4, 5, 6)):
        code, text, system = c[code_at], c[text_at], c[system_at]
        if not system and v2_table and code_at == 1:
            system = f"HL7{v2_table}"
        if not code:
            continue
        if table and code_at == 1:
            mapped = tables.coding(table, code)
            if mapped:
                codings.append(mapped)
        coding: dict[str, Any] = {"code": code}
        uri = system_uri(system, facility)
        if uri:
            coding = {"system": uri, **coding}
        if text:
            coding["display"] = text
        if not any(x.get("system") == coding.get("system") and x["code"] == code
                   for x in codings):  # fmt: skip
            codings.append(coding)
    text = c[9] or c[2]
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out or None


def v2_coding(table: str, code: str, display: str = "") -> dict[str, str]:
    """A code of HL7 v2 table `table` (e.g. 0203) as a Coding."""
    out = {"system": f"{V2_TABLE}{table}", "code": code}
    if display:
        out["display"] = display
    return out


# --- identifiers, names, addresses, telecom ------------------------------------------------


def authority(c: Composite, n: int) -> str:
    """The assigning authority of CX/EI/XCN component n (HD): namespace id, else universal id."""
    hd = c.component(n)
    return hd[1] or hd[2]


def identifier(value: str, system: str, type_code: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if type_code:
        coding = tables.coding("IdentifierType", type_code) or v2_coding("0203", type_code)
        out["type"] = {"coding": [coding]}
    out["system"] = system
    out["value"] = value
    return out


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def human_name(c: Composite) -> dict[str, Any] | None:
    """XPN -> HumanName (IG XPN[HumanName]): XPN.1 family, .2 and .3 given, .4 suffix, .5
    prefix, .7 use (NameType). A Chinese name also gets `text`, family name first and no
    space (张三), as it is written; HIS often send it whole in XPN.1."""
    out = person_name(c.sub(1, 1), c[2], c[3])
    if not out:
        return None
    use = tables.code("NameType", c[7]) if c[7] else None
    if use:
        out = {"use": use, **out}
    if c[5]:
        out["prefix"] = [c[5]]
    if c[4]:
        out["suffix"] = [c[4]]
    return out


def person_name(family: str, given: str, more: str) -> dict[str, Any]:
    """Family and given names (of XPN or XCN) as a HumanName, with `text` for Chinese."""
    out: dict[str, Any] = {}
    if _CJK.search(family + given):
        out["text"] = family + given + more
    if family:
        out["family"] = family
    givens = [g for g in (given, *more.split(" ")) if g]
    if givens:
        out["given"] = givens
    return out


def address(c: Composite) -> dict[str, Any] | None:
    """XAD -> Address (IG XAD[Address]): .1 street (SAD.1), .2 other designation, .3 city, .4
    state/province, .5 postal code, .6 country, .7 type (AddressType[Use]), .9 county
    (district). A Chinese address gets `text` in its written order: province, city, district,
    street."""
    street, other, city, state = c.sub(1, 1), c[2], c[3], c[4]
    postal, country, district = c[5], c[6], c[9]
    out: dict[str, Any] = {}
    use = tables.code("AddressType[Use]", c[7]) if c[7] else None
    if use:
        out["use"] = use
    lines = [x for x in (street, other) if x]
    parts = (state, city, district, *lines)
    if _CJK.search("".join(parts)):
        out["text"] = "".join(p for p in parts if p)
    if lines:
        out["line"] = lines
    for key, value in (("city", city), ("district", district), ("state", state),
                       ("postalCode", postal), ("country", country)):  # fmt: skip
        if value:
            out[key] = value
    return out if len(out) > int("use" in out) else None


def contact_point(c: Composite, default_use: str) -> dict[str, Any] | None:
    """XTN -> ContactPoint (IG XTN[ContactPoint]): the number (XTN.1, else country/area/local
    number .5-.8) or the address (.4), the system from .3 (TelecommunicationEquipmentType),
    the use from .2 (TelecommunicationUseCode), else the field's (home for PID-13, work for
    PID-14)."""
    equipment = c[3]
    number = c[1] or "".join(x for x in (c[5] and f"+{c[5]} ", c[6], c[7]) if x)
    if c[8]:
        number += f" ext. {c[8]}"
    system, use = "phone", tables.code("TelecommunicationUseCode", c[2]) or default_use
    if equipment == "Internet" or (c[4] and not number):
        system, number = "email", c[4] or number
    elif equipment == "CP":  # the IG maps CP to the use `mobile` (a use, not a system)
        use = "mobile"
    elif equipment:
        system = tables.code("TelecommunicationEquipmentType", equipment) or "other"
    if not number:
        return None
    return {"system": system, "value": number.strip(), "use": use}


# --- quantities --------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def number(raw: str, where: At) -> int | float:
    text = raw.strip()
    if not _NUMBER.fullmatch(text):
        raise where.error(102, f"'{raw}' is not a number")
    return float(text) if "." in text else int(text)


def unit(c: Composite) -> dict[str, str]:
    """OBX-6 (CWE) as Quantity unit/system/code: UCUM when it says so (CWE.3 UCUM), when the
    code is one our laboratories send as written, or through our table of non-UCUM spellings
    (local.json Units); otherwise the unit as text only."""
    code, text, system = c[1], c[2], c[3]
    shown = text or code
    if not code:
        return {"unit": shown} if shown else {}
    ucum = None
    if system.upper() in ("UCUM", "ISO+"):
        ucum = code
    else:
        local = tables.local()
        ucum = local["Units"].get(code)
        if ucum is None and code in local["UcumCodes"]["codes"]:
            ucum = code
    if ucum is None:
        return {"unit": shown}
    return {"unit": shown, "system": UCUM, "code": ucum}


def quantity(raw: str, units: dict[str, str], where: At) -> dict[str, Any]:
    return {"value": number(raw, where), **units}


_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">="}


def structured_numeric(c: Composite, units: dict[str, str], where: At) -> tuple[str, Any]:
    """SN (comparator ^ num1 ^ separator/suffix ^ num2) as valueQuantity (with comparator),
    valueRange (`-`), valueRatio (`:` or `/`) or valueString (other suffixes), IG SN[...]."""
    comparator, first, separator, second = c[1], c[2], c[3], c[4]
    if separator in ("-", ":", "/") and first and second:
        low, high = quantity(first, units, where), quantity(second, units, where)
        if separator == "-":
            return "valueRange", {"low": low, "high": high}
        return "valueRatio", {"numerator": low, "denominator": high}
    if separator or comparator not in ("", "=", *_COMPARATORS):
        return "valueString", "".join((comparator, first, separator, second))
    value = quantity(first, units, where)
    if comparator in _COMPARATORS:
        value["comparator"] = _COMPARATORS[comparator]
    return "valueQuantity", value


_RANGE = re.compile(r"\s*([<>]=?)?\s*([+-]?\d*\.?\d+)\s*(?:(?:-|~|—|–)\s*([+-]?\d*\.?\d+))?\s*")


def reference_range(text: str, units: dict[str, str]) -> dict[str, Any]:
    """OBX-7 -> referenceRange: its text always; low/high when it reads as `a-b`, `<b` or
    `>a` (laboratories also write `a~b`)."""
    out: dict[str, Any] = {"text": text}
    m = _RANGE.fullmatch(text)
    if m:
        op, first, second = m.groups()
        value = {"value": float(first) if "." in first else int(first), **units}
        if second is not None and not op:
            out["low"] = value
            out["high"] = {"value": float(second) if "." in second else int(second), **units}
        elif op and op.startswith("<"):
            out["high"] = value
        elif op and op.startswith(">"):
            out["low"] = value
    return out


def numeric_range(c: Composite, units: dict[str, str], where: At) -> dict[str, Any]:
    """NR (low ^ high) -> Range."""
    out: dict[str, Any] = {}
    if c[1]:
        out["low"] = quantity(c[1], units, where)
    if c[2]:
        out["high"] = quantity(c[2], units, where)
    return out
