"""SMART App Launch authorization server: clients, users, the OAuth 2 endpoints under /auth,
and the resource-server side that turns a bearer token into a Principal."""

from __future__ import annotations

import logging

from ..services import Services
from .bearer import Bearer
from .cors import Cors
from .discovery import security
from .routes import router
from .server import Auth

__all__ = ["Bearer", "Cors", "register", "router", "security"]
log = logging.getLogger("fhir_server.auth")


def register(services: Services) -> Auth:
    """Keep the authorization server's state on Services (features["auth"])."""
    auth = Auth(services)
    services.features["auth"] = auth
    if services.settings.auth != "on":
        log.warning("auth is off: requests without a bearer token are served anonymously")
    return auth
