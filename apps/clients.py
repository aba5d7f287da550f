"""The apps as SMART clients: public (a browser keeps no secret; PKCE S256 instead), each with
its redirect URI under `<origin>/apps/`. Registered by the demo and by `fhir-server apps
register --origin …` for a real deployment (the origin the users' browsers open)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fhir_server.auth.admin import add_client

if TYPE_CHECKING:  # typing only: apps reach storage through the auth feature
    from fhir_server.services import Services
    from fhir_server.settings import Settings
    from fhir_server.storage.contract import AuthTables


@dataclass(frozen=True)
class App:
    client_id: str
    #: the page the authorization server redirects to (index.html completes the launch)
    page: str
    #: what the client may be granted: the app asks for what it needs of these
    scope: str


#: the workbench acts as the signed-in doctor (user/ scopes: worklists span patients) and opens
#: on the EHR's patient (launch, launch/patient); the patient app sees its own compartment only
APPS = (
    App("yl-workbench", "workbench/index.html",
        "openid fhirUser launch launch/patient user/*.cruds"),
    App("yl-patient", "patient/index.html", "openid fhirUser launch/patient patient/*.rs"),
)  # fmt: skip


def register(auth: AuthTables, origins: list[str]) -> str:
    """Register (or reset) both apps for pages served at `origins`; a line for the console."""
    for app in APPS:
        uris = [f"{o.rstrip('/')}/apps/{app.page}" for o in origins]
        add_client(auth, app.client_id, uris, public=True, scope=app.scope, origins=origins)
    return f"SMART apps {', '.join(a.client_id for a in APPS)} at " + ", ".join(
        f"{o.rstrip('/')}/apps/" for o in origins
    )


def demo_origins(settings: Settings) -> list[str]:
    """Where the demo server's pages are opened: the public base URL's origin, else the
    listening address (and `localhost` for 127.0.0.1, both being common in a browser)."""
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        return [f"{parts.scheme}://{parts.netloc}"]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    origins = [f"http://{host}:{settings.port}"]
    if host == "127.0.0.1":
        origins.append(f"http://localhost:{settings.port}")
    return origins


def register_demo(services: Services) -> str:
    """The demo's registration (plugins.Plugin.demo)."""
    return register(services.features["auth"].store, demo_origins(services.settings))
