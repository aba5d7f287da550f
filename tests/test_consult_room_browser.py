"""End-to-end video in a real browser: two headless Chromium pages (fake camera and
microphone) join the same Appointment through `/apps/consult-room` on a live server, connect
peer to peer over loopback, and each decodes the other's video (getStats framesDecoded); one
records and uploads (a Media on the Encounter); a third page, with a token for another
Appointment, is refused with 4403. Driven by playwright-core (tests/browser/consult-room.mjs).

Runs when Debian's chromium and tests/browser/node_modules are present; skips otherwise,
except where FHIR_SERVER_BROWSER_REQUIRED=1 (CI) makes the missing piece a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat
from test_consult_room import seed, token

HERE = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install chromium (CI does, in .ci/run)"
    if shutil.which("node") is None:
        return "node not found: apt-get install nodejs"
    if not (HERE / "node_modules" / "playwright-core").exists():
        return "npm packages missing: run `npm ci` in tests/browser (CI does, in .ci/run)"
    return None


REQUIRED = os.environ.get("FHIR_SERVER_BROWSER_REQUIRED") == "1"
pytestmark = [
    pytest.mark.slow,  # a real browser: `make test-slow`
    pytest.mark.skipif(
        _missing() is not None and not REQUIRED, reason=f"BROWSER TEST NOT RUN: {_missing()}"
    ),
]


def test_two_browsers_see_each_other_and_a_third_with_another_token_is_refused(
    live_server: str, tmp_path: Path
) -> None:
    seed(live_server)
    root = live_server.removesuffix("/fhir")

    def room(appointment: str, participant: str, token_for: str | None = None) -> str:
        value = token(live_server, token_for or appointment, participant)
        return f"{root}/apps/consult-room?appointment={appointment}&token={value}"

    shots = tmp_path / "screenshots"
    config = {
        "first": room("a1", "Practitioner/dr-a"),
        "second": room("a1", "Practitioner/dr-b"),
        "foreign": room("a1", "Practitioner/dr-a", token_for="a2"),  # a2's token, a1's room
        "shots": str(shots),
    }
    done = subprocess.run(["node", str(HERE / "consult-room.mjs"), json.dumps(config)],
                          capture_output=True, text=True, timeout=300, cwd=HERE)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "failure" not in seen, seen
    for side in ("first", "second"):
        assert seen[side]["peers"] == 1 and seen[side]["connected"] == 1, seen
        assert seen[side]["framesDecoded"] > 10, seen
    assert seen["foreign"]["closeCode"] == 4403 and "无权" in seen["foreign"]["status"], seen
    assert seen["afterForeign"]["peers"] == 1  # the refused page never entered the room
    assert seen["upload"]["status"] == 201, seen
    assert seen["afterLeave"]["peers"] == 0
    assert seen["errors"] == []
    media = httpx.get(f"{live_server}/{seen['upload']['media']}").json()
    assert media["content"]["contentType"] == "video/webm" and media["content"]["size"] > 1000
    webm = httpx.get(f"{live_server}/{media['content']['url']}", headers={"Accept": "video/webm"})
    assert webm.content[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic of a WebM (Matroska) file
    # the screenshot shows the two videos: not one flat colour
    picture = Image.open(shots / "consult-room.png").convert("L")
    assert ImageStat.Stat(picture).stddev[0] > 10
    encounter = httpx.get(f"{live_server}/Encounter", params={"appointment": "Appointment/a1"})
    periods = [p["period"] for p in encounter.json()["entry"][0]["resource"]["participant"]]
    assert len(periods) >= 2
