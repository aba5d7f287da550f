"""What every segment map of one message shares: the message, its header, the settings, the
plan being built, and the resources several segments name (the sending facility, practitioners:
the IG asks that the same doctor in PV1-7, ORC-12 and OBR-16 be one Practitioner)."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import quote

from fhir_server.referral.codes import SID
from fhir_server.settings import Settings

from ..er7 import Composite, Message, Segment
from ..receipt import Header
from . import datatypes as dt
from .plan import Op, Plan, reference, token

#: identifier systems of what hospitals number themselves (facility, practitioners, orders)
FACILITY_SYSTEM = f"{SID}hl7v2-facility"


class Context:
    def __init__(self, message: Message, header: Header, settings: Settings) -> None:
        self.message = message
        self.header = header
        self.settings = settings
        self.zone = settings.hl7_timezone
        self.plan = Plan()
        msh = message.msh
        hd = msh.composite(4)
        #: the sending facility (MSH-4: namespace id, else universal id; else MSH-3)
        self.facility = hd[1] or hd[2] or msh.composite(3)[1] or "unknown"
        self._occurrence: dict[int, int] = {}
        counts: dict[str, int] = {}
        for segment in message.segments:
            counts[segment.name] = counts.get(segment.name, 0) + 1
            self._occurrence[id(segment)] = counts[segment.name]

    # --- where values come from -----------------------------------------------------------

    def at(self, segment: Segment, field: int, component: int = 0) -> dt.At:
        return dt.At(segment.name, self._occurrence.get(id(segment), 1), field, component)

    def date_time(self, segment: Segment, field: int, component: int = 1) -> str | None:
        return dt.date_time(segment.value(field, component), self.at(segment, field), self.zone)

    def date(self, segment: Segment, field: int, component: int = 1) -> str | None:
        return dt.date(segment.value(field, component), self.at(segment, field), self.zone)

    def instant(self, segment: Segment, field: int, component: int = 1) -> str | None:
        return dt.instant(segment.value(field, component), self.at(segment, field), self.zone)

    def codeable(self, segment: Segment, field: int, table: str | None = None,
                 rep: int = 0) -> dict[str, Any] | None:  # fmt: skip
        return dt.codeable(segment.composite(field, rep), self.facility, table)

    def system(self, kind: str, authority: str = "") -> str:
        """The identifier system of things a hospital numbers (orders, visits' alternates,
        practitioners, documents): per assigning authority, else the sending facility."""
        return f"{SID}{kind}/{quote(authority or self.facility, safe='')}"

    # --- resources several segments name --------------------------------------------------

    def organization(self) -> dict[str, str]:
        """The sending facility (MSH-4) as a reference: the Organization `hl7_facilities` names
        for it, else one of its own, found or created by identifier."""
        mapped = facilities(self.settings.hl7_facilities).get(self.facility.upper())
        if mapped:
            return {"reference": mapped, "display": self.facility}
        op = self.plan.add(Op(
            "organization", "Organization",
            {"resourceType": "Organization", "active": True, "name": self.facility,
             "identifier": [{"system": FACILITY_SYSTEM, "value": self.facility}]},
            match=token("identifier", FACILITY_SYSTEM, self.facility), mode="keep",
        ))  # fmt: skip
        return reference(op.key, self.facility)

    def practitioner(self, c: Composite) -> dict[str, str] | None:
        """XCN -> a reference to the Practitioner it identifies (IG XCN[Practitioner]: .1 id,
        .2 family, .3 given, .9 assigning authority), found or created by identifier; a name
        without an id is a display only."""
        if not c:
            return None
        name = dt.person_name(c.sub(2, 1), c[3], c[4])
        display = name.get("text") or " ".join([name.get("family", ""), *name.get("given", [])])
        display = display.strip()
        if not c[1]:
            return {"display": display} if display else None
        system = self.system("practitioner-id", dt.authority(c, 9))
        resource: dict[str, Any] = {
            "resourceType": "Practitioner", "active": True,
            "identifier": [{"system": system, "value": c[1]}],
        }  # fmt: skip
        if display:
            resource["name"] = [name]
        op = self.plan.add(Op(f"practitioner:{system}|{c[1]}", "Practitioner", resource,
                              match=token("identifier", system, c[1]), mode="keep"))  # fmt: skip
        return reference(op.key, display or c[1])


@cache
def facilities(setting: str) -> dict[str, str]:
    """`FACILITY=Organization/id,...` as {FACILITY (upper case): Organization/id}."""
    out = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, sep, target = item.partition("=")
        if not sep or not target.strip().startswith("Organization/"):
            raise ValueError(f"hl7_facilities: '{item}' is not FACILITY=Organization/id")
        out[name.strip().upper()] = target.strip()
    return out
