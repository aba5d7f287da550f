"""The room's HTTP side, outside /fhir (a join token, not a bearer token, admits to it): the
signalling WebSocket, the recording upload and the consultation-room page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...api import http
from ...errors import FhirError, error
from ...services import Services
from . import record
from .hub import Link
from .join import SIGNAL_PATH, admits, signing_key
from .rooms import BAD_TOKEN, OTHER_ROOM, RELAYED, TOO_BIG
from .rooms import error as error_message
from .token import Grant, issue, verify

log = logging.getLogger("fhir_server.consultation.room")
STATIC = Path(__file__).parent / "static"
#: the media types a recording may have (MediaRecorder's: WebM in Chromium and Firefox, MP4
#: in Safari)
RECORDING_TYPES = ("video/", "audio/")

router = APIRouter()


def _base(scope: MutableMapping[str, Any], services: Services) -> str:
    """The FHIR base URL as for an HTTP request (ws is http, wss https): the records the room
    writes name it, and a Host not allowed is refused as on /fhir."""
    scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
    return http.public_base({**scope, "scheme": scheme}, services.settings)


@router.websocket(SIGNAL_PATH + "{appointment}")
async def signal(websocket: WebSocket, appointment: str) -> None:
    """The signalling socket of one Appointment's room. The token is checked after the
    handshake, so that a refusal reaches the browser as a close code (4401, 4403) rather
    than an opaque failed handshake."""
    services: Services = websocket.app.state.services
    await websocket.accept()
    try:
        base = _base(websocket.scope, services)
    except FhirError as exc:
        await websocket.close(4400, exc.issues[0].diagnostics[:120])
        return
    token = websocket.query_params.get("token", "")
    grant = await run_in_threadpool(verify, signing_key(services), token)
    if grant is None:
        await websocket.close(BAD_TOKEN, "the join token is malformed, forged or expired")
        return
    if grant.appointment != appointment:
        await websocket.close(OTHER_ROOM, "the join token is for another Appointment")
        return
    refusal = await run_in_threadpool(admits, services, grant)
    if refusal is not None:
        await websocket.close(OTHER_ROOM, refusal[:120])
        return
    await _session(websocket, services, grant, base)


async def _session(websocket: WebSocket, services: Services, grant: Grant, base: str) -> None:
    settings = services.settings
    link: Link = services.features["consult-room"]
    peer = secrets.token_hex(8)
    out = _Socket(websocket)
    welcome = {"iceServers": json.loads(settings.consult_ice_servers),
               **await run_in_threadpool(renewed, services, grant, base)}  # fmt: skip
    try:
        admitted = await link.join(
            peer, grant.appointment, grant.participant, settings.consult_max_peers, welcome, out
        )
    except ConnectionError as exc:
        log.error("consult-room: %s", exc)
        await out({"close": [1011, "the signalling hub is not available"]})
        return
    if not admitted:
        return
    start = None
    try:
        start = await run_in_threadpool(record.joined, services, grant, base)
    except FhirError as exc:  # the call goes on; the record says why it lacks this join
        log.warning("consult-room: join of %s not recorded: %s", grant.participant, exc)
    renewing = asyncio.create_task(_renew(out, services, grant, base))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            parsed = await _parsed(out, message, settings.consult_message_bytes)
            if parsed is False:
                break
            if parsed is not None:
                await link.relay(peer, parsed)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        renewing.cancel()
        await link.leave(peer)
        if start is not None:
            with contextlib.suppress(FhirError):
                await run_in_threadpool(record.left, services, grant, start, base)


async def _parsed(out: _Socket, message: MutableMapping[str, Any], limit: int) -> Any:
    """The message to relay; None after answering an error message (the socket stays); False
    after closing the socket (too large: 1009, RFC 6455 §7.4.1)."""
    text = message.get("text")
    size = len(text.encode()) if isinstance(text, str) else len(message.get("bytes") or b"")
    if size > limit:
        await out({"close": [TOO_BIG, f"a message may have at most {limit} bytes"]})
        return False
    if not isinstance(text, str):
        await out(error_message("not-json", "send JSON text messages, not binary ones"))
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        await out(error_message("not-json", "a message must be a JSON object"))
        return None
    kind = parsed.get("type")
    if not isinstance(kind, str) or kind not in RELAYED:
        await out(error_message("unknown-type", f"unknown message type {kind!r}; send "
                                "offer, answer or candidate", received=kind))  # fmt: skip
        return None
    return parsed


def renewed(services: Services, grant: Grant, base: str) -> dict[str, Any]:
    """A fresh join token for the same participant and room: a connected browser always
    holds one that is valid, to reconnect and to upload its recording with."""
    expires = int(time.time()) + services.settings.consult_token_seconds
    token = issue(signing_key(services), replace(grant, expires=expires), base)
    return {"token": token, "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}


async def _renew(out: _Socket, services: Services, grant: Grant, base: str) -> None:
    """Every half token lifetime: `{"type":"token","token":..,"expires":..}`."""
    while True:
        await asyncio.sleep(max(services.settings.consult_token_seconds / 2, 1))
        await out(
            {"send": {"type": "token", **await run_in_threadpool(renewed, services, grant, base)}}
        )


class _Socket:
    """Sends to one WebSocket, one message at a time (the hub link and the session both
    send); after it closed, further sends are dropped."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket, self.closed, self.lock = websocket, False, asyncio.Lock()

    async def __call__(self, action: dict[str, Any]) -> None:
        async with self.lock:
            if self.closed:
                return
            try:
                if "send" in action:
                    await self.websocket.send_text(orjson.dumps(action["send"]).decode())
                else:
                    self.closed = True
                    code, reason = action["close"]
                    await self.websocket.close(code, reason)
            except (WebSocketDisconnect, RuntimeError, ConnectionError):
                self.closed = True


@router.post("/consult-room/recording")
async def upload_recording(request: Request) -> Response:
    """A recording the browser made (MediaRecorder), as the body in its own media type, with
    a join token (`?token=`) for the room it was made in: 201 with the Media."""
    services: Services = request.app.state.services
    settings = services.settings
    grant = await run_in_threadpool(
        verify, signing_key(services), request.query_params.get("token", "")
    )
    if grant is None:
        raise error(401, "login", "the join token is malformed, forged or expired", "token")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(RECORDING_TYPES):
        raise error(415, "not-supported", f"a recording is video/* or audio/*, not "
                    f"'{content_type}'", "Content-Type")  # fmt: skip
    limit = replace(settings, max_body_bytes=settings.consult_recording_bytes)
    content = await http.read_body(request, limit)
    if not content:
        raise error(400, "required", "the recording is empty")
    base = request.state.base_url
    media = await run_in_threadpool(
        record.store_recording, services, grant, content, content_type, base
    )
    headers = {"Location": f"{base}/Media/{media['id']}/_history/{media['meta']['versionId']}"}
    return http.fhir_response(request, media, 201, headers)


@router.get("/apps/consult-room")
async def page(request: Request) -> Response:
    """The reference client: joins at once (appointment and token from the query)."""
    return Response((STATIC / "consult-room.html").read_bytes(), media_type="text/html")


@router.get("/apps/consult-room/room.js")
async def script(request: Request) -> Response:
    return Response((STATIC / "room.js").read_bytes(), media_type="text/javascript")
