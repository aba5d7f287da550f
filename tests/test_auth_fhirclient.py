"""End to end with a real SMART client: Python `fhirclient` (smart-on-fhir/client-py) does an
EHR launch against uvicorn, discovering the endpoints from the CapabilityStatement's oauth-uris,
with a launch value from the `fhir-server launch` command and a browser played by requests."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_server import cli

fhirclient = pytest.importorskip("fhirclient.client")

REDIRECT = "http://app.example/callback"
PASSWORD = "correct horse"


def _browser(session: requests.Session, url: str) -> str:
    """Sign in and approve as a person would; the redirect to the app."""
    r = session.get(url, allow_redirects=False)
    for _ in range(4):
        if r.status_code in (302, 303):
            return str(r.headers["location"])
        assert r.status_code == 200, r.text
        form = {
            html.unescape(n): html.unescape(v)
            for n, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', r.text)
        }
        if 'name="password"' in r.text:
            form.update(username="drwang", password=PASSWORD)
        else:
            form["approve"] = "yes"
        r = session.post(url.split("?")[0], data=form, allow_redirects=False)
    raise AssertionError("no redirect")


def test_python_fhirclient_ehr_launch(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = requests.Session()
    for resource in (
        {"resourceType": "Organization", "id": "h1", "name": "H1"},
        {
            "resourceType": "PractitionerRole",
            "id": "dr1",
            "organization": {"reference": "Organization/h1"},
        },
        {  # h1's patient: the consortium rule lets dr1 of h1 see it
            "resourceType": "Patient",
            "id": "p1",
            "name": [{"family": "Wang"}],
            "managingOrganization": {"reference": "Organization/h1"},
        },
    ):
        r = web.put(f"{live_server}/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.text
    database = ["--database", str(tmp_path / "live.db")]
    run: Any = cli.main
    assert (
        run(
            [
                "client",
                "add",
                "--client-id",
                "ehr-app",
                "--redirect-uri",
                REDIRECT,
                "--secret",
                "app-secret",
                *database,
            ]
        )
        == 0
    )
    assert (
        run(
            [
                "user",
                "add",
                "--username",
                "drwang",
                "--password",
                PASSWORD,
                "--practitioner-role",
                "PractitionerRole/dr1",
                *database,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        run(
            [
                "launch",
                "--client-id",
                "ehr-app",
                "--user",
                "drwang",
                "--patient",
                "Patient/p1",
                *database,
            ]
        )
        == 0
    )
    launch = capsys.readouterr().out.strip()

    smart = fhirclient.FHIRClient(
        settings={
            "app_id": "ehr-app",
            "app_secret": "app-secret",
            "api_base": live_server,
            "redirect_uri": REDIRECT,
            "launch_token": launch,
            "scope": "openid fhirUser patient/*.rs offline_access",
        }
    )
    url = smart.authorize_url
    assert "code_challenge_method=S256" in url and "aud=" in url
    smart.handle_callback(_browser(web, url))
    assert smart.ready and smart.patient_id == "p1"
    assert smart.server.auth.refresh_token
    patient = smart.server.request_json("Patient/p1")
    assert patient["name"][0]["family"] == "Wang"
    # the token is checked on the way in: a revoked or wrong one is refused
    bad = web.get(f"{live_server}/Patient/p1", headers={"Authorization": "Bearer forged"})
    assert bad.status_code == 401
