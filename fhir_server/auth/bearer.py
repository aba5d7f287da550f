"""The resource-server side (RFC 6750): an `Authorization: Bearer` header on a FHIR request
becomes the request's Principal; a malformed, unknown, expired or revoked token, or one issued
for another FHIR base, is a 401 with `WWW-Authenticate: Bearer error="invalid_token"`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api import http
from ..context import Principal
from ..errors import error
from .secrets import token_hash
from .server import Auth, active_token, organization_of

#: FHIR paths readable without a token even when `auth` is on (discovery)
_OPEN = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")


def resolve(auth: Auth, value: str, base: str) -> tuple[Principal, float] | None:
    """The Principal of a live access token issued for this FHIR base, and when the token
    expires; else None."""
    found = active_token(auth, value, base)
    if found is None:
        return None
    client_id, data, expires_at = found
    return principal(auth, client_id, data, value), expires_at


def bearer_token(scope: Scope) -> str | None:
    """The access token a request or websocket carries: `Authorization: Bearer`, else (a
    websocket only: browsers cannot set its headers) the `access_token` query parameter
    (RFC 6750 §2.3). "" for an Authorization header that is not a bearer token."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else ""
    if scope["type"] == "websocket":
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if name == "access_token":
                return value
    return None


def principal(auth: Auth, client_id: str, data: dict[str, Any], value: str) -> Principal:
    fhir_user = data.get("fhir_user")
    kind = "system" if data.get("system") else "user"
    if fhir_user and fhir_user.startswith("Patient/"):
        kind = "patient"
    patient = data.get("patient")
    return Principal(
        kind=kind,
        client_id=client_id,
        user=data.get("username"),
        fhir_user=fhir_user,
        organization=_organization(auth, client_id, fhir_user, kind),
        patient=f"Patient/{patient}" if patient else None,
        encounter=f"Encounter/{data['encounter']}" if data.get("encounter") else None,
        scopes=tuple(data["scope"].split()),
        roles=frozenset(data.get("roles") or ()),
        token_id=token_hash(value)[:16],
    )


def _organization(auth: Auth, client_id: str, fhir_user: str | None, kind: str) -> str | None:
    """A user's organization (their PractitionerRole's); a system client's, as registered
    (`client add --organization`); None without one."""
    if fhir_user:
        return organization_of(auth.services, fhir_user)
    if kind == "system":
        client = auth.store.client(client_id) or {}
        org = client.get("organization")
        return org if isinstance(org, str) else None
    return None


class Bearer:
    """ASGI middleware inside _Edge (which sets the base URL): resolves the token once per
    request (from auth.principals while fresh) and leaves the Principal in
    `scope["state"]["principal"]` for routes._context. With `auth` off a request without a
    token is anonymous; with it on, 401."""

    def __init__(
        self, app: ASGIApp, auth: Auth, required: bool, prefixes: tuple[str, ...] = ("/fhir",)
    ) -> None:
        self.app, self.auth, self.required = app, auth, required
        #: the paths that answer for a token: /fhir, and what integrations add (/dicom-web)
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        value = bearer_token(scope)
        if value is None:
            if self.required and path not in _OPEN:
                await self._refuse(scope, receive, send, None, "a bearer token is required")
                return
            await self.app(scope, receive, send)
            return
        who = await self._principal(value, scope["state"]["base_url"]) if value else None
        if who is None:
            why = "malformed, unknown, expired or revoked token, or issued for another server"
            await self._refuse(scope, receive, send, "invalid_token", why)
            return
        scope = {**scope, "state": {**scope["state"], "principal": who}}
        await self.app(scope, receive, send)

    async def _principal(self, value: str, base: str) -> Principal | None:
        """From the cache (auth/cache.py) when the token was seen live a moment ago: no
        threadpool hop; else from the token table, in one hop."""
        key = token_hash(value)
        who = self.auth.principals.get(key, base)
        if who is not None:
            return who
        found = await run_in_threadpool(resolve, self.auth, value, base)
        if found is None:
            return None
        self.auth.principals.put(key, base, *found)
        return found[0]

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, code: str | None, why: str
    ) -> None:
        failure = error(401, "login", why)
        challenge = 'Bearer realm="fhir-server"'
        if code:
            challenge += f', error="{code}", error_description="{why}"'
        failure.headers["WWW-Authenticate"] = challenge
        await http.error_response(Request(scope), failure)(scope, receive, send)
