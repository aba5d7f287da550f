"""`fhir-server export`: a Bulk Data client for a running server. It kicks an export off
(Bulk Data Access IG 2.0.0: `Prefer: respond-async`), polls the status URL as its Retry-After
asks, showing X-Progress as a progress bar, then downloads every file of the manifest."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tqdm import tqdm

_PERCENT = re.compile(r"^(\d{1,3})%")


class ExportError(Exception):
    """The server refused or failed the export (its OperationOutcome's diagnostics)."""


def run(
    base: str, out: Path, token: str | None = None, level: str = "system",
    params: list[tuple[str, str]] | None = None, quiet: bool = False,
) -> dict[str, Any]:
    """Export, wait and download into `out`; the manifest. `level`: system, patient or
    group/ID."""
    path = {"system": "$export", "patient": "Patient/$export"}.get(level)
    if path is None:
        path = f"Group/{level.removeprefix('group/')}/$export"
    query = f"?{urlencode(params)}" if params else ""
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, answer, body = _request(f"{base.rstrip('/')}/{path}{query}", headers)
    if status != 202:
        raise ExportError(_diagnostics(status, body))
    poll = answer["Content-Location"]
    manifest = _wait(poll, headers, quiet)
    out.mkdir(parents=True, exist_ok=True)
    for item in manifest.get("output", []) + manifest.get("deleted", []) + manifest.get(
        "error", []
    ):
        name = item["url"].rsplit("/", 1)[-1]
        download = {**headers, "Accept": "application/fhir+ndjson"}
        status, _, data = _request(item["url"], download)
        if status != 200:
            raise ExportError(f"{item['url']}: {_diagnostics(status, data)}")
        (out / name).write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def _wait(poll: str, headers: dict[str, str], quiet: bool) -> dict[str, Any]:
    with tqdm(total=100, unit="%", file=sys.stderr, disable=quiet,
              bar_format="{l_bar}{bar}| {postfix}") as bar:  # fmt: skip
        while True:
            status, answer, body = _request(poll, headers)
            if status == 200:
                bar.update(100 - bar.n)
                manifest: dict[str, Any] = json.loads(body)
                return manifest
            if status != 202:
                raise ExportError(_diagnostics(status, body))
            progress = answer.get("X-Progress", "")
            match = _PERCENT.match(progress)
            if match:
                bar.update(min(100, int(match.group(1))) - bar.n)
            bar.set_postfix_str(progress)
            time.sleep(min(float(answer.get("Retry-After", "1") or 1), 10.0))


def _request(url: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 - a URL the user gave
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _diagnostics(status: int, body: bytes) -> str:
    try:
        issues = json.loads(body).get("issue", [])
        text = "; ".join(i.get("diagnostics", "") for i in issues)
    except (ValueError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {text}"
