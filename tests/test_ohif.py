"""OHIF (npm @ohif/app, prebuilt) in headless Chromium against our DICOMweb root (issue 13):
the study list shows the study, the viewer opens it from the link our ImagingStudy gives (IHE
IID), and the image is drawn (the viewport's pixels are not a blank canvas). OHIF is served
from a second origin, registered for CORS like any browser app.

Needs Debian's chromium, tests/browser's npm packages (playwright-core) and OHIF's `dist/`
(`scripts/fetch_ohif.sh` unpacks it into tests/browser/ohif/); .ci/run provides all three and
sets FHIR_SERVER_BROWSER_REQUIRED=1, so CI fails where they are missing instead of skipping."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import _serve_live, make_services, seed_services
from dicom_peers import ct, free_port
from PIL import Image, ImageStat
from pydicom.uid import generate_uid
from smart import PASSWORD

from fhir_server.auth import admin
from fhir_server.services import Parts
from integrations.dicom import dicom_of
from integrations.patients import identifier_system

BROWSER = Path(__file__).parent / "browser"
OHIF = BROWSER / "ohif" / "dist"
REQUIRED = os.environ.get("FHIR_SERVER_BROWSER_REQUIRED") == "1"


def _missing() -> str | None:
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        return "Debian's chromium is not installed (apt-get install chromium)"
    if not (BROWSER / "node_modules" / "playwright-core").exists() or not shutil.which("node"):
        return "tests/browser has no node_modules (cd tests/browser && npm ci)"
    if not (OHIF / "index.html").exists():
        return "OHIF is not unpacked (scripts/fetch_ohif.sh)"
    return None


pytestmark = [
    pytest.mark.slow,  # a real browser: `make test-slow`
    pytest.mark.skipif(
        _missing() is not None and not REQUIRED, reason=f"OHIF TEST NOT RUN: {_missing()}"
    ),
]


def _app_config(dicomweb: str, fhir: str) -> bytes:
    """OHIF's data source for our DICOMweb root, signing in with our authorization server:
    the configuration the README shows. `oidc` is OHIF's OpenID Connect client (code flow
    with PKCE, oidc-client-ts); it reads our endpoints from the SMART configuration (we
    publish no openid-configuration), sends SMART's `aud`, and puts the access token on
    every DICOMweb request."""
    return f"""window.config = {{
  routerBasename: '/',
  oidc: [{{
    authority: '{fhir}',
    metadataUrl: '{fhir}/.well-known/smart-configuration',
    client_id: 'ohif',
    redirect_uri: '/callback',
    response_type: 'code',
    scope: 'openid fhirUser user/ImagingStudy.rs',
    extraQueryParams: {{ aud: '{fhir}' }},
    post_logout_redirect_uri: '/',
  }}],
  showStudyList: true,
  extensions: [],
  modes: [],
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  defaultDataSourceName: 'fhirserver',
  dataSources: [{{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'fhirserver',
    configuration: {{
      friendlyName: 'fhir-server',
      name: 'fhirserver',
      wadoUriRoot: '{dicomweb}',
      qidoRoot: '{dicomweb}',
      wadoRoot: '{dicomweb}',
      qidoSupportsIncludeField: true,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      omitQuotationForMultipartRequest: true,
      bulkDataURI: {{ enabled: true, relativeResolution: 'studies' }},
    }},
  }}],
}};
""".encode()


class _Viewer(SimpleHTTPRequestHandler):
    """OHIF's dist/ as a single-page app (unknown paths answer index.html), with our
    app-config.js."""

    config = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        if not (OHIF / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def viewer(tmp_path: Path, parts: Parts) -> Iterator[dict[str, Any]]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    services = make_services(tmp_path / "fhir.db", parts, auth="on",
                             dicom_viewer_url=f"{origin}/viewer?StudyInstanceUIDs={{study}}")
    live = _serve_live(services)
    base = next(live).removesuffix("/fhir")
    # the imaging centre: its radiologist, and the patient it manages (PatientID CN0001)
    system = identifier_system(services.settings, None)
    seed_services(services, [
        {"resourceType": "Organization", "id": "imaging", "name": "Imaging centre"},
        {"resourceType": "PractitionerRole", "id": "rad",
         "organization": {"reference": "Organization/imaging"}},
        {"resourceType": "Patient", "id": "zhang",
         "identifier": [{"system": system, "value": "CN0001"}],
         "managingOrganization": {"reference": "Organization/imaging"}},
    ])  # fmt: skip
    store = services.features["auth"].store
    admin.add_user(store, "radiologist", PASSWORD, "PractitionerRole/rad")
    # OHIF is the hospital's own viewer (trusted: no consent page), a public client (PKCE)
    # calling DICOMweb from its own origin, registered like any browser app's (CORS)
    admin.add_client(store, "ohif", [f"{origin}/callback"], public=True, trusted=True,
                     origins=[origin])  # fmt: skip
    config = _app_config(f"{base}/dicom-web", f"{base}/fhir")
    handler = type("Viewer", (_Viewer,), {"config": config})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(OHIF)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"origin": origin, "base": base, "services": services}
    finally:
        httpd.shutdown()
        next(live, None)


def test_ohif_lists_and_opens_the_study_and_draws_the_image(
    viewer: dict[str, Any], tmp_path: Path
) -> None:
    missing = _missing()
    if missing:
        pytest.fail(missing)
    study, series = generate_uid(), generate_uid()
    instances = [ct(study, series, i + 1, PatientID="CN0001", SpecificCharacterSet="ISO_IR 192",
                    PatientName="Zhang^San=张^三", StudyDescription="Chest CT",
                    SeriesNumber=1) for i in range(3)]  # fmt: skip
    dicom = dicom_of(viewer["services"])
    from integrations.dicom.sync import sync_study

    for ds in instances:
        data = io.BytesIO()
        ds.save_as(data, enforce_file_format=True)
        dicom.store.put(data.getvalue())
    sync_study(viewer["services"], dicom.index, study)
    # the link a referral screen follows: ImagingStudy -> Endpoint (IHE IID) -> OHIF
    # (read from the store: FHIR over HTTP needs a token, and this test's token is OHIF's)
    session = viewer["services"].store.reader()
    rid = dicom.index.resource_ids([study])[study]
    imaging = json.loads(session.current("ImagingStudy", rid)[1].json)
    iid = json.loads(session.current("Endpoint", "dicom-iid")[1].json)
    assert {"reference": "Endpoint/dicom-iid"} in imaging["endpoint"]
    # (the Endpoint names the configured origin; this live server's port is a random one)
    path = iid["address"].split("://", 1)[1].split("/", 1)[1]
    link = httpx.get(f"{viewer['base']}/{path}/IHEInvokeImageDisplay",
                     params={"requestType": "STUDY", "studyUID": study})  # fmt: skip
    assert link.status_code == 302
    assert link.headers["location"] == f"{viewer['origin']}/viewer?StudyInstanceUIDs={study}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # without a token DICOMweb answers 401: OHIF must sign in and send the token
    assert httpx.get(f"{viewer['base']}/dicom-web/studies").status_code == 401
    config = {"viewer": viewer["origin"], "study": study, "shots": str(shots),
              "listed": "Zhang", "login": {"user": "radiologist", "password": PASSWORD}}
    done = subprocess.run(["node", str(BROWSER / "ohif.mjs"), json.dumps(config)],
                          capture_output=True, text=True, timeout=300, cwd=BROWSER)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Zhang" in seen["list"] and "Chest CT" in seen["list"], seen["list"][:2000]
    statuses = {(r["url"].split("/dicom-web/", 1)[1].split("?")[0].split("/")[-1], r["status"])
                for r in seen["requests"]}  # fmt: skip
    assert seen["loginPage"].startswith(f"{viewer['base']}/auth/authorize"), seen["loginPage"]
    failed = [r for r in seen["requests"] if r["status"] >= 400]
    assert failed == [], failed
    assert all(r["bearer"] for r in seen["requests"]), seen["requests"]
    kinds = {k for k, _ in statuses}
    assert {"studies", "series", "metadata", "1"} <= kinds, sorted(kinds)  # 1: frames/1
    # the image was drawn: the viewport of the screenshot holds the CT, not one flat colour
    box = seen["viewport"]
    picture = Image.open(shots / "viewer.png").convert("L").crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
         int(box["y"] + box["height"])))  # fmt: skip
    stats = ImageStat.Stat(picture)
    distinct = sum(1 for count in picture.histogram() if count)
    assert stats.stddev[0] > 10 and distinct > 30, (stats.stddev, distinct, seen["errors"])
