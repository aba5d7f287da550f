"""DICOMweb (PS3.18) over HTTP with dicomweb-client (PyPI) and the exact requests OHIF sends
(integrations.md §3.2), compared with Orthanc's DICOMweb plugin on the same instances; STOW-RS
takes the C-STORE path; bad input gets the standard's 4xx; access follows ImagingStudy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import _serve_live, make_services
from dicom_peers import ct, start_orthanc
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from fhir_server.app import build_app
from fhir_server.services import Parts
from integrations.dicom import dicom_of
from integrations.dicom.sync import sync_study
from integrations.patients import identifier_system


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[tuple[str, Any]]:
    """A live server (uvicorn on loopback) holding one stored study of two series: the
    DICOMweb base URL and the datasets sent."""
    services = make_services(tmp_path_factory.mktemp("web") / "fhir.db", parts)
    server = _serve_live(services)
    base = next(server).removesuffix("/fhir") + "/dicom-web"
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    sent = [
        ct(study, s1, 1, SeriesNumber=1, PatientID="CN0001", SpecificCharacterSet="ISO_IR 192",
           PatientName="Zhang^San=张^三", StudyDate="20260105", StudyDescription="胸部CT",
           AccessionNumber="A-1"),
        ct(study, s1, 2, SeriesNumber=1, PatientID="CN0001", SpecificCharacterSet="ISO_IR 192",
           PatientName="Zhang^San=张^三", StudyDate="20260105", StudyDescription="胸部CT",
           AccessionNumber="A-1"),
        ct(study, s2, 1, SeriesNumber=2, PatientID="CN0001", SpecificCharacterSet="ISO_IR 192",
           PatientName="Zhang^San=张^三", StudyDate="20260105", StudyDescription="胸部CT",
           AccessionNumber="A-1", SeriesDescription="recon"),
    ]  # fmt: skip
    other = ct(PatientID="CN0009", PatientName="Li^Si", StudyDate="20240301")
    client = DICOMwebClient(url=base)
    client.store_instances(sent + [other])
    yield base, {"study": study, "series": (s1, s2), "sent": sent, "other": other,
                 "services": services}  # fmt: skip
    next(server, None)


def test_stow_rs_stores_like_c_store_and_writes_the_imaging_study(live: tuple[str, Any]) -> None:
    base, data = live
    fhir = base.removesuffix("/dicom-web") + "/fhir"
    found = httpx.get(f"{fhir}/ImagingStudy", params={
        "identifier": f"urn:dicom:uid|urn:oid:{data['study']}"}).json()  # fmt: skip
    assert found["total"] == 1
    study = found["entry"][0]["resource"]
    assert study["numberOfSeries"] == 2 and study["numberOfInstances"] == 3
    index = dicom_of(data["services"]).index
    for ds in data["sent"]:
        row = index.instance(str(ds.SOPInstanceUID))
        kept = dcmread(dicom_of(data["services"]).store.files.path(row["path"]))
        assert kept.PixelData == ds.PixelData and kept.PatientName == ds.PatientName


def test_qido_rs_studies_with_keywords_tags_wildcards_dates_and_paging(
    live: tuple[str, Any],
) -> None:
    base, data = live
    client = DICOMwebClient(url=base)
    found = client.search_for_studies(search_filters={"PatientName": "*zhang*"},
                                      fields=["StudyDescription"])  # fmt: skip
    assert [f["0020000D"]["Value"][0] for f in found] == [data["study"]]
    item = found[0]
    # PS3.18 F.2.2: a PN as its component groups
    assert item["00100010"]["Value"] == [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]
    assert item["00081030"]["Value"] == ["胸部CT"]
    assert item["00201206"]["Value"] == [2] and item["00201208"]["Value"] == [3]
    assert item["00080061"]["Value"] == ["CT"]
    by_tag = client.search_for_studies(search_filters={"00100020": "CN0001"})
    assert len(by_tag) == 1
    assert len(client.search_for_studies(search_filters={"PatientName": "张*"})) == 1
    dates = client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})
    assert [d["0020000D"]["Value"][0] for d in dates] == [str(data["other"].StudyInstanceUID)]
    listed = [d["0020000D"]["Value"][0] for d in client.search_for_studies()]
    # newest study first; a UID list (backslash, as OHIF sends) finds both
    assert listed == [data["study"], str(data["other"].StudyInstanceUID)]
    both = httpx.get(f"{base}/studies", params={
        "StudyInstanceUID": "\\".join(listed)}).json()  # fmt: skip
    assert len(both) == 2
    page = httpx.get(f"{base}/studies", params={"limit": 1, "offset": 1}).json()
    assert [p["0020000D"]["Value"][0] for p in page] == listed[1:]
    assert httpx.get(f"{base}/studies", params={"PatientName": "nobody"}).status_code == 204


def test_the_requests_ohif_sends_answer_as_ohif_reads_them(live: tuple[str, Any]) -> None:
    """integrations.md §3.2: includefield percent-encoded with %2C, `*` as %2A,
    fuzzymatching=false, UID lists; series list; lazy series metadata; frames."""
    base, data = live
    study, (s1, _) = data["study"], data["series"]
    studies = httpx.get(
        f"{base}/studies?limit=101&offset=0&fuzzymatching=false&PatientName=%2Azhang%2A"
        "&includefield=00081030%2C00080060%2C00080090%2C00100030",
        headers={"Accept": "application/dicom+json"},
    )
    assert studies.status_code == 200
    assert studies.headers["content-type"] == "application/dicom+json"
    assert studies.json()[0]["00081030"]["Value"] == ["胸部CT"]
    series = httpx.get(f"{base}/studies/{study}/series?includefield=00080021%2C00080031"
                       "%2C0008103E%2C00200011").json()  # fmt: skip
    assert sorted(s["00200011"]["Value"][0] for s in series) == [1, 2]
    assert any(s.get("0008103E", {}).get("Value") == ["recon"] for s in series)
    meta = httpx.get(f"{base}/studies/{study}/series/{s1}/metadata").json()
    assert len(meta) == 2
    bulk = meta[0]["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(base + f"/studies/{study}/series/{s1}/instances/")
    sop = meta[0]["00080018"]["Value"][0]
    frames = httpx.get(f"{base}/studies/{study}/series/{s1}/instances/{sop}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert frames.status_code == 200
    assert 'type="application/octet-stream"' in frames.headers["content-type"]
    # Cornerstone reads the syntax of each part (integrations.md §3.2, bug 4)
    assert b"Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1" \
        in frames.content
    sent = next(d for d in data["sent"] if str(d.SOPInstanceUID) == sop)
    assert sent.PixelData in frames.content


def test_wado_rs_retrieves_instances_metadata_frames_bulkdata_and_renders(
    live: tuple[str, Any],
) -> None:
    base, data = live
    client = DICOMwebClient(url=base)
    study, (s1, s2) = data["study"], data["series"]
    got = client.retrieve_study(study)
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(
        str(d.SOPInstanceUID) for d in data["sent"])  # fmt: skip
    first = data["sent"][0]
    sop = str(first.SOPInstanceUID)
    instance = client.retrieve_instance(study, s1, sop)
    assert instance.PixelData == first.PixelData
    frames = client.retrieve_instance_frames(study, s1, sop, [1],
                                             media_types=(("application/octet-stream", "*"),))
    assert frames == [first.PixelData]
    default = client.retrieve_instance_frames(study, s1, sop, [1])  # Explicit VR LE: same
    assert default == [first.PixelData]
    meta = client.retrieve_series_metadata(study, s1)
    assert len(meta) == 2
    # dicomweb-client 0.61 sends `Host` without the port (web.py: headers['Host'] =
    # self.host), so links built from it lack the port (as Orthanc's would without its
    # "Host" setting; ours: public_base_url). Take the URI as a browser sees it.
    meta = httpx.get(f"{base}/studies/{study}/series/{s1}/metadata").json()
    uri = next(m for m in meta if m["00080018"]["Value"][0] == sop)["7FE00010"]["BulkDataURI"]
    assert client.retrieve_bulkdata(uri) == [first.PixelData]
    rendered = client.retrieve_instance_rendered(study, s1, sop, media_types=("image/jpeg",))
    image = Image.open(io.BytesIO(rendered))
    assert image.format == "JPEG" and image.size == (128, 128)
    png = httpx.get(f"{base}/studies/{study}/series/{s1}/instances/{sop}/rendered",
                    params={"window": "40,400", "viewport": "64,64"},
                    headers={"Accept": "image/png"})  # fmt: skip
    small = Image.open(io.BytesIO(png.content))
    assert small.format == "PNG" and small.size == (64, 64)
    # a narrower window changes the picture (soft tissue vs bone)
    wide = httpx.get(f"{base}/studies/{study}/series/{s1}/instances/{sop}/rendered",
                     params={"window": "300,2000", "viewport": "64,64"},
                     headers={"Accept": "image/png"})  # fmt: skip
    assert Image.open(io.BytesIO(wide.content)).tobytes() != small.tobytes()
    thumb = httpx.get(f"{base}/studies/{study}/series/{s2}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128


def test_the_answers_agree_with_orthanc_on_the_same_instances(
    live: tuple[str, Any], tmp_path: Path
) -> None:
    """Orthanc (what a PACS administrator knows) as the independent expectation: the same
    instances, the same QIDO values for the attributes both return."""
    base, data = live
    orthanc_gen = start_orthanc(tmp_path, {})
    orthanc = next(orthanc_gen)
    try:
        theirs = DICOMwebClient(url=f"{orthanc.http}/dicom-web")
        theirs.store_instances(data["sent"])
        ours = DICOMwebClient(url=base)
        for search in (
            lambda c: c.search_for_studies(search_filters={"StudyInstanceUID": data["study"]}),
            lambda c: c.search_for_series(data["study"]),
            lambda c: c.search_for_instances(data["study"], data["series"][0]),
        ):
            a, b = search(ours), search(theirs)
            assert len(a) == len(b)
            key = "00080018" if "00080018" in a[0] else "0020000E" if "0020000E" in a[0] \
                else "0020000D"  # fmt: skip
            for x, y in zip(sorted(a, key=lambda i: i[key]["Value"][0]),
                            sorted(b, key=lambda i: i[key]["Value"][0]), strict=True):
                common = (set(x) & set(y)) - {"00081190", "00080056", "00080005"}
                assert {t: x[t].get("Value") for t in common} == {
                    t: y[t].get("Value") for t in common}  # fmt: skip
        sop = str(data["sent"][0].SOPInstanceUID)
        mine = ours.retrieve_instance_metadata(data["study"], data["series"][0], sop)
        orth = theirs.retrieve_instance_metadata(data["study"], data["series"][0], sop)
        assert mine["00100010"]["Value"] == orth["00100010"]["Value"]
        common = {t for t in set(mine) & set(orth) if "Value" in mine[t] and "Value" in orth[t]}
        assert len(common) > 50
        differ = {t: (mine[t]["Value"], orth[t]["Value"]) for t in common - {"00080005"}
                  if mine[t]["Value"] != orth[t]["Value"]}  # fmt: skip
        assert differ == {}
    finally:
        next(orthanc_gen, None)


def _multipart(parts: list[bytes], kind: str = "application/dicom") -> tuple[bytes, str]:
    bound = "b" + generate_uid().replace(".", "")
    body = b"".join(f"--{bound}\r\nContent-Type: {kind}\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts) + f"--{bound}--\r\n".encode()  # fmt: skip
    return body, f'multipart/related; type="{kind}"; boundary={bound}'


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_stow_rs_answers_200_202_409_with_the_ps318_response(live: tuple[str, Any]) -> None:
    base, _ = live
    good = ct()
    body, ctype = _multipart([_part10(good)])
    answer = httpx.post(f"{base}/studies", content=body, headers={"Content-Type": ctype})
    assert answer.status_code == 200
    referenced = answer.json()["00081199"]["Value"]
    assert referenced[0]["00081155"]["Value"] == [str(good.SOPInstanceUID)]
    corrupt = _part10(ct())[:20000]  # cut short inside the pixel data
    body, ctype = _multipart([_part10(ct()), corrupt])
    partial = httpx.post(f"{base}/studies", content=body, headers={"Content-Type": ctype})
    assert partial.status_code == 202
    assert partial.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    body, ctype = _multipart([corrupt])
    assert httpx.post(f"{base}/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 409  # fmt: skip
    elsewhere = ct()
    body, ctype = _multipart([_part10(elsewhere)])
    wrong = httpx.post(f"{base}/studies/{generate_uid()}", content=body,
                       headers={"Content-Type": ctype})  # fmt: skip
    assert wrong.status_code == 409
    assert wrong.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    no_uid = ct()
    del no_uid.SeriesInstanceUID
    body, ctype = _multipart([_part10(no_uid)])
    assert httpx.post(f"{base}/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 409  # fmt: skip
    truncated = body[: len(body) // 2]
    cut = httpx.post(f"{base}/studies", content=truncated, headers={"Content-Type": ctype})
    assert cut.status_code == 400 and "truncated" in cut.text
    plain = httpx.post(f"{base}/studies", content=b"{}",
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert plain.status_code == 415
    assert httpx.get(f"{base}/studies", params={"PatientName": "nobody"}).status_code == 204


@pytest.mark.parametrize(
    ("path", "status", "where"),
    [
        ("/studies?StudyDate=2026-01-05", 400, "StudyDate"),
        ("/studies?StudyDate=20260105-2026", 400, "StudyDate"),
        ("/studies?NoSuchKeyword=1", 400, "NoSuchKeyword"),
        ("/studies?0010ZZZZ=1", 400, "0010ZZZZ"),
        ("/studies?includefield=NotAnAttribute", 400, "includefield"),
        ("/studies?limit=-1", 400, "limit"),
        ("/studies?StudyInstanceUID=1.2.abc", 400, "StudyInstanceUID"),
        ("/studies/1.2.3.4.5", 404, None),
        ("/studies/not-a-uid/series", 400, "StudyInstanceUID"),
    ],
)  # fmt: skip
def test_bad_queries_get_4xx_naming_what_and_where(
    live: tuple[str, Any], path: str, status: int, where: str | None
) -> None:
    base, _ = live
    answer = httpx.get(base + path)
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    assert issue["diagnostics"]
    if where:
        assert issue["expression"] == [where]


def test_frames_out_of_range_and_syntaxes_we_cannot_offer(
    live: tuple[str, Any],
) -> None:
    base, data = live
    study, (s1, _) = data["study"], data["series"]
    sop = str(data["sent"][0].SOPInstanceUID)
    url = f"{base}/studies/{study}/series/{s1}/instances/{sop}"
    assert httpx.get(f"{url}/frames/2").status_code == 404
    assert httpx.get(f"{url}/frames/0").status_code == 404
    assert httpx.get(f"{url}/frames/x").status_code == 400
    jpeg = httpx.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert jpeg.status_code == 406
    assert httpx.get(f"{url}/rendered", headers={"Accept": "application/pdf"}).status_code == 406
    assert httpx.get(f"{url}/rendered", params={"quality": "500"}).status_code == 400
    # JPEG-LS: stored and served as is, but not decodable here for rendering
    jls = dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    body, ctype = _multipart([_part10(jls)])
    assert httpx.post(f"{base}/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 200  # fmt: skip
    jurl = (f"{base}/studies/{jls.StudyInstanceUID}/series/{jls.SeriesInstanceUID}"
            f"/instances/{jls.SOPInstanceUID}")  # fmt: skip
    raw = httpx.get(f"{jurl}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert raw.status_code == 200
    assert b"transfer-syntax=1.2.840.10008.1.2.4.80" in raw.content
    rendered = httpx.get(f"{jurl}/rendered")
    if rendered.status_code != 200:  # no JPEG-LS decoder installed: the standard's 406
        assert rendered.status_code == 406 and "1.2.840.10008.1.2.4.80" in rendered.text


def test_multiframe_frames_come_one_part_each(live: tuple[str, Any]) -> None:
    base, _ = live
    rle = dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    body, ctype = _multipart([_part10(rle)])
    assert httpx.post(f"{base}/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 200  # fmt: skip
    client = DICOMwebClient(url=base)
    both = client.retrieve_instance_frames(
        str(rle.StudyInstanceUID), str(rle.SeriesInstanceUID), str(rle.SOPInstanceUID),
        [1, 2], media_types=(("application/octet-stream", "*"),))  # fmt: skip
    from pydicom.encaps import generate_frames

    assert both == list(generate_frames(rle.PixelData, number_of_frames=2))
    # asked for Explicit VR Little Endian: decoded (pydicom's RLE decoder)
    decoded = client.retrieve_instance_frames(
        str(rle.StudyInstanceUID), str(rle.SeriesInstanceUID), str(rle.SOPInstanceUID), [2],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))  # fmt: skip
    assert decoded == [rle.pixel_array[1].tobytes()]


# --- access: what ImagingStudy search shows ------------------------------------------------


def test_dicomweb_shows_a_user_exactly_what_their_imaging_study_search_shows(
    tmp_path: Path, parts: Parts
) -> None:
    from smart import PASSWORD, REDIRECT, auth_of
    from test_policy_consortium import DATA, login

    from fhir_server.auth import admin

    services = make_services(tmp_path / "fhir.db", parts, auth="on")
    with TestClient(build_app(services.settings, services),
                    raise_server_exceptions=False) as c:  # fmt: skip
        dicom = dicom_of(services)
        # the patients as registered by the HIS: PatientID under the site's own system
        system = identifier_system(services.settings, None)
        with_id = [{**r, "identifier": [{"system": system, "value": r["id"]}]}
                   if r["resourceType"] == "Patient" else r for r in DATA]  # fmt: skip
        from conftest import seed

        seed(c, with_id)
        store = auth_of(c).store
        admin.add_client(store, "ward-app", [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "dra", PASSWORD, "PractitionerRole/dra")
        studies = {}
        for pid in ("pa", "pb"):
            ds = ct(PatientID=pid)
            dicom.store.put(_part10(ds))
            sync_study(services, dicom.index, str(ds.StudyInstanceUID))
            studies[pid] = ds
        assert c.get("/dicom-web/studies").status_code == 401  # a token is required
        a = login(c, "dra")
        fhir = a.get("/fhir/ImagingStudy").json()
        seen_fhir = {e["resource"]["identifier"][0]["value"] for e in fhir["entry"]}
        qido = a.get("/dicom-web/studies").json()
        seen_web = {f"urn:oid:{s['0020000D']['Value'][0]}" for s in qido}
        assert seen_web == seen_fhir == {f"urn:oid:{studies['pa'].StudyInstanceUID}"}
        hidden = studies["pb"]
        for path in ("", "/metadata", "/series"):
            answer = a.get(f"/dicom-web/studies/{hidden.StudyInstanceUID}{path}")
            assert answer.status_code in (404, 204), (path, answer.status_code)
        shown = studies["pa"]
        assert a.get(f"/dicom-web/studies/{shown.StudyInstanceUID}/metadata").status_code == 200
        # STOW-RS and the other callers: tests/test_dicomweb_access.py


def test_iid_opens_the_study_in_the_configured_viewer(tmp_path: Path, parts: Parts) -> None:
    viewer = "http://viewer.example/viewer?StudyInstanceUIDs={study}"
    services = make_services(tmp_path / "fhir.db", parts, dicom_viewer_url=viewer)
    with TestClient(build_app(services.settings, services),
                    raise_server_exceptions=False) as c:  # fmt: skip
        dicom = dicom_of(services)
        ds = ct()
        dicom.store.put(_part10(ds))
        sync_study(services, dicom.index, str(ds.StudyInstanceUID))
        study = c.get("/fhir/ImagingStudy").json()["entry"][0]["resource"]
        assert {"reference": "Endpoint/dicom-iid"} in study["endpoint"]
        iid = c.get("/fhir/Endpoint/dicom-iid").json()
        assert iid["connectionType"]["code"] == "ihe-iid"
        path = iid["address"].split("://", 1)[1].split("/", 1)[1]
        answer = c.get(f"/{path}/IHEInvokeImageDisplay", params={
            "requestType": "STUDY", "studyUID": str(ds.StudyInstanceUID)},
            follow_redirects=False)  # fmt: skip
        assert answer.status_code == 302
        assert answer.headers["location"] == viewer.replace("{study}", str(ds.StudyInstanceUID))
        assert c.get(f"/{path}/IHEInvokeImageDisplay", params={"requestType": "PATIENT"},
                     follow_redirects=False).status_code == 400  # fmt: skip


def test_a_client_error_from_dicomweb_client_is_raised_not_swallowed(
    live: tuple[str, Any],
) -> None:
    base, _ = live
    with pytest.raises(HTTPError):
        DICOMwebClient(url=base).retrieve_study(generate_uid())
