"""WADO-RS metadata (PS3.18 §10.4.1.1.2): each instance as DICOM JSON, bulk data (Pixel Data,
large binary values) as BulkDataURIs. Made once per instance and kept in the index, since
pydicom takes milliseconds per instance: by the syncer while the listener is idle, or by the
first request that needs it."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.dataelem import DataElement

from ..storage.index import Index
from ..store import InstanceStore

log = logging.getLogger("integrations.dicom")
#: stands for the DICOMweb base URL in kept metadata; replaced per request (bulk_base)
BASE = b"@@DICOMWEB_BASE@@"
#: binary values longer than this are bulk data, shorter ones InlineBinary
THRESHOLD = 1024
_ENCAPSULATED_NOT = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                     "1.2.840.10008.1.2.1.99"}  # fmt: skip


def instance_metadata(store: InstanceStore, row: dict[str, Any]) -> bytes:
    """One instance's metadata (with BASE in its BulkDataURIs)."""
    data = store.files.read(row["path"])
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=THRESHOLD)
    prefix = (
        f"{BASE.decode()}/studies/{row['study_uid']}/series/{row['series_uid']}"
        f"/instances/{row['uid']}/bulk/"
    )

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
    made = [(r["uid"], instance_metadata(store, r)) for r in rows if r["metadata"] is None]
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
