"""Patient identifiers as every integration matches them: an assigning authority (HL7 v2
PID-3.4, DICOM Issuer of Patient ID (0010,0021)) names one identifier system, so a patient
registered by the HIS and imaged by the PACS is one Patient."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import quote

from fhir_server.referral.codes import SID
from fhir_server.settings import Settings

#: identifiers whose assigning authority is not named: the site's own patient ids
LOCAL = f"{SID}patient-id"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def identifier_system(settings: Settings, authority: str | None) -> str:
    """The Identifier.system of patient ids assigned by `authority`: the system the setting
    `identifier_systems` names for it (`AUTHORITY=system,...`, authorities compared without
    case), else `urn:oid:` for an OID (HD.2 with HD.3 `ISO`), else one derived from its name
    (`.../sid/patient-id/NAME`, percent-encoded), else LOCAL when no authority is named."""
    name = (authority or "").strip()
    if not name:
        return _systems(settings.identifier_systems).get("", LOCAL)
    mapped = _systems(settings.identifier_systems).get(name.upper())
    if mapped:
        return mapped
    if _OID.fullmatch(name):
        return f"urn:oid:{name}"
    return f"{LOCAL}/{quote(name, safe='')}"


@cache
def _systems(setting: str) -> dict[str, str]:
    """`AUTHORITY=system,...` as {AUTHORITY (upper case): system}; `=system` (no authority)
    replaces LOCAL. A malformed item is a configuration error, said at start-up."""
    out = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        authority, sep, system = item.partition("=")
        if not sep or not _URI.fullmatch(system.strip()):
            raise ValueError(f"identifier_systems: '{item}' is not AUTHORITY=system-uri")
        out[authority.strip().upper()] = system.strip()
    return out


def check(settings: Settings) -> None:
    """Raise ValueError now for a malformed `identifier_systems` (rather than at the first
    message that needs it)."""
    _systems(settings.identifier_systems)
