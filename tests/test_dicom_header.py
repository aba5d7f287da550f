"""The C-STORE fast path (integrations/dicom/header.py) against pydicom: for every bundled
test file it can read, the index row it makes equals the one made with pydicom; the files it
cannot read fall back (None), never a different answer."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pydicom.data
import pytest
from dicom_peers import ct

from integrations.dicom.dataset import (
    LAST,
    BadInstance,
    Levels,
    fast_row,
    index_row,
    raw_uids,
    read_header,
)
from integrations.dicom.header import scan

FILES = sorted(Path(os.path.dirname(pydicom.data.__file__), "test_files").glob("*.dcm"))


def _cases() -> list[tuple[str, bytes]]:
    out = [(f.name, f.read_bytes()) for f in FILES]
    for charset in ("ISO_IR 192", "GB18030", "GBK"):
        import io

        ds = ct(SpecificCharacterSet=charset, PatientName="Zhang^San=张乗^三亅",
                ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], InstanceNumber=-3)  # fmt: skip
        data = io.BytesIO()
        ds.save_as(data, enforce_file_format=True)
        out.append((charset, data.getvalue()))
    return out


@pytest.mark.parametrize(("name", "data"), _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_fast_path_makes_the_row_pydicom_makes_or_none(name: str, data: bytes) -> None:
    raw = scan(data, LAST)
    try:
        slow = index_row(read_header(data), "p", len(data), levels := Levels(), raw)
    except BadInstance:
        return  # no instance to index (no UIDs): the fast path must refuse it too
    if raw is None:
        return  # big endian, deflated, no Part-10 header: pydicom reads it
    assert raw_uids(raw) == (slow.study["uid"], slow.series["uid"], slow.instance["uid"])
    fast = fast_row(raw, "p", len(data), levels)
    if fast is None:
        return
    assert fast.study is slow.study and fast.series is slow.series
    expected = {**slow.instance, "attrs": orjson.loads(slow.instance["attrs"])}
    assert {**fast.instance, "attrs": orjson.loads(fast.instance["attrs"])} == expected


def test_the_fast_path_reads_most_bundled_files() -> None:
    """It must apply to the common case, or it buys nothing."""
    read = sum(scan(f.read_bytes(), LAST) is not None for f in FILES)
    assert read >= len(FILES) * 2 // 3


@pytest.mark.parametrize(("name", "data"), _cases(), ids=[c[0] for c in _cases()])
def test_metadata_from_raw_elements_is_what_pydicom_makes(name: str, data: bytes) -> None:
    """WADO-RS metadata made element by element from the raw header (web/metadata.py
    Converter) equals pydicom's to_json_dict of the whole header, or is not made (None)."""
    import io

    from pydicom import dcmread

    from integrations.dicom.web.metadata import THRESHOLD, Converter

    prefix = "B/bulk/"
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=THRESHOLD)
        expected = ds.to_json_dict(
            bulk_data_threshold=THRESHOLD,
            bulk_data_element_handler=lambda e: f"{prefix}{e.tag:08X}",
        )
    except Exception:  # noqa: BLE001 - what pydicom cannot convert, the fast path must not either
        expected = None
    converter = Converter()
    try:
        made = converter.instance(data, prefix)
        again = converter.instance(data, prefix)  # from the converter's cache this time
    except Exception:  # noqa: BLE001
        made = again = None
    if made is None:
        return
    assert expected is not None, name
    assert orjson.loads(orjson.dumps(made)) == orjson.loads(orjson.dumps(expected)), name
    assert again == made


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                    "1.2.840.10008.1.2.4.50"])  # fmt: skip
def test_the_c_store_part10_framing_is_pynetdicoms_byte_for_byte(syntax: str) -> None:
    """dimse/part10.py writes the File Meta Information that pynetdicom's
    Event.encoded_dataset() builds with pydicom (odd-length UIDs padded, PS3.5 §9.1)."""
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from integrations.dicom.dimse.part10 import file_meta

    for sop_class, sop in (("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"),
                           ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45")):  # fmt: skip
        expected = b"\0" * 128 + b"DICM" + encode_file_meta(
            create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop,
                             transfer_syntax=syntax)  # fmt: skip
        )
        assert file_meta(sop_class, sop, syntax) == expected
