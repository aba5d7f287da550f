"""The websocket channel (R4 subscription.html#2.46.7.2): a client connects to the URL the
CapabilityStatement advertises (extension capabilitystatement-websocket), sends
`bind <subscription id>`, receives `bound <id>`, then `ping <id>` for each notification of
that Subscription. One socket may bind several Subscriptions. What we add to R4: the access
token (Authorization header, or `?access_token=`: browsers cannot set a websocket's headers),
close code 4401 without a valid one and when it expires; only the owner of a Subscription may
bind it; an `error <id> <reason>` line for a bind we refuse."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from ..api.http import public_base
from ..auth.bearer import bearer_token, resolve
from ..context import ANONYMOUS, Principal
from ..errors import FhirError

if TYPE_CHECKING:
    from .notifier import Notifier

PATH = "/fhir/websocket"
#: a client line longer than this is not a bind: the socket is closed (1009, too big)
MAX_LINE = 256
#: the close code of a socket without a valid access token (the 4000s are the application's,
#: RFC 6455 §7.4.2; 4401 reads as HTTP's 401)
UNAUTHORIZED = 4401
#: queued instead of a line: close the socket (its token expired)
CLOSE = "\0close"

router = APIRouter()


@dataclass(eq=False)
class Socket:
    """One connected client: its event loop and the queue of lines to send it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def send(self, line: str) -> None:
        """From any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, line)


class Hub:
    """The sockets bound in this worker process, by Subscription id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bound: dict[str, set[Socket]] = {}

    def bind(self, sub_id: str, socket: Socket) -> None:
        with self._lock:
            self._bound.setdefault(sub_id, set()).add(socket)

    def unbind(self, socket: Socket) -> None:
        with self._lock:
            for sub_id in [s for s, socks in self._bound.items() if socket in socks]:
                self._bound[sub_id].discard(socket)
                if not self._bound[sub_id]:
                    del self._bound[sub_id]

    def bound(self) -> bool:
        return bool(self._bound)

    def ping(self, sub_id: str) -> None:
        with self._lock:
            sockets = list(self._bound.get(sub_id, ()))
        for socket in sockets:
            socket.send(f"ping {sub_id}")


@router.websocket(PATH)
async def subscription_websocket(websocket: WebSocket) -> None:
    notifier: Notifier = websocket.app.state.services.features["subscriptions"]
    await websocket.accept()
    caller = await _caller(websocket)
    if caller is None:
        await websocket.close(UNAUTHORIZED, "a valid access token is required")
        return
    who, expires_at = caller
    socket = Socket(asyncio.get_running_loop())
    sender = asyncio.create_task(_send(websocket, socket))
    expiry = None
    if expires_at is not None:  # the token's end is the socket's: the client reconnects
        delay = max(0.0, expires_at - time.time())
        expiry = socket.loop.call_later(delay, socket.queue.put_nowait, CLOSE)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            line = message.get("text") or ""
            if len(line) > MAX_LINE:
                await websocket.close(1009)
                return
            command, _, sub_id = line.strip().partition(" ")
            sub_id = sub_id.strip()
            if command != "bind" or not sub_id:
                socket.queue.put_nowait(f"error {sub_id or '-'} expected 'bind <id>'")
                continue
            refused = await run_in_threadpool(notifier.bindable, sub_id, who)
            if refused:
                socket.queue.put_nowait(f"error {sub_id} {refused}")
                continue
            socket.queue.put_nowait(f"bound {sub_id}")  # before any ping: the same queue
            notifier.hub.bind(sub_id, socket)
    except WebSocketDisconnect:
        pass
    finally:
        notifier.hub.unbind(socket)
        sender.cancel()
        if expiry is not None:
            expiry.cancel()


async def _caller(websocket: WebSocket) -> tuple[Principal, float | None] | None:
    """Who is on the socket, and when their token expires: the access token is checked as a
    REST request's (auth/bearer.py); with `auth` off a socket without one is anonymous.
    None: refused."""
    services = websocket.app.state.services
    token = bearer_token(websocket.scope)
    if token is None and services.settings.auth != "on":
        return ANONYMOUS, None
    if not token:
        return None
    scope = websocket.scope  # the FHIR base the token must have been issued for
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", ""), "http")
    try:
        base = public_base({**scope, "scheme": scheme}, services.settings)
    except FhirError:
        return None
    return await run_in_threadpool(resolve, services.features["auth"], token, base)


async def _send(websocket: WebSocket, socket: Socket) -> None:
    while True:
        line = await socket.queue.get()
        if line == CLOSE:
            await websocket.close(UNAUTHORIZED, "the access token expired")
            return
        await websocket.send_text(line)
