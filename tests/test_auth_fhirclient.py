"""End to end with a real SMART client: Python `fhirclient` (smart-on-fhir/client-py) against
uvicorn, discovering the endpoints from the CapabilityStatement's oauth-uris: an EHR launch,
with a launch value from the `fhir-server launch` command and a browser played by requests;
and SMART Backend Services (client_credentials, private_key_jwt with RS384 and ES384)."""

from __future__ import annotations

import html
import re
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
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


# --- SMART Backend Services -------------------------------------------------------------------


def _seed(database: Path, tmp_path: Path) -> None:
    """Two hospitals' patients and an Observation each, loaded by `fhir-server load` (the
    server has `auth` on: REST writes would need a token of their own)."""
    h1, h2 = ({"reference": f"Organization/{o}"} for o in ("h1", "h2"))
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "h1", "name": "H1"},
        {"resourceType": "Organization", "id": "h2", "name": "H2"},
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Wang"}],
         "managingOrganization": h1},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Zhao"}],
         "managingOrganization": h2},
        *({"resourceType": "Observation", "id": f"o-{p}", "status": "final",
           "code": {"text": "pulse"}, "subject": {"reference": f"Patient/{p}"}}
          for p in ("p1", "p2")),
    ]  # fmt: skip
    ndjson = tmp_path / "seed.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(r) for r in resources))
    assert cli.main(["load", str(ndjson), "--database", str(database)]) == 0


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_python_fhirclient_backend_services(
    live_server_with: Any, tmp_path: Path, alg: str
) -> None:
    """fhirclient 4.4 does the client_credentials request itself when given a client assertion
    (`jwt_token`), but cannot make one: it holds no key and signs nothing. So the assertion is
    signed here (joserfc), for the token endpoint fhirclient discovered in the
    CapabilityStatement; the rest (token request, reads, searches, the FHIR models) is fhirclient's.
    """
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.server import (
        FHIRNotFoundException,
        FHIRPermissionDeniedException,
        FHIRUnauthorizedException,
    )
    from joserfc import jwt
    from joserfc.jwk import ECKey, RSAKey

    base = live_server_with(auth="on")
    database = tmp_path / "live0.db"
    _seed(database, tmp_path)
    key: Any = (
        RSAKey.generate_key(2048, {"kid": "emr1"}, private=True)
        if alg == "RS384"
        else ECKey.generate_key("P-384", {"kid": "emr1"}, private=True)
    )
    jwks = tmp_path / "emr.jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    assert cli.main(["client", "add", "--client-id", "emr", "--jwks", str(jwks), "--scope",
                     "system/*.rs", "--organization", "Organization/h1",
                     "--database", str(database)]) == 0  # fmt: skip

    smart = fhirclient.FHIRClient(settings={"app_id": "emr", "api_base": base,
                                            "scope": "system/*.rs"})  # fmt: skip
    smart.wants_patient = False  # else fhirclient adds `launch/patient` to the scope
    assert smart.prepare() is False  # the CapabilityStatement is read; no token yet
    token_uri = smart.server.auth.state["token_uri"]  # from the oauth-uris extension
    assert token_uri == base.removesuffix("/fhir") + "/auth/token"
    now = int(time.time())
    claims = {"iss": "emr", "sub": "emr", "aud": token_uri, "exp": now + 240,
              "jti": uuid.uuid4().hex}  # fmt: skip
    smart.server.auth.jwt_token = jwt.encode(
        {"alg": alg, "kid": "emr1", "typ": "JWT"}, claims, key, algorithms=[alg]
    )
    smart.authorize()  # grant_type=client_credentials with the client assertion
    assert smart.ready and smart.launch_context["scope"] == "system/*.rs"
    assert smart.launch_context["token_type"].lower() == "bearer"

    # h1's system client sees h1's patient and its data, and nothing of h2's (the consortium
    # rule: Organization/h1 manages p1 only)
    assert Patient.read("p1", smart.server).name[0].family == "Wang"
    with pytest.raises(FHIRNotFoundException):
        Patient.read("p2", smart.server)
    found = Observation.where(struct={"code:text": "pulse"}).perform_resources_iter(smart.server)
    assert [o.id for o in found] == ["o-p1"]
    patients = Patient.where(struct={}).perform_resources_iter(smart.server)
    assert [p.id for p in patients] == ["p1"]
    # system/*.rs reads and searches only
    with pytest.raises(FHIRPermissionDeniedException):
        Patient({"id": "p1", "name": [{"family": "Li"}]}).update(smart.server)
    # the same assertion again is a replay (its jti was used): refused, no token
    with pytest.raises(FHIRUnauthorizedException) as refused:
        smart.authorize()
    assert refused.value.response.json()["error"] == "invalid_client"
