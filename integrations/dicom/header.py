"""A quick read of a Part-10 instance's top-level attributes as raw bytes, for the C-STORE
path: pydicom builds an object per element, which costs about as much as pynetdicom's whole
handling of the message. Little endian syntaxes only (PS3.5 §7.1.2, §7.1.3, Annex A); others
get None and the caller reads them with pydicom."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR

IMPLICIT = "1.2.840.10008.1.2"
_NOT_LITTLE = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
         b"UV"}  # fmt: skip
_UNDEFINED = 0xFFFFFFFF
#: an explicit VR little endian element's head: group, element, VR, 16-bit length
_HEAD = struct.Struct("<HH2sH")
_LENGTH32 = struct.Struct("<I")


@dataclass(frozen=True)
class Raw:
    """The transfer syntax and {tag: (VR, value bytes)} of the top-level attributes read."""

    syntax: str
    values: dict[int, tuple[str, bytes]]

    def text(self, tag: int) -> str | None:
        """A single-valued string attribute, as pydicom strips it (None when absent)."""
        found = self.values.get(tag)
        if found is None:
            return None
        return found[1].decode("ascii", "replace").strip(" \0")


def scan(data: bytes, last: int) -> Raw | None:
    """The attributes up to tag `last`; None when the fast read does not apply (another
    syntax, a malformed or truncated header)."""
    try:
        return _scan(data, last)
    except (IndexError, ValueError, KeyError, struct.error):
        return None


def _scan(data: bytes, last: int) -> Raw | None:
    if data[128:132] != b"DICM":
        return None
    pos, syntax = 132, ""
    while data[pos : pos + 2] == b"\x02\x00":  # File Meta: always Explicit VR Little Endian
        tag, vr, value, pos = _element(data, pos, explicit=True)
        if tag == 0x00020010:
            syntax = value.decode("ascii").strip(" \0")
    if not syntax or syntax in _NOT_LITTLE:
        return None
    explicit = syntax != IMPLICIT
    if explicit:
        return Raw(syntax, _explicit(data, pos, last))
    values: dict[int, tuple[str, bytes]] = {}
    while pos < len(data):
        tag = int.from_bytes(data[pos : pos + 2], "little") << 16 | int.from_bytes(
            data[pos + 2 : pos + 4], "little"
        )
        if tag > last:
            break
        tag, vr, value, pos = _element(data, pos, explicit)
        if vr:
            values[tag] = (vr, value)
    return Raw(syntax, values)


def _explicit(data: bytes, pos: int, last: int) -> dict[int, tuple[str, bytes]]:
    """_element's loop for Explicit VR Little Endian, the syntax nearly every sender uses,
    unrolled: a CT header walks past ~200 (mostly private) elements per C-STORE."""
    values: dict[int, tuple[str, bytes]] = {}
    end = len(data)
    head, length32 = _HEAD.unpack_from, _LENGTH32.unpack_from
    while pos < end:
        group, element, code, length = head(data, pos)
        tag = group << 16 | element
        if tag > last:
            break
        if code in _LONG:
            length = length32(data, pos + 8)[0]
            pos += 12
        elif code.isalpha() and code.isupper():
            pos += 8
        else:
            raise ValueError("not an explicit VR")
        if length == _UNDEFINED:
            stop = _skip_items(data, pos, True)
            values[tag] = ("SQ", data[pos:stop])
        else:
            stop = pos + length
            if stop > end:
                raise IndexError(pos)
            values[tag] = (code.decode(), data[pos:stop])
        pos = stop
    return values


def _element(data: bytes, pos: int, explicit: bool) -> tuple[int, str, bytes, int]:
    """(tag, VR, value bytes, next position); a sequence of undefined length is walked to
    its delimiter."""
    tag = int.from_bytes(data[pos : pos + 2], "little") << 16 | int.from_bytes(
        data[pos + 2 : pos + 4], "little"
    )
    code = data[pos + 4 : pos + 6]
    if explicit:
        if not (code.isalpha() and code.isupper()):
            raise ValueError("not an explicit VR")
        if code in _LONG:
            length = int.from_bytes(data[pos + 8 : pos + 12], "little")
            pos += 12
        else:
            length = int.from_bytes(data[pos + 6 : pos + 8], "little")
            pos += 8
        vr = code.decode()
    else:
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8
        vr = _implicit_vr(tag)
    if length == _UNDEFINED:
        end = _skip_items(data, pos, explicit)
        return tag, "SQ", data[pos:end], end
    if pos + length > len(data):
        raise IndexError(pos)
    return tag, vr, data[pos : pos + length], pos + length


def _implicit_vr(tag: int) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return ""  # private or unknown: not one the index reads
    return vr if " or " not in vr else ""


def _skip_items(data: bytes, pos: int, explicit: bool) -> int:
    """Past the items of a value of undefined length and its Sequence Delimitation Item."""
    while True:
        group = int.from_bytes(data[pos : pos + 2], "little")
        element = int.from_bytes(data[pos + 2 : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8
        if group != 0xFFFE:
            raise ValueError("not an item")
        if element == 0xE0DD:
            return pos
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an item of undefined length: its elements up to the delimiter
            if data[pos : pos + 4] == b"\xfe\xff\x0d\xe0":
                pos += 8
                break
            _, _, _, pos = _element(data, pos, explicit)


def json_value(vr: str, value: bytes) -> dict[str, Any] | None:
    """DICOM JSON (PS3.18 F.2) of a value of the simple VRs the instance level keeps, or None
    when it needs pydicom (character sets, person names, odd numbers)."""
    if vr in ("US", "SS", "UL", "SL"):
        size = 2 if vr in ("US", "SS") else 4
        signed = vr in ("SS", "SL")
        numbers = [int.from_bytes(value[i : i + size], "little", signed=signed)
                   for i in range(0, len(value) - size + 1, size)]  # fmt: skip
        return {"vr": vr, "Value": numbers} if numbers else {"vr": vr}
    if vr not in ("CS", "UI", "DA", "TM", "IS", "DT", "AS"):
        return None
    text = value.decode("ascii")
    text = text.rstrip("\0 ") if vr == "UI" else text.strip(" ")
    if not text:
        return {"vr": vr}
    parts = text.split("\\")  # components keep their padding, as pydicom gives them
    if vr == "IS":
        if not all(p.lstrip("+-").isdigit() for p in parts):
            return None
        return {"vr": vr, "Value": [int(p) for p in parts]}
    return {"vr": vr, "Value": parts}
