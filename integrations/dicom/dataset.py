"""Reading a Part-10 instance for the index: its UIDs, the attributes matched on, and the DICOM
JSON (PS3.18 Annex F) kept per level. Character sets are pydicom's (PS3.5 §6.1: ISO_IR 192,
GB18030, GBK and the ISO 2022 sets), so names are decoded once, here."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydicom import Dataset
from pydicom.filereader import read_partial
from pydicom.valuerep import PersonName

from .attributes import INSTANCE, SERIES, STUDY
from .header import Raw, json_value
from .storage.index import InstanceRow

#: PS3.5 §9.1: a UID is at most 64 characters of digits and dots, components without leading 0
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: tags the index reads: everything up to the pixel data (large values are not read)
_DEFER = 4096


class BadInstance(ValueError):
    """The bytes are not an instance the store can keep; says what and which attribute."""

    def __init__(self, reason: str, tag: int | None = None) -> None:
        super().__init__(reason)
        self.tag = tag


def valid_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def read_header(data: bytes) -> Dataset:
    """The instance's attributes up to the last one the index keeps (the rest, often a large
    private group, is not parsed: this runs for every C-STORE); BadInstance for what is not
    Part-10 DICOM."""
    try:
        ds = read_partial(io.BytesIO(data), stop_when=_past_indexed, defer_size=_DEFER)
        ds.file_meta.TransferSyntaxUID  # noqa: B018 - a Part-10 file has one
    except Exception as exc:  # pydicom raises many kinds (zlib, struct, EOF, Invalid...)
        raise BadInstance(f"not a DICOM Part-10 instance: {str(exc)[:200]}") from None
    return ds


class Levels:
    """The study and series parts of index rows, remembered by the raw bytes of their
    attributes: the instances of a study repeat them, and decoding them again for every
    instance would cost most of a C-STORE (pydicom converts element by element)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._lock = threading.Lock()  # associations run in threads of their own

    def peek(self, key: tuple[Any, ...] | None) -> dict[str, Any] | None:
        with self._lock:
            return self._seen.get(key) if key is not None else None

    def get(self, key: tuple[Any, ...] | None, make: Callable[[], dict[str, Any]]) -> dict:
        """The part for `key` (the raw bytes of its attributes; None: not remembered)."""
        found = self.peek(key)
        if found is None:
            found = make()
            if key is not None:
                with self._lock:
                    if len(self._seen) >= self.size:
                        self._seen.pop(next(iter(self._seen)))
                    self._seen[key] = found
        return found


_CHARSET = frozenset({0x00080005})
_STUDY_KEY = STUDY | {0x0020000D} | _CHARSET
_SERIES_KEY = SERIES | {0x0020000D} | _CHARSET


def level_key(raw: Raw | None, tags: frozenset[int]) -> tuple[Any, ...] | None:
    """The raw bytes of `tags` as read by header.scan: equal bytes, equal part."""
    if raw is None:
        return None
    return (tags, *(raw.values.get(t, ("", None))[1] for t in sorted(tags)))


def fast_row(raw: Raw, path: str, size: int, levels: Levels) -> InstanceRow | None:
    """The index row from the raw attributes alone, when the study and series parts are
    remembered (every instance of a study after its first) and the instance's attributes
    are of simple VRs; else None (then index_row, with pydicom). Same result either way
    (tests/test_dicom_header.py)."""
    study = levels.peek(level_key(raw, _STUDY_KEY))
    series = levels.peek(level_key(raw, _SERIES_KEY))
    if study is None or series is None:
        return None
    attrs: dict[str, Any] = {}
    for tag in sorted(INSTANCE):
        found = raw.values.get(tag)
        if found is not None:
            value = json_value(*found)
            if value is None:
                return None
            attrs[f"{tag:08X}"] = value
    number = attrs.get("00200013", {}).get("Value")
    frames = attrs.get("00280008", {}).get("Value")
    sop_uid = _raw_uid(raw, 0x00080018, "SOPInstanceUID")
    instance = {
        "uid": sop_uid,
        "series_uid": series["uid"],
        "study_uid": study["uid"],
        "sop_class": _raw_uid(raw, 0x00080016, "SOPClassUID"),
        "transfer_syntax": raw.syntax,
        "number": number[0] if number else None,
        "frames": max(frames[0], 1) if frames else 1,
        "path": path,
        "size": size,
        "attrs": orjson.dumps(attrs),
    }
    return InstanceRow(study, series, instance)


def raw_uids(raw: Raw) -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs from the raw attributes, checked as uids() does."""
    return (
        _raw_uid(raw, 0x0020000D, "StudyInstanceUID"),
        _raw_uid(raw, 0x0020000E, "SeriesInstanceUID"),
        _raw_uid(raw, 0x00080018, "SOPInstanceUID"),
    )


def _raw_uid(raw: Raw, tag: int, name: str) -> str:
    value = raw.text(tag) or ""
    if not value:
        raise BadInstance(f"{name} ({tag:08X}) is missing", tag)
    if not valid_uid(value):
        raise BadInstance(f"{name} ({tag:08X}) is not a valid UID: '{value[:70]}'", tag)
    return value


def _past_indexed(tag: Any, vr: Any, length: int) -> bool:
    return int(tag) > LAST


#: the last attribute any level keeps (attributes.py)
LAST = max(STUDY | SERIES | INSTANCE)


def index_row(
    ds: Dataset, path: str, size: int, levels: Levels | None = None, raw: Raw | None = None
) -> InstanceRow:
    """What the index keeps of one instance; BadInstance when a UID it needs is missing or
    malformed (PS3.4 C.4.2.1.4.1: Study, Series and SOP Instance UID are Type 1). With `raw`
    (header.scan of the same bytes) its study and series parts are remembered in `levels`."""
    study_uid = _uid(ds, 0x0020000D, "StudyInstanceUID")
    series_uid = _uid(ds, 0x0020000E, "SeriesInstanceUID")
    sop_uid = _uid(ds, 0x00080018, "SOPInstanceUID")
    sop_class = _uid(ds, 0x00080016, "SOPClassUID")
    transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    levels = levels or Levels(1)
    study = levels.get(level_key(raw, _STUDY_KEY), lambda: _study(ds))
    series = levels.get(level_key(raw, _SERIES_KEY), lambda: _series(ds))
    instance = {
        "uid": sop_uid,
        "series_uid": series_uid,
        "study_uid": study_uid,
        "sop_class": sop_class,
        "transfer_syntax": transfer_syntax,
        "number": _int(ds, "InstanceNumber"),
        "frames": max(frames, 1),
        "path": path,
        "size": size,
        "attrs": level_json(ds, INSTANCE),
    }
    return InstanceRow(study, series, instance)


def _study(ds: Dataset) -> dict[str, Any]:
    study_uid = _uid(ds, 0x0020000D, "StudyInstanceUID")
    return {
        "uid": study_uid,
        "patient_id": _text(ds, "PatientID"),
        "issuer": _text(ds, "IssuerOfPatientID"),
        "patient_name": match_name(ds.get("PatientName")),
        "birth_date": _text(ds, "PatientBirthDate"),
        "sex": _text(ds, "PatientSex"),
        "accession": _text(ds, "AccessionNumber"),
        "study_date": _text(ds, "StudyDate"),
        "study_time": _text(ds, "StudyTime"),
        "study_id": _text(ds, "StudyID"),
        "description": _text(ds, "StudyDescription"),
        "referring": match_name(ds.get("ReferringPhysicianName")),
        "attrs": level_json(ds, STUDY),
    }


def _series(ds: Dataset) -> dict[str, Any]:
    return {
        "uid": _uid(ds, 0x0020000E, "SeriesInstanceUID"),
        "study_uid": _uid(ds, 0x0020000D, "StudyInstanceUID"),
        "modality": _text(ds, "Modality"),
        "number": _int(ds, "SeriesNumber"),
        "description": _text(ds, "SeriesDescription"),
        "attrs": level_json(ds, SERIES),
    }


def uids(ds: Dataset) -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs, checked."""
    return (
        _uid(ds, 0x0020000D, "StudyInstanceUID"),
        _uid(ds, 0x0020000E, "SeriesInstanceUID"),
        _uid(ds, 0x00080018, "SOPInstanceUID"),
    )


def level_json(ds: Dataset, tags: frozenset[int]) -> bytes:
    """DICOM JSON of those of `tags` the instance has (names decoded in its character set),
    as UTF-8 bytes (so SpecificCharacterSet becomes ISO_IR 192)."""
    part = Dataset()
    for tag in sorted(tags):
        if tag in ds:
            part[tag] = ds[tag]
    try:
        out = part.to_json_dict(bulk_data_threshold=10**9)
    except Exception as exc:  # a value its VR cannot hold: the sender's error
        raise BadInstance(f"an attribute cannot be represented: {exc}") from None
    if "00080005" in out:
        out["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return orjson.dumps(out)


def match_name(value: Any) -> str:
    """A PN as C-FIND and QIDO match it: its component groups (alphabetic, ideographic,
    phonetic) joined by '=', upper case, trailing empty components dropped."""
    if value is None or value == "":
        return ""
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    groups = [name.alphabetic, name.ideographic, name.phonetic]
    return "=".join(normal_name(g) for g in groups).rstrip("=")


def normal_name(group: str) -> str:
    return group.rstrip("^ ").upper()


def _uid(ds: Dataset, tag: int, name: str) -> str:
    value = str(ds.get(tag).value if tag in ds else "").strip("\0 ")
    if not value:
        raise BadInstance(f"{name} ({tag:08X}) is missing", tag)
    if not valid_uid(value):
        raise BadInstance(f"{name} ({tag:08X}) is not a valid UID: '{value[:70]}'", tag)
    return value


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, PersonName):
        return str(value)
    if not isinstance(value, str):
        value = "\\".join(str(v) for v in value) if hasattr(value, "__iter__") else str(value)
    return value.strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def check_complete(data: bytes, ds: Dataset) -> None:
    """BadInstance unless the dataset's elements end exactly where the bytes do (PS3.5 §7.1;
    sequences and encapsulated pixel data of undefined length by their delimiters, §7.5).
    pydicom stops quietly at a truncation, so an upload cut short would otherwise be kept."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax == "1.2.840.10008.1.2.1.99":  # deflated: the walk would need to inflate
        return
    explicit = syntax != "1.2.840.10008.1.2"
    little = syntax != "1.2.840.10008.1.2.2"
    start = 132 + 12 + int.from_bytes(data[140:144], "little")
    try:
        end = _walk(data, start, len(data), explicit, little, top=True)
    except IndexError:
        end = -1
    if end != len(data):
        raise BadInstance("the instance is truncated or malformed: its elements do not end "
                          "where the data does")  # fmt: skip


_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
         b"UV"}  # fmt: skip
_UNDEFINED = 0xFFFFFFFF


def _walk(data: bytes, pos: int, end: int, explicit: bool, little: bool, top: bool) -> int:
    """Walk elements from `pos` until `end` (or an Item Delimitation Item); the position
    after the last one. IndexError when the bytes run out inside an element."""
    order: Literal["little", "big"] = "little" if little else "big"
    while pos < end:
        if pos + 8 > len(data):
            raise IndexError(pos)
        group = int.from_bytes(data[pos : pos + 2], order)
        element = int.from_bytes(data[pos + 2 : pos + 4], order)
        if group == 0xFFFE:  # item delimitation (end of an item of undefined length)
            return pos + 8 if element == 0xE00D and not top else -1
        vr = data[pos + 4 : pos + 6]
        if explicit and vr.isalpha() and vr.isupper():
            if vr in _LONG:
                length = int.from_bytes(data[pos + 8 : pos + 12], order)
                pos += 12
            else:
                length = int.from_bytes(data[pos + 6 : pos + 8], order)
                pos += 8
        else:
            length = int.from_bytes(data[pos + 4 : pos + 8], order)
            pos += 8
        if length == _UNDEFINED:
            pos = _items(data, pos, explicit, little)
        else:
            pos += length
            if pos > len(data):
                raise IndexError(pos)
    return pos


def _items(data: bytes, pos: int, explicit: bool, little: bool) -> int:
    """Items (or fragments) of a value of undefined length up to its Sequence Delimitation
    Item; the position after it."""
    order: Literal["little", "big"] = "little" if little else "big"
    while True:
        if pos + 8 > len(data):
            raise IndexError(pos)
        group = int.from_bytes(data[pos : pos + 2], order)
        element = int.from_bytes(data[pos + 2 : pos + 4], order)
        length = int.from_bytes(data[pos + 4 : pos + 8], order)
        pos += 8
        if group != 0xFFFE:
            raise IndexError(pos)
        if element == 0xE0DD:
            return pos
        if length == _UNDEFINED:
            pos = _walk(data, pos, len(data), explicit, little, top=False)
            if pos < 0:
                raise IndexError(pos)
        else:
            pos += length
            if pos > len(data):
                raise IndexError(pos)
