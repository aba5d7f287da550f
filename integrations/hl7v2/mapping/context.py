"""What every segment map of one message shares: the message, its header, the settings, the
plan being built, and the resources several segments name (the sending facility, practitioners:
the IG asks that the same doctor in PV1-7, ORC-12 and OBR-16 be one Practitioner)."""

from __future__ import annotations

from functools import cache, lru_cache
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
#: segments that extend the one before them: the ROL/PRT after them belong to that one
_EXTENSIONS = frozenset({"PD1", "PV2", "IN2", "IN3", "ARV"})


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
        #: ROL and PRT segments by the segment they follow (id), see `roles`
        self._roles: dict[int, list[Segment]] = {}
        counts: dict[str, int] = {}
        anchor = 0
        for segment in message.segments:
            name = segment.name
            counts[name] = counts.get(name, 0) + 1
            self._occurrence[id(segment)] = counts[name]
            if name in ("ROL", "PRT"):
                self._roles.setdefault(anchor, []).append(segment)
            elif name not in _EXTENSIONS:
                anchor = id(segment)

    def roles(self, segment: Segment) -> list[Segment]:
        """The ROL and PRT segments that belong to `segment` by the message structure: those
        after it and the segments that extend it (PD1 of PID, PV2 of PV1, IN2/IN3 of IN1),
        HL7 v2.5 §3.3.1 ADT_A01 (PID [PD1] [{ROL}], PV1 [PV2] [{ROL}], PROCEDURE: PR1 [{ROL}])."""
        return self._roles.get(id(segment), [])

    def subject_key(self) -> tuple[str, str]:
        """(assigning authority, value) of the patient's primary identifier (the first PID-3):
        the scope of the identifiers we give what the HIS sends without one (allergies)."""
        pid = self.message.first("PID")
        c = pid.composite(3) if pid is not None else None
        if c is None or not c[1]:
            return self.facility, ""
        return dt.authority(c, 4) or self.facility, c[1]

    def scope(self, encounter: Op | None) -> tuple[str, str]:
        """(assigning authority, `visit/<PV1-19>` or `patient/<PID-3>`): what a diagnosis or a
        procedure sent without an identifier of its own belongs to, for the one we derive."""
        pv1 = self.message.first("PV1")
        if encounter is not None and pv1 is not None:
            visit = pv1.composite(19)
            return dt.authority(visit, 4) or self.facility, f"visit/{visit[1]}"
        authority, person = self.subject_key()
        return authority, f"patient/{person}"

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
                 rep: int = 0, v2_table: str = "") -> dict[str, Any] | None:  # fmt: skip
        return dt.codeable(segment.composite(field, rep), self.facility, table, v2_table)

    def system(self, kind: str, authority: str = "") -> str:
        """The identifier system of things a hospital numbers (orders, visits' alternates,
        practitioners, documents): per assigning authority, else the sending facility."""
        return _system(kind, authority or self.facility)

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
        return reference(op, self.facility)

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
        return reference(op, display or c[1])

    def named_organization(self, kind: str, name: str, number: str, authority: str,
                           address: dict[str, Any] | None = None
                           ) -> dict[str, str] | None:  # fmt: skip
        """An Organization a message names (a primary facility, an insurer) as a reference,
        found or created by its identifier `number` in the system of `kind` and `authority`
        (IG XON[Organization]: .1 name, .10, else .3, identifier, .6 assigning authority);
        a name without a number is a display only."""
        if not number:
            return {"display": name} if name else None
        system = self.system(kind, authority)
        resource: dict[str, Any] = {"resourceType": "Organization", "active": True,
                                    "identifier": [{"system": system, "value": number}]}
        if name:
            resource["name"] = name
        if address:
            resource["address"] = [address]
        op = self.plan.add(Op(f"organization:{system}|{number}", "Organization", resource,
                              match=token("identifier", system, number), mode="keep"))  # fmt: skip
        return reference(op, name or number)

    def xon(self, c: Composite, kind: str) -> dict[str, str] | None:
        """XON -> a reference to the Organization it names (`named_organization`)."""
        if not c:
            return None
        return self.named_organization(kind, c[1], c[10] or c[3], dt.authority(c, 6))


@lru_cache(maxsize=1024)
def _system(kind: str, authority: str) -> str:
    return f"{SID}{kind}/{quote(authority, safe='')}"


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
