"""DICOMweb and FHIR share one access decision (issue 13 "Access"): for the same bearer token,
QIDO-RS, WADO-RS and STOW-RS answer exactly the studies whose ImagingStudy that caller's own
`ImagingStudy?` search shows, or may write. Real tokens from the authorization server (code
flow with PKCE; a practitioner under the consortium rule, and a patient launch); the
expectation is the FHIR search of the same token, never DICOMweb's own output."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services, seed
from dicom_peers import ct
from fastapi.testclient import TestClient
from pydicom import Dataset
from smart import BASE, PASSWORD, REDIRECT, auth_code, auth_of, drive, pkce
from test_dicomweb import _multipart, _part10
from test_policy_consortium import DATA

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts
from integrations.dicom import dicom_of
from integrations.dicom.sync import sync_study
from integrations.patients import identifier_system

APP = "ward-app"
#: PS3.7 C.4.2: 0124H Refused: Not authorized
NOT_AUTHORIZED = 0x0124


@pytest.fixture(scope="module")
def hospital(
    tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> Iterator[tuple[TestClient, dict[str, Dataset]]]:
    """Hospitals ha (manages pa, user dra) and hb (pb, drb); one two-series study of each
    patient stored by the modality path (C-STORE's: store, then the syncer's ImagingStudy)."""
    services = make_services(tmp_path_factory.mktemp("access") / "fhir.db", parts, auth="on")
    with TestClient(build_app(services.settings, services),
                    raise_server_exceptions=False) as c:  # fmt: skip
        system = identifier_system(services.settings, None)
        seed(c, [{**r, "identifier": [{"system": system, "value": r["id"]}]}
                 if r["resourceType"] == "Patient" else r for r in DATA])  # fmt: skip
        store = auth_of(c).store
        admin.add_client(store, APP, [REDIRECT], public=True, trusted=True)
        for user in ("dra", "drb"):
            admin.add_user(store, user, PASSWORD, f"PractitionerRole/{user}")
        dicom = dicom_of(services)
        studies = {}
        for pid in ("pa", "pb"):
            first = ct(PatientID=pid, SeriesNumber=1)
            second = ct(str(first.StudyInstanceUID), PatientID=pid, SeriesNumber=2)
            for ds in (first, second):
                dicom.store.put(_part10(ds))
            sync_study(services, dicom.index, str(first.StudyInstanceUID))
            studies[pid] = first
        yield c, studies


def token(c: TestClient, user: str, scope: str, patient: str = "Patient/pa") -> TestClient:
    """A browser holding `user`'s access token for `scope` (a launch/patient scope: the
    patient picked is `patient`)."""
    browser = TestClient(c.app, raise_server_exceptions=False)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {"response_type": "code", "client_id": APP, "redirect_uri": REDIRECT,
              "scope": scope, "state": state, "aud": BASE, "code_challenge": challenge,
              "code_challenge_method": "S256"}  # fmt: skip
    code = auth_code(drive(browser, params, user, patient), state)
    r = browser.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": APP})  # fmt: skip
    assert r.status_code == 200, r.text
    browser.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return browser


def imaging_study(c: TestClient, uid: str) -> dict[str, Any]:
    """The caller's ImagingStudy of a study (by its identifier)."""
    found = c.get("/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"})
    resource: dict[str, Any] = found.json()["entry"][0]["resource"]
    return resource


def fhir_studies(c: TestClient) -> set[str]:
    """The Study Instance UIDs of the caller's ImagingStudy search."""
    bundle = c.get("/fhir/ImagingStudy").json()
    return {
        i["value"].removeprefix("urn:oid:")
        for e in bundle.get("entry", [])
        for i in e["resource"]["identifier"]
        if i["system"] == "urn:dicom:uid"
    }


def qido(c: TestClient, path: str) -> list[dict[str, Any]]:
    r = c.get(f"/dicom-web{path}")
    assert r.status_code in (200, 204), (path, r.status_code, r.text)
    return r.json() if r.status_code == 200 else []


CALLERS = {
    # the consortium rule: ha's practitioner sees the patients ha manages
    "dra": ("dra", "openid fhirUser user/*.cruds"),
    "drb": ("drb", "openid fhirUser user/*.cruds"),
    # a patient launch: dra's app confined to pa's compartment
    "dra launching pa": ("dra", "launch/patient patient/*.rs"),
}


@pytest.mark.parametrize("caller", CALLERS)
def test_dicomweb_answers_each_caller_exactly_what_their_imaging_study_search_shows(
    hospital: tuple[TestClient, dict[str, Dataset]], caller: str
) -> None:
    c, studies = hospital
    user, scope = CALLERS[caller]
    as_ = token(c, user, scope)
    expected = fhir_studies(as_)
    # the fixture's design: each caller sees one of the two studies (else the test is moot)
    assert len(expected) == 1, expected
    every = {str(ds.StudyInstanceUID) for ds in studies.values()}
    assert {s["0020000D"]["Value"][0] for s in qido(as_, "/studies")} == expected
    assert {s["0020000D"]["Value"][0] for s in qido(as_, "/series")} == expected
    assert {s["0020000D"]["Value"][0] for s in qido(as_, "/instances")} == expected
    for uid in every:
        shown = uid in expected
        series = qido(as_, f"/studies/{uid}/series")
        assert len(series) == (2 if shown else 0)
        assert len(qido(as_, f"/studies/{uid}/instances")) == (2 if shown else 0)
        for path in ("", "/metadata", "/thumbnail"):
            answer = as_.get(f"/dicom-web/studies/{uid}{path}")
            assert answer.status_code == (200 if shown else 404), (path, answer.status_code)


def _stow(c: TestClient, *datasets: Dataset) -> Any:
    body, ctype = _multipart([_part10(ds) for ds in datasets])
    return c.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})


def test_stow_rs_stores_the_studies_of_patients_whose_imaging_study_the_caller_may_write(
    hospital: tuple[TestClient, dict[str, Dataset]],
) -> None:
    c, _ = hospital
    dicom = dicom_of(c.app.state.services)  # type: ignore[attr-defined]
    dra = token(c, "dra", "openid fhirUser user/*.cruds")
    mine, theirs, unknown = ct(PatientID="pa"), ct(PatientID="pb"), ct(PatientID="nobody")
    answer = _stow(dra, mine)
    assert answer.status_code == 200, answer.text
    assert str(mine.StudyInstanceUID) in fhir_studies(dra)
    written = imaging_study(dra, str(mine.StudyInstanceUID))
    assert written["subject"] == {"reference": "Patient/pa"}
    # pb is hb's patient; no Patient has PatientID "nobody" and dra may not register one
    # for another hospital (a Patient without managingOrganization is outside ha's)
    for ds in (theirs, unknown):
        refused = _stow(dra, ds)
        assert refused.status_code == 403, refused.text
        failure = refused.json()["00081198"]["Value"][0]
        assert failure["00081197"]["Value"] == [NOT_AUTHORIZED]
        assert failure["00081155"]["Value"] == [str(ds.SOPInstanceUID)]
        assert dicom.index.instance(str(ds.SOPInstanceUID)) is None  # nothing stored
        assert dicom.index.study(str(ds.StudyInstanceUID)) is None
    drb = token(c, "drb", "openid fhirUser user/*.cruds")
    assert str(theirs.StudyInstanceUID) not in fhir_studies(drb)
    # one request with both: the caller's study stored, the other refused (202)
    again, other = ct(PatientID="pa"), ct(PatientID="pb")
    mixed = _stow(dra, again, other)
    assert mixed.status_code == 202, mixed.text
    assert [s["00081155"]["Value"][0] for s in mixed.json()["00081199"]["Value"]] == [
        str(again.SOPInstanceUID)
    ]
    assert dicom.index.instance(str(other.SOPInstanceUID)) is None


def test_stow_rs_for_a_patient_launch_follows_its_write_scopes(
    hospital: tuple[TestClient, dict[str, Dataset]],
) -> None:
    c, studies = hospital
    reader = token(c, "dra", "launch/patient patient/*.rs")
    assert _stow(reader, ct(PatientID="pa")).status_code == 403  # no create/update granted
    writer = token(c, "dra", "launch/patient patient/*.rs patient/ImagingStudy.cu")
    into_existing = ct(str(studies["pa"].StudyInstanceUID), PatientID="pa", SeriesNumber=3)
    stored = _stow(writer, into_existing)
    assert stored.status_code == 200, stored.text
    assert imaging_study(writer, str(into_existing.StudyInstanceUID))["numberOfSeries"] == 3
    # another patient's study, even an existing one: refused, the study unchanged
    into_pb = ct(str(studies["pb"].StudyInstanceUID), PatientID="pb", SeriesNumber=3)
    assert _stow(writer, into_pb).status_code == 403
    drb = token(c, "drb", "openid fhirUser user/*.cruds")
    assert imaging_study(drb, str(into_pb.StudyInstanceUID))["numberOfSeries"] == 2


def test_dicomweb_reads_are_audited_like_fhir_reads(
    hospital: tuple[TestClient, dict[str, Dataset]],
) -> None:
    """IHE BALP (security.md §4): each read or search of patient data gives an AuditEvent
    per patient naming what was read; the trail's writer expands them (flushed here, as
    tests/test_audit.py does)."""
    from test_audit import events

    c, studies = hospital
    dra = token(c, "dra", "openid fhirUser user/*.cruds")
    uid = str(studies["pa"].StudyInstanceUID)
    study = imaging_study(dra, uid)
    version = f"ImagingStudy/{study['id']}/_history/{study['meta']['versionId']}"
    before = len(events(c))
    assert dra.get("/dicom-web/studies", params={"PatientID": "pa"}).status_code == 200
    assert dra.get(f"/dicom-web/studies/{uid}/metadata").status_code == 200
    new = events(c)[before:]
    by_kind = {e["subtype"][0]["code"]: e for e in new}
    assert set(by_kind) == {"search-type", "read"}, [e["subtype"] for e in new]
    for kind, event in by_kind.items():
        whats = [e["what"].get("reference") for e in event["entity"]]
        assert version in whats and "Patient/pa" in whats, (kind, whats)
        assert event["outcome"] == "0" and event["action"] == ("E" if kind[0] == "s" else "R")
        assert {a["who"].get("reference") for a in event["agent"]} & {"PractitionerRole/dra"}
    query = next(e for e in by_kind["search-type"]["entity"] if "query" in e)["query"]
    assert base64.b64decode(query).decode() == "PatientID=pa"
