"""On-demand validation with hl7apy (`hl7 check`): the message's structure (groups, segment
order and cardinality) and field datatypes, STRICT. hl7apy parses ~33 ORU/s (design note
integrations.md §1.7), so it never runs on the ACK path or in the mapper."""

from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from . import tables
from .charset import CharsetError, decode
from .er7 import Message, ParseError


def validate(raw: bytes, default_charset: str = "") -> tuple[list[str], list[str]]:
    """(problems, Z-segments set aside). The structure comes from MSH-9.3, else from the
    event (table 0354): hl7apy finds no groups without it."""
    try:
        decoded = decode(raw, default_charset)
        message = Message.parse(decoded.text, decoded.codec)
    except (CharsetError, ParseError) as exc:
        return [str(exc)], []
    msh = message.msh
    kind, event = msh.value(9, 1), msh.value(9, 2)
    structure = msh.value(9, 3) or tables.structure(kind, event)
    kept = [s.text() for s in message.segments if s.name.startswith("Z")]
    segments = [s for s in message.segments if not s.name.startswith("Z")]
    if structure and not msh.value(9, 3):
        c = message.d.component
        msh.fields[9] = c.join((kind, event, structure))
    text = "\r".join(s.text() for s in segments)
    version = msh.value(12, 1)
    try:
        parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True,
                               force_validation=False)  # fmt: skip
        parsed.validate()
    except HL7apyException as exc:
        return [f"hl7apy ({version}, {structure}): {type(exc).__name__}: {exc}"], kept
    except Exception as exc:  # hl7apy raises plain errors for some malformed input
        return [f"hl7apy ({version}, {structure}): {type(exc).__name__}: {exc}"], kept
    return [], kept
