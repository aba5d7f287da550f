"""Clients, users and EHR launch values as data: what `fhir-server client|user|launch` and
`POST /auth/launch` create. Secrets and passwords are kept only as scrypt hashes."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from ..policy.decide import BREAK_GLASS_ROLE, ROLES
from ..storage.contract import AuthTables
from .scopes import DEFAULT_APP_SCOPES, DEFAULT_BACKEND_SCOPES
from .secrets import hash_secret, new_token, token_hash

#: seconds a launch value stays usable (SMART: short-lived; one use is our choice)
LAUNCH_SECONDS = 3600
_REFERENCE = re.compile(r"(Patient|PractitionerRole|Practitioner|Encounter)/[A-Za-z0-9\-.]{1,64}")


class AdminError(ValueError):
    """Bad input to a registration command."""


def add_client(
    auth: AuthTables,
    client_id: str,
    redirect_uris: list[str],
    secret: str | None = None,
    jwks: dict[str, Any] | None = None,
    public: bool = False,
    scope: str | None = None,
    trusted: bool = False,
    origins: list[str] | None = None,
    organization: str | None = None,
) -> dict[str, Any]:
    """Register (or replace) a client. Exactly one way to authenticate: a secret
    (client_secret_basic/post), a JWKS (private_key_jwt, SMART Backend Services and
    confidential-asymmetric apps) or none (a public app, PKCE only). `origins`: the browser
    origins its pages run on (CORS); by default those of its redirect URIs. `organization`
    (`Organization/id`): a backend client acting for one hospital sees what its users would
    (the consortium rule); without it, a system client is not narrowed by organization."""
    if sum((secret is not None, jwks is not None, public)) != 1:
        raise AdminError("give exactly one of --secret, --jwks, --public")
    if not client_id or not re.fullmatch(r"[\x21-\x7e]{1,200}", client_id):
        raise AdminError("client id: 1-200 visible ASCII characters")
    for uri in redirect_uris:
        if not re.match(r"https?://[^\s#]+$", uri):
            raise AdminError(f"redirect URI must be absolute http(s) without fragment: {uri}")
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise AdminError("--jwks: a JSON Web Key Set ({'keys': [...]})")
    if jwks is not None and any("d" in k for k in jwks["keys"]):
        raise AdminError("--jwks holds a private key: register the public keys only")
    for origin in origins or ():
        if not _bare_origin(origin):
            raise AdminError(f"origin must be scheme://host[:port], without a path: {origin}")
    if organization is not None and not re.fullmatch(
        r"Organization/[A-Za-z0-9\-.]{1,64}", organization
    ):
        raise AdminError(f"organization must be Organization/ID: {organization}")
    method = "client_secret_basic" if secret else "private_key_jwt" if jwks else "none"
    default = DEFAULT_BACKEND_SCOPES if jwks and not redirect_uris else DEFAULT_APP_SCOPES
    client = {
        "client_id": client_id,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": method,
        "scope": " ".join((scope if scope is not None else default).split()),
        "trusted": trusted,
        "origins": _origins([*redirect_uris] if origins is None else origins),
        **({"secret_hash": hash_secret(secret)} if secret else {}),
        **({"jwks": jwks} if jwks else {}),
        **({"organization": organization} if organization else {}),
    }
    auth.put_client(client_id, client)
    return client


def origin_of(url: str) -> str | None:
    """The serialized origin of an http(s) URL (RFC 6454 §6.2), as a browser sends it in the
    Origin header: lower-case scheme and host, the port only when not the scheme's default."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def client_origins(client: dict[str, Any]) -> list[str]:
    """The origins a client's browser pages may call us from (clients registered before
    origins were stored: those of their redirect URIs)."""
    if "origins" in client:
        return list(client["origins"])
    return _origins(client.get("redirect_uris", []))


def _origins(urls: list[str]) -> list[str]:
    return sorted({o for o in map(origin_of, urls) if o})


def _bare_origin(value: str) -> bool:
    parts = urlsplit(value)
    bare = parts.path in ("", "/") and not (parts.query or parts.fragment or "@" in parts.netloc)
    return bare and origin_of(value) is not None


def add_user(
    auth: AuthTables,
    username: str,
    password: str,
    fhir_user: str,
    roles: list[str] | None = None,
) -> dict[str, Any]:
    """A login linked to the FHIR resource the person is: a PractitionerRole (and through it
    an Organization) or a Patient (who sees only their own compartment)."""
    if not re.fullmatch(r"[\w.@\-]{1,100}", username):
        raise AdminError("username: 1-100 letters, digits, '.', '@', '-', '_'")
    if len(password) < 8:
        raise AdminError("password: at least 8 characters")
    if not re.fullmatch(r"(PractitionerRole|Patient)/[A-Za-z0-9\-.]{1,64}", fhir_user):
        raise AdminError("link the user to PractitionerRole/ID or Patient/ID")
    unknown = set(roles or ()) - set(ROLES)
    if unknown:
        raise AdminError(f"unknown role {sorted(unknown)[0]}: one of {', '.join(ROLES)}")
    if BREAK_GLASS_ROLE in (roles or ()) and not fhir_user.startswith("PractitionerRole/"):
        raise AdminError("only practitioners may break the glass, not patients")
    user = {
        "username": username,
        "password_hash": hash_secret(password),
        "fhir_user": fhir_user,
        "roles": sorted(set(roles or ())),
    }
    auth.put_user(username, user)
    return {k: v for k, v in user.items() if k != "password_hash"}


def create_launch(
    auth: AuthTables,
    client_id: str,
    username: str,
    patient: str | None = None,
    encounter: str | None = None,
) -> str:
    """A one-time `launch` value binding an EHR launch to a client, a user and its context
    (SMART App Launch §EHR launch: the server resolves it at authorization)."""
    if auth.client(client_id) is None:
        raise AdminError(f"unknown client: {client_id}")
    if auth.user(username) is None:
        raise AdminError(f"unknown user: {username}")
    for ref, kind in ((patient, "Patient"), (encounter, "Encounter")):
        if ref is not None and not (ref.startswith(kind + "/") and _REFERENCE.fullmatch(ref)):
            raise AdminError(f"expected {kind}/ID, got {ref}")
    value = new_token()
    data = {"username": username, "patient": patient, "encounter": encounter}
    auth.put_grant("auth_launch", token_hash(value), client_id, data, time.time() + LAUNCH_SECONDS)
    return value
