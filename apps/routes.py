"""/apps/: the apps' static files (ES modules, CSS, vendored libraries) and the displays of our
CodeSystems for the apps' two languages. No build step: the files are served as committed."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from fhir_server.errors import error

WEB = Path(__file__).resolve().parent / "web"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
}
#: pages and scripts are small and change with the server: the browser asks again each time
#: (an ETag answer is cheap), so an upgraded server never runs with yesterday's script.
#: The CSP keeps the apps to their own origin's scripts (no inline script, no eval); blob:
#: frames show the server's slip HTML fetched with the token; data: images are QR codes.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; frame-src 'self' blob:; connect-src 'self'; "
        "media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'self'"
    ),
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


@router.api_route("/apps", methods=["GET", "HEAD"])
async def apps_index() -> Response:
    return RedirectResponse("/apps/index.html", status_code=302)


@router.api_route("/apps/codes.json", methods=["GET", "HEAD"])
async def codes(request: Request) -> Response:
    """{system url: {code: {"en": display, "zh": zh-CN designation}}} of our CodeSystems
    (terminology/), the one source of the displays the apps show in either language."""
    directory = request.app.state.services.settings.terminology_dir
    return JSONResponse(_displays(Path(directory)), headers={"Cache-Control": "no-cache"})


@router.api_route("/apps/{path:path}", methods=["GET", "HEAD"])
async def static(path: str) -> Response:
    """A file under apps/web; 404 for anything else (no listing, nothing outside it)."""
    target = (WEB / path).resolve()
    if not target.is_relative_to(WEB) or not target.is_file() or target.suffix not in TYPES:
        raise error(404, "not-found", f"No app file /apps/{path}")
    return FileResponse(target, media_type=TYPES[target.suffix], headers=HEADERS)


@cache
def _displays(directory: Path) -> dict[str, dict[str, dict[str, str]]]:
    out: dict[str, dict[str, dict[str, str]]] = {}
    for file in sorted(directory.glob("CodeSystem-*.json")):
        system: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        concepts = out.setdefault(system["url"], {})
        stack = list(reversed(system.get("concept", ())))  # in the CodeSystem's order
        while stack:
            concept = stack.pop()
            stack.extend(reversed(concept.get("concept", ())))
            zh = next(
                (d["value"] for d in concept.get("designation", ())
                 if d.get("language", "").lower().startswith("zh")),
                concept.get("display", concept["code"]),
            )  # fmt: skip
            concepts[concept["code"]] = {"en": concept.get("display", concept["code"]), "zh": zh}
    return out
