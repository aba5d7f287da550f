"""Patient identifiers as every integration matches them: an assigning authority (HL7 v2
PID-3.4, DICOM Issuer of Patient ID (0010,0021)) names one identifier system, so a patient
registered by ADT and imaged by CT is one Patient."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import quote

from fhir_server.settings import Settings

#: the system of identifiers whose authority is not named (an MRN of the site itself)
LOCAL = "urn:yilian:patient-id"


def identifier_system(settings: Settings, authority: str | None) -> str:
    """The FHIR Identifier.system for `authority`: the one `identifier_systems` maps it to
    (`AUTHORITY=system,...`), else one derived from its name (`urn:yilian:patient-id:NAME`,
    percent-encoded), else LOCAL for no authority."""
    name = (authority or "").strip()
    if not name:
        return LOCAL
    mapped = _systems(settings.identifier_systems).get(name.upper())
    return mapped or f"{LOCAL}:{quote(name, safe='')}"


@cache
def _systems(setting: str) -> dict[str, str]:
    """`AUTHORITY=system,...` as {AUTHORITY (upper case): system}."""
    out = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        authority, sep, system = item.partition("=")
        if not sep or not authority.strip() or not _URI.fullmatch(system.strip()):
            raise ValueError(f"identifier_systems: '{item}' is not AUTHORITY=system-uri")
        out[authority.strip().upper()] = system.strip()
    return out


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
