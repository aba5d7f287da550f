"""Acknowledgements (HL7 v2.5 ch. 2 §2.9 and §2.15; MSA §2.15.8, ERR §2.15.5).

Original mode: AA accepted, AE error in the content (resending the same message fails again),
AR rejected for reasons outside its content (unsupported type or version, too large, unable to
store now: the sender decides whether to resend). Enhanced mode (MSH-15/16 valued): an accept
ACK once the message is committed (CA, CE, CR) and, when MSH-16 asks, an application ACK once
it is mapped. An ACK repeats the message's own charset (MSH-18) and version.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from .er7 import DEFAULT, Delimiters, escape

#: HL7 table 0357, message error condition codes
CODES = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


@dataclass(frozen=True)
class Err:
    """One error, as an ERR segment reports it: where (segment, its occurrence, field,
    component; 0 = not applicable), the code of table 0357 and a text for people."""

    code: int
    text: str
    segment: str = ""
    occurrence: int = 1
    field: int = 0
    component: int = 0

    @property
    def location(self) -> str:
        """`PID-7`, `OBX[3]-5.1`: how the operations view and the log name the place."""
        if not self.segment:
            return ""
        where = self.segment + (f"[{self.occurrence}]" if self.occurrence > 1 else "")
        if self.field:
            where += f"-{self.field}" + (f".{self.component}" if self.component else "")
        return where

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.text}" if where else self.text


@dataclass(frozen=True)
class Addressing:
    """What an ACK copies from the message it answers (MSH-3..6, -9, -10, -11, -12, -18)."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset: str = ""
    delimiters: Delimiters = DEFAULT


def timestamp() -> str:
    """DTM with the local offset (HL7 v2.5 §2.A.22)."""
    return datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")


def build(
    to: Addressing,
    code: str,
    errors: tuple[Err, ...] | list[Err] = (),
    text: str = "",
    enhanced: bool = False,
) -> str:
    """The ACK message (segments joined by CR). `code` is AA/AE/AR or, for an enhanced-mode
    accept ACK, CA/CE/CR; MSA-3 repeats the first error for senders older than v2.5 (Mirth's
    default ACKs do the same). An application ACK in enhanced mode asks for no ACK back
    (MSH-15/16 `NE`), so that ACKs are never acknowledged."""
    d = to.delimiters
    f = d.field
    version = to.version or "2.5"
    msh = [
        "MSH", d.encoding_characters, to.receiving_application, to.receiving_facility,
        to.sending_application, to.sending_facility, timestamp(), "",
        f"ACK{d.component}{to.event}{d.component}ACK" if to.event else "ACK",
        uuid.uuid4().hex[:20], to.processing_id or "P", version,
    ]  # fmt: skip
    if enhanced and code in ("AA", "AE", "AR"):
        msh += ["", "", "NE", "NE"]
    if to.charset:
        msh += [""] * (17 - len(msh)) + [escape(to.charset, d)]
    message = text or (str(errors[0]) if errors else "")
    msa = ["MSA", code, escape(to.control_id, d)]
    if message and code not in ("AA", "CA"):
        msa.append(escape(message, d))
    segments = [f.join(msh), f.join(msa)]
    segments += [err_segment(e, version, d) for e in errors]
    return "\r".join(segments) + "\r"


def err_segment(e: Err, version: str, d: Delimiters) -> str:
    """ERR-1 (ELD) for versions before 2.5, which know no other field; ERR-2 (location),
    ERR-3 (code, table 0357), ERR-4 (severity) and ERR-8 (user message) from 2.5 on."""
    c, s, f = d.component, d.subcomponent, d.field
    name = CODES.get(e.code, "")
    where = [e.segment, str(e.occurrence) if e.segment else "", str(e.field or "")]
    if _older_than_25(version):
        eld = c.join(where + [s.join((str(e.code), escape(name, d), "HL70357"))])
        return f.join(["ERR", eld])
    erl = c.join(where + ["", str(e.component or "")]).rstrip(c)
    code = c.join((str(e.code), escape(name, d), "HL70357"))
    return f.join(["ERR", "", erl, code, "E", "", "", "", escape(e.text, d)])


def _older_than_25(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (2, 5)
    except ValueError:
        return False
