"""The DIMSE service against real peers (issue 13): dcmtk's storescu, findscu, movescu and
getscu, and Orthanc pushing to us and being pulled from; the ImagingStudy each push writes;
refusals (unknown AE, too many associations, bad datasets, half-sent datasets)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicom_peers import (
    Server,
    ct,
    dcmtk,
    free_port,
    need,
    peer,
    start_orthanc,
    start_server,
    write_study,
)
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, Verification

from fhir_server import cli
from fhir_server.services import Parts
from integrations.dicom.dimse.pull import pull


@pytest.fixture
def server(tmp_path: Path, parts: Parts) -> Iterator[Server]:
    # a hospital's patient IDs under their own system (the rule the HL7 v2 adapter shares)
    yield from start_server(tmp_path, parts, identifier_systems="HOSP1=urn:oid:1.2.156.1")


def test_every_association_socket_runs_with_tcp_nodelay(server: Server) -> None:
    """integrations.md §2.2: without it each C-STORE waits ~40 ms for a delayed ACK."""
    from integrations.dicom.dimse.network import NoDelayAE

    ae = NoDelayAE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="FHIRSCP")
    assert assoc.is_established
    ours = assoc.dul.socket.socket  # the requestor side (our SCU, C-MOVE sub-associations)
    assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    deadline = time.time() + 5
    while not server.scp.active_associations and time.time() < deadline:
        time.sleep(0.02)
    theirs = server.scp.active_associations[0].dul.socket.socket  # the acceptor side
    assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assoc.release()


def dataset_bytes(part10: bytes) -> bytes:
    """The dataset of a Part-10 file: after the 128-byte preamble, `DICM`, and the File Meta
    group, whose length is the value of (0002,0000) (PS3.10 §7.1: Explicit VR LE, UL)."""
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def stored_file(server: Server, sop: str) -> bytes:
    row = server.dicom.index.instance(sop)
    assert row is not None, f"{sop} not indexed"
    return server.dicom.store.files.read(row["path"])


def push(server: Server, paths: list[Path], calling: str = "STORESCU") -> str:
    need("storescu")
    done = dcmtk("storescu", "-aet", calling, "-aec", server.ae_title, "127.0.0.1",
                 str(server.port), *map(str, paths))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_storescu_push_is_kept_byte_for_byte_and_indexed_before_success(
    server: Server, tmp_path: Path
) -> None:
    study, paths = write_study(tmp_path / "in", 4, series_count=2)
    push(server, paths)
    # storescu got success for each: so each index row was committed before it (store.py)
    for path in paths:
        sent = path.read_bytes()
        sop = str(dcmread(path).SOPInstanceUID)
        kept = stored_file(server, sop)
        # the dataset as dcmtk sent it (in the file's own transfer syntax, which we accept)
        assert dataset_bytes(kept) == dataset_bytes(sent)
        assert dcmread(server.dicom.store.files.path(server.dicom.index.instance(sop)["path"]))\
            .file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert len(server.dicom.index.instances(study)) == 4
    assert len(server.dicom.index.series_of(study)) == 2


def test_a_pushed_study_becomes_one_imaging_study_field_by_field(
    server: Server, tmp_path: Path
) -> None:
    client = server.client
    # the HIS registered the patient (ADT) and the order (ORM) first
    patient = client.post("/fhir/Patient", json={
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.156.1", "value": "CN0001"}],
        "name": [{"family": "张", "given": ["三"]}],
    }).json()  # fmt: skip
    order = client.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "system": "urn:yilian:accession", "value": "ACC-7"}],
        "code": {"text": "胸部CT"}, "subject": {"reference": f"Patient/{patient['id']}"},
    }).json()  # fmt: skip
    study, paths = write_study(
        tmp_path / "in", 3, series_count=2, PatientID="CN0001", IssuerOfPatientID="HOSP1",
        AccessionNumber="ACC-7",
        SpecificCharacterSet="ISO_IR 192", PatientName="Zhang^San=张^三",
        StudyDescription="胸部CT平扫", StudyDate="20260105", StudyTime="083000",
        BodyPartExamined="CHEST", Laterality="R", SeriesDate="20260105", SeriesTime="083105",
    )
    for path in paths:  # CT_small says -0500: take Beijing time instead
        ds = dcmread(path)
        ds.TimezoneOffsetFromUTC = "+0800"
        ds.save_as(path)
    push(server, paths)
    server.settle()
    found = client.get("/fhir/ImagingStudy", params={
        "identifier": f"urn:dicom:uid|urn:oid:{study}"}).json()  # fmt: skip
    assert found["total"] == 1
    got = found["entry"][0]["resource"]
    series_uids = sorted({str(dcmread(p).SeriesInstanceUID) for p in paths})
    by_series = {s: sorted((dcmread(p) for p in paths if dcmread(p).SeriesInstanceUID == s),
                           key=lambda d: d.InstanceNumber) for s in series_uids}  # fmt: skip
    # expected from imagingstudy.html's DICOM mapping of each element, worked out by hand from
    # the attributes written above (CT_small: CT Image Storage, SeriesNumber set per series)
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    assert got["identifier"] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                              "code": "ACSN"}]}, "value": "ACC-7"},
    ]  # fmt: skip
    assert got["status"] == "available"
    assert got["modality"] == [{"system": dcm, "code": "CT"}]
    assert got["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert got["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert got["started"] == "2026-01-05T08:30:00+08:00"
    assert got["endpoint"] == [{"reference": "Endpoint/dicom-wado-rs"}]
    assert got["numberOfSeries"] == 2 and got["numberOfInstances"] == 3
    assert got["description"] == "胸部CT平扫"
    expected_series = []
    for s in sorted(series_uids, key=lambda s: by_series[s][0].SeriesNumber):
        items = by_series[s]
        expected_series.append({
            "uid": s, "number": int(items[0].SeriesNumber),
            "modality": {"system": dcm, "code": "CT"},
            "numberOfInstances": len(items),
            "bodySite": {"system": "http://snomed.info/sct", "code": "51185008",
                         "display": "Thorax"},
            "laterality": {"system": "http://snomed.info/sct", "code": "24028007",
                           "display": "Right"},
            "started": "2026-01-05T08:31:05+08:00",
            "instance": [{"uid": str(d.SOPInstanceUID),
                          "sopClass": {"system": "urn:ietf:rfc:3986",
                                       "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"},
                          "number": int(d.InstanceNumber)} for d in items],
        })  # fmt: skip
    assert got["series"] == expected_series
    endpoint = client.get("/fhir/Endpoint/dicom-wado-rs").json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["address"].endswith("/dicom-web") and endpoint["status"] == "active"
    # the Patient was matched, not created again; its history is the write path's
    assert client.get("/fhir/Patient", params={"identifier": "CN0001"}).json()["total"] == 1
    assert client.get(f"/fhir/ImagingStudy/{got['id']}/_history").json()["total"] >= 1


def test_resending_a_study_updates_and_never_duplicates(server: Server, tmp_path: Path) -> None:
    study, paths = write_study(tmp_path / "in", 2, PatientID="P-9")
    push(server, paths)
    server.settle()
    first = server.client.get("/fhir/ImagingStudy").json()["entry"][0]["resource"]
    push(server, paths)  # the same instances again: nothing changes
    server.settle()
    again = server.client.get("/fhir/ImagingStudy").json()
    assert again["total"] == 1
    assert again["entry"][0]["resource"]["meta"]["versionId"] == first["meta"]["versionId"]
    more = ct(study, str(dcmread(paths[0]).SeriesInstanceUID), 3, PatientID="P-9")
    more.save_as(tmp_path / "more.dcm", enforce_file_format=True)
    push(server, [tmp_path / "more.dcm"])  # one more instance: a new version, still one study
    server.settle()
    after = server.client.get("/fhir/ImagingStudy").json()
    assert after["total"] == 1
    resource = after["entry"][0]["resource"]
    assert resource["numberOfInstances"] == 3
    assert int(resource["meta"]["versionId"]) == int(first["meta"]["versionId"]) + 1
    assert server.client.get("/fhir/Patient", params={"identifier": "P-9"}).json()["total"] == 1


def _find(server: Server, tmp_path: Path, *keys: str, root: str = "-S") -> list:
    need("findscu")
    out = tmp_path / f"find{time.monotonic_ns()}"
    out.mkdir()
    args = [arg for key in keys for arg in ("-k", key)]
    done = dcmtk("findscu", root, "-aec", server.ae_title, "-X", "-od", str(out), *args,
                 "127.0.0.1", str(server.port))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [dcmread(p) for p in sorted(out.glob("*.dcm"))]


def test_findscu_finds_studies_series_images_and_patients(server: Server, tmp_path: Path) -> None:
    study, paths = write_study(tmp_path / "a", 3, series_count=2, PatientID="CN0002",
                               SpecificCharacterSet="ISO_IR 192", PatientName="Li^Si=李^四",
                               StudyDate="20260110")  # fmt: skip
    other, more = write_study(tmp_path / "b", 1, PatientID="CN0003", PatientName="Wang^Wu",
                              StudyDate="20250101")  # fmt: skip
    push(server, paths + more)
    studies = _find(server, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=LI*",
                    "StudyInstanceUID", "NumberOfStudyRelatedInstances", "PatientID")
    assert [str(d.StudyInstanceUID) for d in studies] == [study]
    assert studies[0].PatientName.ideographic == "李^四"  # decoded and re-encoded (UTF-8)
    assert int(studies[0].NumberOfStudyRelatedInstances) == 3
    by_date = _find(server, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20250101-20251231",
                    "StudyInstanceUID")  # fmt: skip
    assert [str(d.StudyInstanceUID) for d in by_date] == [other]
    chinese = _find(server, tmp_path, "SpecificCharacterSet=ISO_IR 192",
                    "QueryRetrieveLevel=STUDY", "PatientName=李*", "StudyInstanceUID")
    assert [str(d.StudyInstanceUID) for d in chinese] == [study]
    series = _find(server, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}",
                   "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert sorted(int(d.NumberOfSeriesRelatedInstances) for d in series) == [1, 2]
    assert {d.Modality for d in series} == {"CT"}
    images = _find(server, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                   f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID")
    assert len(images) == int(series[0].NumberOfSeriesRelatedInstances)
    patients = _find(server, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=CN000*",
                     "PatientName", root="-P")  # fmt: skip
    assert sorted(str(d.PatientID) for d in patients) == ["CN0002", "CN0003"]


def test_c_find_with_a_malformed_date_or_level_fails_with_a900(
    server: Server, tmp_path: Path
) -> None:
    need("findscu")
    for key in ("StudyDate=2026-01-01", "StudyDate=abc"):
        done = dcmtk("findscu", "-v", "-S", "-aec", server.ae_title, "-k",
                     "QueryRetrieveLevel=STUDY", "-k", key, "127.0.0.1", str(server.port))
        # dcmtk names 0xA900 (PS3.4 C.4.1.1.4, Identifier does not match SOP Class) thus
        assert "datasetdoesnotmatchsopclass" in done.stderr.lower(), done.stderr
    done = dcmtk("findscu", "-v", "-S", "-aec", server.ae_title, "-k", "QueryRetrieveLevel=PATIENT",
                 "127.0.0.1", str(server.port))  # PATIENT is no level of Study Root
    assert "datasetdoesnotmatchsopclass" in done.stderr.lower(), done.stderr
    assert dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.port)).returncode == 0


def test_movescu_moves_a_study_to_a_configured_destination_only(
    tmp_path: Path, parts: Parts
) -> None:
    need("storescp", "movescu", "storescu")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    storescp = __import__("subprocess").Popen(
        [peer("storescp"), "-aet", "DEST", "-od", str(received), str(port)],
        env=__import__("dicom_peers").NODELAY,
    )
    try:
        time.sleep(0.5)
        server_gen = start_server(tmp_path, parts, dicom_move_destinations=f"DEST=127.0.0.1:{port}")
        server = next(server_gen)
        study, paths = write_study(tmp_path / "in", 3)
        push(server, paths)
        done = dcmtk("movescu", "-S", "-aec", server.ae_title, "-aem", "DEST", "-k",
                     "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     "127.0.0.1", str(server.port))  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        got = sorted(received.iterdir())
        assert len(got) == 3
        sent = {str(dcmread(p).SOPInstanceUID): dataset_bytes(p.read_bytes()) for p in paths}
        for path in got:
            assert dataset_bytes(path.read_bytes()) == sent[str(dcmread(path).SOPInstanceUID)]
        unknown = dcmtk("movescu", "-v", "-S", "-aec", server.ae_title, "-aem", "NOWHERE", "-k",
                        "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                        "127.0.0.1", str(server.port))  # fmt: skip
        # 0xA801, Move Destination unknown (PS3.4 C.4.2.1.5), as dcmtk names it
        assert "movedestinationunknown" in unknown.stderr.lower(), unknown.stderr
        next(server_gen, None)
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)


def test_getscu_gets_a_series_over_the_same_association(server: Server, tmp_path: Path) -> None:
    need("getscu")
    study, paths = write_study(tmp_path / "in", 4, series_count=2)
    push(server, paths)
    server.settle()  # the audit names the study by its ImagingStudy: written by now
    series = str(dcmread(paths[0]).SeriesInstanceUID)
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-S", "-aec", server.ae_title, "-od", str(out), "-k",
                 "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}", "-k",
                 f"SeriesInstanceUID={series}", "127.0.0.1", str(server.port))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got = {str(dcmread(p).SOPInstanceUID) for p in out.iterdir()}
    assert got == {str(dcmread(p).SOPInstanceUID) for p in paths
                   if str(dcmread(p).SeriesInstanceUID) == series}  # fmt: skip
    # the retrieve is in the audit trail: a read of the study's ImagingStudy, by getscu's AE
    from test_audit import events

    rid = server.dicom.index.resource_ids([study])[study]
    reads = [e for e in events(server.client) if e["subtype"][0]["code"] == "read"
             and any(f"ImagingStudy/{rid}/_history/" in (x["what"].get("reference") or "")
                     for x in e["entity"])]  # fmt: skip
    assert len(reads) == 1, reads
    assert "dicom:GETSCU" in str(reads[0]["agent"]), reads[0]["agent"]


def test_orthanc_pushes_to_us_and_we_pull_from_orthanc(
    tmp_path: Path, parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    orthanc_gen = start_orthanc(tmp_path, {"FHIRSCP": ("FHIRSCP", "127.0.0.1", port)})
    orthanc = next(orthanc_gen)
    try:
        peers = f"ORTHANC=127.0.0.1:{orthanc.port}"
        server_gen = start_server(tmp_path, parts, dicom_port=port, dicom_peers=peers)
        server = next(server_gen)
        # 1. Orthanc (a PACS) pushes a study to us: C-STORE from its own SCU
        pushed, paths = write_study(tmp_path / "pushed", 3, PatientID="OR-1")
        ids = {orthanc.upload(p) for p in paths}
        answer = httpx.post(f"{orthanc.http}/modalities/FHIRSCP/store",
                            json={"Resources": sorted(ids), "Synchronous": True}, timeout=60)
        assert answer.status_code == 200, answer.text
        server.settle()
        assert len(server.dicom.index.instances(pushed)) == 3
        imaging = server.client.get("/fhir/ImagingStudy", params={
            "identifier": f"urn:dicom:uid|urn:oid:{pushed}"}).json()  # fmt: skip
        assert imaging["total"] == 1
        # 2. we pull a prior study that only Orthanc has: C-GET, then C-MOVE to our AE title
        for method in ("get", "move"):
            prior, prior_paths = write_study(tmp_path / f"prior-{method}", 2, PatientID="OR-1")
            for p in prior_paths:
                orthanc.upload(p)
            done = pull(server.services, "ORTHANC", prior, method)
            assert (done.completed, done.failed) == (2, 0)
            assert done.imaging_study is not None
            for p in prior_paths:
                kept = stored_file(server, str(dcmread(p).SOPInstanceUID))
                assert dcmread(__import__("io").BytesIO(kept)).PixelData == dcmread(p).PixelData
        # 3. the console script: an unknown PACS is refused with a clear message
        monkeypatch.setenv("FHIR_SERVER_DICOM_PEERS", peers)
        code = cli.main(["dicom", "pull", "--from", "NOPACS", "--study", pushed, "--database",
                         str(server.services.settings.database)])  # fmt: skip
        assert code == 1
        next(server_gen, None)
    finally:
        next(orthanc_gen, None)


def test_an_unregistered_calling_ae_is_refused(tmp_path: Path, parts: Parts) -> None:
    need("echoscu")
    gen = start_server(tmp_path, parts, dicom_allowed_aets="MODALITY1,PACS")
    server = next(gen)
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", server.ae_title, "127.0.0.1",
                    str(server.port))  # fmt: skip
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    accepted = dcmtk("echoscu", "-aet", "PACS", "-aec", server.ae_title, "127.0.0.1",
                     str(server.port))  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    next(gen, None)


def _scu(calling: str = "TESTSCU") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


def test_an_association_flood_is_refused_beyond_the_limit_and_others_still_served(
    tmp_path: Path, parts: Parts
) -> None:
    gen = start_server(tmp_path, parts, dicom_max_associations=2)
    server = next(gen)
    held = [_scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP") for _ in range(2)]
    assert all(a.is_established for a in held)
    extra = _scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP")
    assert extra.is_rejected  # A-ASSOCIATE-RJ: local limit exceeded
    for a in held:
        a.release()
    time.sleep(0.3)
    again = _scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP")
    assert again.is_established and again.send_c_echo().Status == 0
    again.release()
    next(gen, None)


def test_a_dataset_without_uids_fails_a900_and_nothing_is_stored(server: Server) -> None:
    assoc = _scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP")
    assert assoc.is_established
    bad = ct()
    del bad.StudyInstanceUID
    status = assoc.send_c_store(bad)
    assert status.Status == 0xA900
    broken = ct()
    broken.SOPInstanceUID = "1.2.abc"  # not a UID: never becomes a path
    assert assoc.send_c_store(broken).Status == 0xA900
    assoc.release()
    assert not list((server.dicom.config.storage / "files").rglob("*.dcm"))
    assert server.dicom.index.instance(str(broken.SOPInstanceUID)) is None


def test_a_half_sent_dataset_is_not_stored_and_the_service_goes_on(server: Server) -> None:
    ds = ct()
    assoc = _scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP", max_pdu=4096)
    assert assoc.is_established
    context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    from io import BytesIO

    from pynetdicom.dsutils import encode

    syntax = context.transfer_syntax[0]  # the dataset in the syntax the context accepted
    request.DataSet = BytesIO(encode(ds, syntax.is_implicit_VR, syntax.is_little_endian))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = list(message.encode_msg(context.context_id, 4096))
    assert len(pdus) > 3
    for primitive in pdus[:3]:  # the command and the first fragment of the dataset, no more
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        assoc.dul.socket.send(pdu.encode())
    time.sleep(0.2)
    assoc.abort()
    time.sleep(0.5)
    assert server.dicom.index.instance(str(ds.SOPInstanceUID)) is None
    assert not list((server.dicom.config.storage / "files").rglob("*.dcm"))
    fresh = _scu().associate("127.0.0.1", server.port, ae_title="FHIRSCP")
    assert fresh.send_c_echo().Status == 0
    fresh.release()


def test_c_get_role_and_threads_are_not_left_behind(server: Server) -> None:
    """A C-GET of nothing answers success with no sub-operations; threads end."""
    ae = AE(ae_title="GETTER")
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="FHIRSCP",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)])  # fmt: skip
    from pydicom import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = generate_uid()
    statuses = [s.Status for s, _ in assoc.send_c_get(query,
                StudyRootQueryRetrieveInformationModelGet) if s is not None]  # fmt: skip
    assert statuses[-1] == 0x0000
    assoc.release()
    before = threading.active_count()
    time.sleep(0.2)
    assert threading.active_count() <= before
