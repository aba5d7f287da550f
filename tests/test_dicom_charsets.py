"""Chinese names through C-STORE in each character set a Chinese modality sends (PS3.5 §6.1:
ISO_IR 192 (UTF-8), GB18030, GBK): stored byte for byte, decoded once, and answered in UTF-8
by QIDO-RS, C-FIND and the Patient created for them; both PN groups kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dicom_peers import Server, ct, dcmtk, need, start_server
from pydicom import dcmread

from fhir_server.services import Parts

#: 亅 and 乗 have '|' (0x7C) and '\' (0x5C) as GBK trail bytes: split before decoding, a
#: name falls apart at the backslash, DICOM's value delimiter (integrations.md §1.8)
NAME = "Zhang^Sanfeng=张乗^三亅"
CODECS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030", "GBK": "gbk"}


@pytest.fixture
def server(tmp_path: Path, parts: Parts) -> Iterator[Server]:
    yield from start_server(tmp_path, parts)


@pytest.mark.parametrize("charset", sorted(CODECS))
def test_a_chinese_name_survives_each_character_set(
    server: Server, tmp_path: Path, charset: str
) -> None:
    need("storescu")
    ds = ct(PatientID=f"P-{charset}", SpecificCharacterSet=charset, PatientName=NAME,
            StudyDescription="胸部CT平扫")  # fmt: skip
    path = tmp_path / "cn.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert "张乗".encode(CODECS[charset]) in raw  # the file really is in that charset
    done = dcmtk("storescu", "-aec", server.ae_title, "127.0.0.1", str(server.port), str(path))
    assert done.returncode == 0, done.stderr
    server.settle()
    row = server.dicom.index.instance(str(ds.SOPInstanceUID))
    kept = server.dicom.store.files.read(row["path"])
    assert "张乗".encode(CODECS[charset]) in kept  # unchanged, in its own charset
    qido = server.client.get("/dicom-web/studies", params={"PatientID": f"P-{charset}",
                                                           "includefield": "StudyDescription"})
    item = qido.json()[0]
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "Zhang^Sanfeng", "Ideographic": "张乗^三亅"}]
    assert item["00081030"]["Value"] == ["胸部CT平扫"]
    assert item["00080005"]["Value"] == ["ISO_IR 192"]  # the JSON is UTF-8
    found = server.client.get("/dicom-web/studies", params={"PatientName": "张乗*"}).json()
    assert [f["00100020"]["Value"] for f in found] == [[f"P-{charset}"]]
    patient = server.client.get("/fhir/Patient", params={
        "identifier": f"P-{charset}"}).json()["entry"][0]["resource"]  # fmt: skip
    assert patient["name"][0] == {"use": "official", "text": "张乗三亅", "family": "张乗",
                                  "given": ["三亅"]}  # fmt: skip
    assert patient["name"][1]["family"] == "Zhang" and patient["name"][1]["given"] == ["Sanfeng"]
    assert server.client.get("/fhir/Patient", params={"name": "张乗"}).json()["total"] == 1
    need("findscu")
    out = tmp_path / "find"
    out.mkdir()
    done = dcmtk("findscu", "-S", "-aec", server.ae_title, "-X", "-od", str(out), "-k",
                 "QueryRetrieveLevel=STUDY", "-k", f"PatientID=P-{charset}", "-k", "PatientName",
                 "127.0.0.1", str(server.port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = dcmread(next(out.glob("*.dcm")))
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == NAME
