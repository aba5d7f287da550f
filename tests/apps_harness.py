"""What the apps' tests share (tests/test_apps_*.py): the demo consortium served by uvicorn with
authorization on and the apps registered for its origin (a pytest plugin: conftest.py loads it,
so the `demo` fixture is everywhere), a launch value from the CLI, a browser journey run
(tests/browser/*.mjs) and the check that a screenshot is not blank."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageStat

from apps import clients
from fhir_server import cli
from fhir_server.auth.demo import DEMO_PASSWORD
from fhir_server.services import Parts

HERE = Path(__file__).parent / "browser"
ROOT = Path(__file__).resolve().parent.parent
#: where the screenshots are kept (README, Apps): build/ is not in the repository
SCREENSHOTS = Path(os.environ.get("FHIR_SERVER_SCREENSHOTS") or ROOT / "build/screenshots/apps")


@pytest.fixture
def demo(tmp_path: Path, parts: Parts) -> Iterator[str]:
    """The demo consortium in tmp_path/demo.db, served (serve_demo)."""
    yield from serve_demo(tmp_path / "demo.db", parts)


def serve_demo(db: Path, parts: Parts) -> Iterator[str]:
    """The demo consortium (`fhir-server demo`) in `db`, served by uvicorn with auth on; the
    apps registered for the live server's origin (`fhir-server apps register`). Yields the FHIR
    base URL."""
    from conftest import _serve_live, make_services

    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["demo", "--database", str(db)]) == 0
    services = make_services(db, parts, auth="on")
    for base in _serve_live(services):
        clients.register(services.features["auth"].store, [base.removesuffix("/fhir")])
        yield base


def token(base: str, user: str, scope: str = "openid fhirUser user/*.cruds") -> str:
    """An access token of demo `user` for the workbench (standalone: no patient picked), by
    the authorization-code flow with PKCE S256 over HTTP, the way the app's browser gets it."""
    from smart import auth_code, drive, pkce

    origin = base.removesuffix("/fhir")
    app = "yl-workbench"
    redirect = f"{origin}/apps/workbench/index.html"
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": app, "redirect_uri": redirect, "scope": scope,
        "state": "s", "aud": base, "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    with httpx.Client(base_url=origin) as browser:
        code = auth_code(drive(browser, params, user, password=DEMO_PASSWORD), "s")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                "code_verifier": verifier, "client_id": app}  # fmt: skip
        r = browser.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def launch(db: Path, user: str, patient: str) -> str:
    """An EHR launch value of the workbench for `user` on `patient` (`fhir-server launch`)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["launch", "--client-id", "yl-workbench", "--user", user,
                         "--patient", patient, "--database", str(db)]) == 0  # fmt: skip
    return out.getvalue().strip().splitlines()[-1]


def journey_config(demo: str, tmp_path: Path, fresh: str) -> dict[str, Any]:
    """What every apps journey starts from: the served demo, an EHR launch of the workbench
    for the community doctor on pat-001, the password and where the screenshots go (their
    old ones matching `fresh` removed). Fails where the browser is missing but required."""
    from test_browser_smart import _missing

    missing = _missing()
    if missing is not None:  # reached only where it is required (CI)
        pytest.fail(f"BROWSER TEST REQUIRED but cannot run: {missing}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob(fresh):
        if old.is_file():
            old.unlink()
    return {
        "origin": demo.removesuffix("/fhir"), "iss": demo,
        "launch": launch(tmp_path / "demo.db", "dr-hubin-chc", "Patient/pat-001"),
        "password": DEMO_PASSWORD, "shots": str(SCREENSHOTS),
    }  # fmt: skip


def journey(script: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run tests/browser/`script` with `config`; what it reported (its last stdout line).
    Its whole output is kept beside the screenshots, for a failure."""
    done = subprocess.run(
        ["node", str(HERE / script), json.dumps(config)],
        capture_output=True, text=True, timeout=timeout, cwd=HERE,
    )  # fmt: skip
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"{Path(script).stem}-journey.log").write_text(done.stdout + done.stderr)
    lines = done.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines else {}
    assert done.returncode == 0 and "error" not in out, (out or done.stderr, SCREENSHOTS)
    return out


def not_blank(path: Path) -> tuple[float, int]:
    """(grey-level standard deviation, colours in use) of a screenshot: a blank or one-colour
    page has a deviation near 0 and a handful of colours."""
    with Image.open(path) as image:
        grey = image.convert("L")
        return ImageStat.Stat(grey).stddev[0], len(image.convert("RGB").getcolors(1 << 20) or ())


def assert_screens(shots: list[str]) -> None:
    """Every screenshot is 1366x768 or 390x844 and shows something."""
    for path in map(Path, shots):
        with Image.open(path) as image:
            assert image.size in ((1366, 768), (390, 844)), path
        deviation, colours = not_blank(path)
        assert deviation > 10 and colours > 30, (path, deviation, colours)
