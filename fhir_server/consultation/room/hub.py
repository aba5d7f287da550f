"""One process keeps every room, whichever worker process holds a peer's WebSocket.

`serve --workers N` spreads connections over N processes, but the members of one room must
reach each other. The first worker that needs the rooms binds a local socket named after the
database (Linux abstract namespace: nothing on disk, gone with its process) and becomes the
hub; every worker, the hub's own included, links to it and forwards its sockets' joins,
messages and leaves as JSON lines, and the hub answers with what each socket is to send or
whether to close (rooms.py). Only processes of the same user may link (SO_PEERCRED). When the
hub's worker ends, the other workers' links break: their sockets close with 1012 (service
restart), the browsers reconnect, and the first reconnect elects a new hub."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from .rooms import RESTART, Delivery, Rooms

log = logging.getLogger("fhir_server.consultation.room")

#: what a worker does with a delivery for one of its sockets
Deliver = Callable[[dict[str, Any]], Awaitable[None]]


def hub_name(database: Path) -> str:
    """The hub's abstract socket address for this database: one hub per database, whatever
    port or process serves it."""
    digest = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:32]
    return f"\0fhir-server-consult-room-{digest}"


class Hub:
    """The rooms and the links of the workers to them (in one worker process)."""

    def __init__(self) -> None:
        self.rooms = Rooms()
        #: peerId -> the link of the worker holding its socket
        self.links: dict[str, asyncio.StreamWriter] = {}
        #: every worker's link (closed when this process stops being the hub)
        self.workers: set[asyncio.StreamWriter] = set()

    async def serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not _same_user(writer):
            writer.close()
            return
        mine: set[str] = set()
        self.workers.add(writer)
        try:
            while line := await reader.readline():
                frame = orjson.loads(line)
                peer = frame["peer"]
                if frame["op"] == "join":
                    self.links[peer] = writer
                    mine.add(peer)
                    out = self.rooms.join(
                        peer, frame["room"], frame["who"], frame["limit"], frame["welcome"]
                    )
                elif frame["op"] == "msg":
                    out = self.rooms.relay(peer, frame["msg"])
                else:
                    mine.discard(peer)
                    out = self.rooms.leave(peer)
                await self._deliver(out)
        except (ConnectionError, ValueError, KeyError) as exc:
            log.warning("consult-room: a worker's link failed: %r", exc)
        finally:  # the worker went away: its peers leave their rooms
            self.workers.discard(writer)
            for peer in mine:
                await self._deliver(self.rooms.leave(peer))
            writer.close()

    def close(self) -> None:
        for writer in list(self.workers):
            writer.close()

    async def _deliver(self, out: list[Delivery]) -> None:
        for peer, action in out:
            link = self.links.get(peer)
            if "close" in action or peer not in self.rooms.where:
                self.links.pop(peer, None)
            if link is None or link.is_closing():
                continue
            link.write(orjson.dumps({"peer": peer, **action}) + b"\n")
            with contextlib.suppress(ConnectionError):
                await link.drain()


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the linking process runs as our user (Linux SO_PEERCRED: pid, uid, gid)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    return struct.unpack("3i", raw)[1] == os.getuid()


class Link:
    """A worker's link to the hub (electing one when none answers), and its sockets."""

    def __init__(self, name: str, frame_limit: int) -> None:
        self.name, self.frame_limit = name, frame_limit
        #: peerId -> deliver to its socket
        self.sockets: dict[str, Deliver] = {}
        #: joins waiting for the hub's answer: welcome (True) or close (False)
        self.pending: dict[str, asyncio.Future[bool]] = {}
        self.server: asyncio.Server | None = None
        self.hub: Hub | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock: asyncio.Lock | None = None
        #: the task carrying out the hub's deliveries (referenced, so it is not collected)
        self.reading: asyncio.Task[None] | None = None

    async def join(
        self, peer: str, room: str, who: str, limit: int, welcome: dict[str, Any], deliver: Deliver
    ) -> bool:
        """Enter a room; True once welcomed, False when the hub closed the socket instead."""
        await self._connect()
        answered = asyncio.get_running_loop().create_future()
        self.sockets[peer], self.pending[peer] = deliver, answered
        frame = {"op": "join", "peer": peer, "room": room, "who": who, "limit": limit,
                 "welcome": welcome}  # fmt: skip
        await self._send(frame)
        try:
            admitted: bool = await answered
        finally:
            self.pending.pop(peer, None)
        if not admitted:  # the hub closed the socket: it never was in a room
            self.sockets.pop(peer, None)
        return admitted

    async def relay(self, peer: str, message: dict[str, Any]) -> None:
        await self._send({"op": "msg", "peer": peer, "msg": message})

    async def leave(self, peer: str) -> None:
        if self.sockets.pop(peer, None) is not None:
            await self._send({"op": "leave", "peer": peer})

    async def close(self) -> None:
        """At shutdown: stop being the hub and drop the link."""
        if self.writer is not None:
            self.writer.close()
        if self.server is not None and self.hub is not None:
            self.server.close()
            self.hub.close()
            await self.server.wait_closed()
        self.server, self.hub, self.writer = None, None, None

    async def _send(self, frame: dict[str, Any]) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            return
        writer.write(orjson.dumps(frame) + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new event loop (tests reuse an app): start afresh
            self.loop, self.lock = loop, asyncio.Lock()
            self.server, self.hub, self.writer = None, None, None
        assert self.lock is not None
        async with self.lock:
            if self.writer is not None and not self.writer.is_closing():
                return
            for _ in range(20):
                try:
                    reader, writer = await asyncio.open_unix_connection(
                        self.name, limit=self.frame_limit
                    )
                except (ConnectionRefusedError, FileNotFoundError):
                    await self._elect()
                    continue
                self.writer = writer
                self.reading = loop.create_task(self._read(reader, writer))
                return
            raise ConnectionError("no signalling hub could be reached or started")

    async def _elect(self) -> None:
        """Become the hub, unless another worker just did (the address is taken)."""
        hub = Hub()
        try:
            self.server = await asyncio.start_unix_server(
                hub.serve_link, path=self.name, limit=self.frame_limit
            )
            self.hub = hub
            log.info("consult-room: this process (%d) keeps the rooms", os.getpid())
        except OSError:
            await asyncio.sleep(0.05)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry out the hub's deliveries; when the link breaks, close every socket (1012)."""
        try:
            while line := await reader.readline():
                frame = orjson.loads(line)
                peer = frame.pop("peer")
                waiting = self.pending.get(peer)
                if waiting is not None and not waiting.done():
                    waiting.set_result("send" in frame)
                deliver = self.sockets.get(peer)
                if deliver is not None:
                    await deliver(frame)
        except (ConnectionError, ValueError) as exc:
            log.warning("consult-room: the link to the hub failed: %r", exc)
        finally:
            writer.close()
            if self.writer is writer:
                self.writer = None
            for peer, deliver in list(self.sockets.items()):
                self.sockets.pop(peer, None)
                await deliver({"close": [RESTART, "the signalling hub restarted: reconnect"]})
            for waiting in self.pending.values():
                if not waiting.done():
                    waiting.set_result(False)
