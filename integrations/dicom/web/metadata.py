"""WADO-RS metadata (PS3.18 §10.4.1.1.2): each instance as DICOM JSON, bulk data (Pixel Data,
large binary values) as BulkDataURIs. Made once per instance and kept in the index: by the
syncer while the listener is idle, or by the first request that needs it.

pydicom converts element by element (~5 ms for a CT header: a series of 1,000 took 5 s), but
the instances of a series repeat most of their elements byte for byte. So the elements are
read raw (header.scan) and each distinct (character set, tag, VR, bytes) is converted by
pydicom once per request (Converter); the result is pydicom's own, element for element
(tests/test_dicom_header.py compares them). Headers the raw read does not cover (implicit VR,
big endian, deflated, UN elements whose VR pydicom would look up by private creator) take
pydicom's whole-dataset path."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import orjson
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag

from ..header import IMPLICIT, json_value, scan
from ..storage.index import Index
from ..store import InstanceStore

log = logging.getLogger("integrations.dicom")
#: stands for the DICOMweb base URL in kept metadata; replaced per request (bulk_base)
BASE = b"@@DICOMWEB_BASE@@"
#: binary values longer than this are bulk data, shorter ones InlineBinary
THRESHOLD = 1024
_ENCAPSULATED_NOT = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                     "1.2.840.10008.1.2.1.99"}  # fmt: skip


#: the raw read stops before the pixel data (float, double float or integer: 7FE0,0008-0010)
_BEFORE_PIXELS = 0x7FE00007
_CHARSET = 0x00080005


class Converter:
    """DICOM JSON of raw elements, each distinct one converted by pydicom once."""

    def __init__(self) -> None:
        self._known: dict[tuple[bytes, int, str, bytes], dict[str, Any]] = {}

    def instance(self, data: bytes, prefix: str) -> dict[str, Any] | None:
        """The top-level elements before the pixel data as to_json_dict gives them, or None
        when the raw read does not apply (then pydicom reads the whole header)."""
        raw = scan(data, _BEFORE_PIXELS)
        if raw is None or raw.syntax == IMPLICIT:
            return None
        charset = raw.values.get(_CHARSET, ("CS", b""))[1]
        out: dict[str, Any] = {}
        for tag, (vr, value) in raw.values.items():
            if vr == "UN":
                return None
            key = (charset, tag, vr, value)
            found = self._known.get(key)
            if found is None:
                # numbers, UIDs, codes, dates: without pydicom when header.json_value can
                found = json_value(vr, value) or _convert(charset, tag, vr, value, prefix)
                if "BulkDataURI" not in found:  # names this instance: not shared
                    self._known[key] = found
            out[f"{tag:08X}"] = found
        return out


def _convert(charset: bytes, tag: int, vr: str, value: bytes, prefix: str) -> dict[str, Any]:
    """One raw element as pydicom's to_json_dict converts it, in its character set."""
    elements: dict[BaseTag, DataElement | RawDataElement] = {
        Tag(tag): RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    }
    if charset and tag != _CHARSET:
        elements[Tag(_CHARSET)] = RawDataElement(Tag(_CHARSET), "CS", len(charset), charset, 0,
                                            False, True)  # fmt: skip
    ds = Dataset(elements)

    def bulk(element: DataElement) -> str:
        return f"{prefix}{element.tag:08X}"

    out = ds.to_json_dict(bulk_data_threshold=THRESHOLD, bulk_data_element_handler=bulk)
    return out.get(f"{tag:08X}", {"vr": vr})


def instance_metadata(
    store: InstanceStore, row: dict[str, Any], converter: Converter | None = None
) -> bytes:
    """One instance's metadata (with BASE in its BulkDataURIs)."""
    data = store.files.read(row["path"])
    prefix = (
        f"{BASE.decode()}/studies/{row['study_uid']}/series/{row['series_uid']}"
        f"/instances/{row['uid']}/bulk/"
    )
    try:
        out = (converter or Converter()).instance(data, prefix)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert: its own path decides
        out = None
    if out is None:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=THRESHOLD)

        def bulk(element: DataElement) -> str:
            return f"{prefix}{element.tag:08X}"

        out = ds.to_json_dict(bulk_data_threshold=THRESHOLD, bulk_data_element_handler=bulk)
    if "00080005" in out:
        out["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    if "00280010" in out:  # an image: its Pixel Data follows the header
        encapsulated = row["transfer_syntax"] not in _ENCAPSULATED_NOT
        bits = ((out.get("00280100") or {}).get("Value") or [16])[0]
        vr = "OB" if encapsulated or bits <= 8 else "OW"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{prefix}7FE00010"}
    return orjson.dumps(out)


def metadata(store: InstanceStore, rows: list[dict[str, Any]]) -> list[bytes]:
    """The metadata of these instances, made (and kept) where it is missing."""
    converter = Converter()
    made = [(r["uid"], instance_metadata(store, r, converter))
            for r in rows if r["metadata"] is None]  # fmt: skip
    if made:
        store.index.put_metadata(made)
    new = dict(made)
    return [r["metadata"] if r["metadata"] is not None else new[r["uid"]] for r in rows]


def warm(store: InstanceStore, stop: Callable[[], bool], batch: int = 50) -> int:
    """Make missing metadata until there is none or `stop()` (new instances arrived)."""
    done = 0
    index: Index = store.index
    while not stop():
        rows = index.without_metadata(batch)
        if not rows:
            break
        try:
            metadata(store, rows)
        except Exception:
            log.exception("making WADO-RS metadata failed")
            break
        done += len(rows)
    return done


def bulk_base(data: bytes, base: str) -> bytes:
    return data.replace(BASE, base.encode())
