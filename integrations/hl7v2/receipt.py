"""What the listener checks before it takes a message (the ACK path: cheap, no FHIR): MSH (type,
version, processing id, control id, ack modes), the segments its structure requires, and field
lengths. A failure becomes AR (not ours to process: unsupported type, event, version,
processing id) or AE (its content is wrong: resending it unchanged fails again)."""

from __future__ import annotations

from dataclasses import dataclass

from . import tables
from .ack import Addressing, Err
from .er7 import Message

#: message structures we map, with the events of each we map (HL7 table 0354 names the
#: structure of every event: ADT^A04 is an ADT_A01)
SUPPORTED: dict[str, frozenset[str]] = {
    "ADT_A01": frozenset({"A01", "A04", "A08", "A13"}),
    "ADT_A02": frozenset({"A02"}),
    "ADT_A03": frozenset({"A03"}),
    "ADT_A05": frozenset({"A05", "A14", "A28", "A31"}),
    "ADT_A09": frozenset({"A11"}),
    "ADT_A39": frozenset({"A40"}),
    "ORU_R01": frozenset({"R01"}),
    "ORM_O01": frozenset({"O01"}),
    "OML_O21": frozenset({"O21"}),
    "SIU_S12": frozenset({f"S{n}" for n in range(12, 27) if n != 25}),
    "MDM_T02": frozenset({"T02", "T04", "T06", "T08", "T10"}),
}
#: v2.3 (the oldest the IG's maps fit) to v2.8.2 (the newest hl7apy knows)
VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
                      "2.8.1", "2.8.2"})  # fmt: skip
#: MSH-11 processing ids (HL7 table 0103): production, debugging, training
PROCESSING = frozenset({"P", "D", "T"})
#: segments each structure needs before it can be mapped (HL7 v2.5 message definitions)
REQUIRED: dict[str, tuple[str, ...]] = {
    "ADT_A01": ("PID",), "ADT_A02": ("PID", "PV1"), "ADT_A03": ("PID", "PV1"),
    "ADT_A05": ("PID",), "ADT_A09": ("PID", "PV1"), "ADT_A39": ("PID", "MRG"),
    "ORU_R01": ("OBR",), "ORM_O01": ("ORC",), "OML_O21": ("ORC",), "SIU_S12": ("SCH",),
    "MDM_T02": ("TXA",),
}  # fmt: skip
#: MSH-10: 199 characters from v2.7 on (20 before; senders that use UUIDs need more)
MAX_CONTROL_ID = 199
#: any one field; text fields whose length is the message's (OBX-5, NTE-3, TXA content)
#: are bounded by the message size only
MAX_FIELD = 64 * 1024
_UNBOUNDED = frozenset({("OBX", 5), ("NTE", 3)})


@dataclass(frozen=True)
class Header:
    """MSH as the listener needs it."""

    addressing: Addressing
    kind: str  # MSH-9.1, e.g. ADT
    event: str  # MSH-9.2, e.g. A04
    structure: str | None  # MSH-9.3, else from table 0354
    #: the idempotency key's sender: sending facility and application (MSH-4, MSH-3): two
    #: systems of one hospital may number their messages alike
    sender: str
    control_id: str
    version: str
    accept_ack: str  # MSH-15 (table 0155: AL, NE, ER, SU), '' in original mode
    application_ack: str  # MSH-16

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 valued (HL7 v2.5 §2.9.3)."""
        return bool(self.accept_ack or self.application_ack)

    @property
    def type(self) -> str:
        return f"{self.kind}^{self.event}" if self.event else self.kind


def header(message: Message, charset: str = "") -> Header:
    msh = message.msh
    hd = [msh.composite(n) for n in (3, 4, 5, 6)]

    def name(c: object) -> str:
        # HD: namespace id, else universal id (an OID)
        return c[1] or c[2]  # type: ignore[index]

    kind, event, structure = msh.value(9, 1), msh.value(9, 2), msh.value(9, 3)
    version = msh.value(12, 1)
    facility, application = name(hd[1]), name(hd[0])
    addressing = Addressing(
        msh.field(3), msh.field(4), msh.field(5), msh.field(6), event, msh.value(10),
        msh.value(11, 1) or "P", version, charset, message.d,
    )  # fmt: skip
    return Header(
        addressing=addressing,
        kind=kind,
        event=event,
        structure=structure or tables.structure(kind, event),
        sender=f"{facility}/{application}" if facility else application,
        control_id=msh.value(10),
        version=version,
        accept_ack=msh.value(15).upper(),
        application_ack=msh.value(16).upper(),
    )


def refusal(h: Header) -> tuple[str, Err] | None:
    """AR for what is not ours to process, AE for an MSH that is wrong; None when MSH holds."""
    if not h.kind:
        return "AR", Err(200, "MSH-9 (message type) is empty", "MSH", 1, 9, 1)
    if h.structure is None or h.structure not in SUPPORTED:
        what = f"{h.type}" + (f" (structure {h.structure})" if h.structure else "")
        code = 201 if h.structure else 200
        return "AR", Err(code, f"{what} is not a message this server maps", "MSH", 1, 9)
    if h.event not in SUPPORTED[h.structure]:
        return "AR", Err(201, f"event {h.event} of {h.structure} is not mapped", "MSH", 1, 9, 2)
    if h.version not in VERSIONS:
        return "AR", Err(203, f"version '{h.version}' is not supported (2.3 to 2.8.2)",
                         "MSH", 1, 12)  # fmt: skip
    if h.addressing.processing_id not in PROCESSING:
        return "AR", Err(202, f"processing id '{h.addressing.processing_id}' is not P, D or T",
                         "MSH", 1, 11)  # fmt: skip
    if not h.control_id:
        return "AE", Err(101, "MSH-10 (message control id) is empty", "MSH", 1, 10)
    if len(h.control_id) > MAX_CONTROL_ID:
        return "AE", Err(102, f"MSH-10 is {len(h.control_id)} characters long, at most "
                              f"{MAX_CONTROL_ID} are allowed", "MSH", 1, 10)  # fmt: skip
    return None


def content_errors(message: Message, h: Header) -> list[Err]:
    """The required segments of the structure and field lengths (AE when any fails)."""
    assert h.structure is not None
    names = {s.name for s in message.segments}
    errors = [
        Err(100, f"{h.structure} requires a {name} segment", name)
        for name in REQUIRED.get(h.structure, ())
        if name not in names
    ]
    seen: dict[str, int] = {}
    for segment in message.segments:
        seen[segment.name] = seen.get(segment.name, 0) + 1
        if segment.name.startswith("Z") or segment.name == "TXA":
            continue
        for n, raw in enumerate(segment.fields):
            if len(raw) > MAX_FIELD and (segment.name, n) not in _UNBOUNDED:
                errors.append(Err(102, f"{len(raw)} characters, at most {MAX_FIELD} allowed",
                                  segment.name, seen[segment.name], n))  # fmt: skip
    return errors
