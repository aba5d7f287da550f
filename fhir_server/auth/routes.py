"""The /auth routes and the SMART discovery document: thin async wrappers that read the
request and run the server's logic (server.py) off the event loop."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import server
from .discovery import smart_configuration
from .server import Auth, OAuthError, oauth_error, run

router = APIRouter()


def _auth(request: Request) -> Auth:
    """The authorization server; also names the caller of this request for the security
    events it may raise (server.caller: the client's address and the request id)."""
    address = request.client.host if request.client else None
    server.caller.set((address, getattr(request.state, "request_id", None)))
    auth: Auth = request.app.state.services.features["auth"]
    return auth


@router.api_route("/auth/authorize", methods=["GET", "POST"])
async def authorize(request: Request) -> Response:
    try:
        params = await server.read_params(request)
    except OAuthError as exc:
        from .pages import failure

        return failure(exc.description)
    session = request.cookies.get(server.SESSION_COOKIE)
    return await run(server.authorize, _auth(request), params, request.state.base_url, session)  # type: ignore[no-any-return]


async def _oauth(request: Request, work: Any) -> Response:
    try:
        params = await server.read_params(request)
        body = await run(work, _auth(request), params, request.headers, request.state.base_url)
    except OAuthError as exc:
        return oauth_error(exc)
    return JSONResponse(body if body is not None else {}, headers=server._NO_STORE)


@router.post("/auth/token")
async def token(request: Request) -> Response:
    return await _oauth(request, server.token)


@router.post("/auth/introspect")
async def introspect(request: Request) -> Response:
    return await _oauth(request, server.introspect)


@router.post("/auth/revoke")
async def revoke(request: Request) -> Response:
    return await _oauth(request, server.revoke)


@router.post("/auth/launch")
async def launch(request: Request) -> Response:
    try:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise OAuthError("invalid_request", "the body must be JSON") from None
        header = request.headers.get("authorization", "")
        out = await run(server.launch, _auth(request), header, body, request.state.base_url)
    except OAuthError as exc:
        response = oauth_error(exc)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = f'Bearer error="{exc.code}"'
        return response
    return JSONResponse(out, headers=server._NO_STORE)


@router.get("/auth/jwks")
async def jwks(request: Request) -> Response:
    keys = await run(_auth(request).keys.jwks)
    return JSONResponse(keys)  # any origin may read it (cors.py)


@router.api_route("/fhir/.well-known/smart-configuration", methods=["GET", "HEAD"])
async def well_known(request: Request) -> Response:
    """Always JSON, whatever Accept says; any origin may read it (SMART 2.x discovery;
    cors.py)."""
    return JSONResponse(smart_configuration(request.state.base_url))
