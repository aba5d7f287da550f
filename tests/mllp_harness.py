"""A test harness for the HL7 v2 listener: the real Listener on a loopback port (its own event
loop in a thread) over a real SQLite file, the FHIR API of the same Services for checking
what was written, and an MLLP client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts
from integrations.hl7v2 import mllp
from integrations.hl7v2.charset import decode
from integrations.hl7v2.listener import Listener
from integrations.hl7v2.worker import CHANNEL

SAMPLES = Path(__file__).resolve().parent.parent / "integrations" / "hl7v2" / "samples"


def sample(name: str) -> bytes:
    """A sample message file as it would travel: segments ended by CR."""
    data = (SAMPLES / name).read_bytes()
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


class Harness:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.services = client.app.state.services  # type: ignore[attr-defined]
        self.inbox = self.services.store.inbox
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.listener: Listener = self._call(self._start())
        server = self.listener.server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    async def _start(self) -> Listener:
        listener = Listener(self.services, self.services.settings.hl7_map)
        await listener.start("127.0.0.1", 0)
        return listener

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self._call(self.listener.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def connect(self, timeout: float = 30.0) -> mllp.Client:
        return mllp.Client("127.0.0.1", self.port, timeout)

    def send(self, message: bytes) -> str:
        """Send one message on a new connection; its ACK as text (segments joined by CR)."""
        with self.connect() as client:
            return decode(client.exchange(message)).text

    def wait_mapped(self, timeout: float = 30.0) -> dict[str, int]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            counts = self.inbox.counts(CHANNEL)
            if counts["received"] == 0:
                return counts
            time.sleep(0.02)
        raise AssertionError(f"not mapped in {timeout} s: {self.inbox.counts(CHANNEL)}")

    def search(self, query: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/fhir/{query}")
        assert response.status_code == 200, response.text
        return [e["resource"] for e in response.json().get("entry", [])
                if e.get("search", {}).get("mode", "match") == "match"]  # fmt: skip

    def read(self, reference: str) -> dict[str, Any]:
        response = self.client.get(f"/fhir/{reference}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def fields(ack: str, segment: str) -> list[str]:
    """The fields of the ACK's first `segment`: index n is SEG-n, but MSH-(n+1) for MSH (whose
    MSH-1 is the separator itself)."""
    for line in ack.split("\r"):
        if line.startswith(segment + "|"):
            return line.split("|")
    raise AssertionError(f"no {segment} in {ack!r}")


def without_ids(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server assigns (id, meta) and with references as their
    type only: what a hand-written expectation can say."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    out[key] = value.split("/")[0]
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk({k: v for k, v in resource.items() if k not in ("id", "meta")})


def listeners(tmp_path: Path, parts: Parts, **defaults: Any) -> Iterator[Callable[..., Harness]]:
    """For a fixture to yield from: a maker of listeners, each over its own database with
    `defaults` overridden by the settings given, all closed when the test ends."""
    started: list[tuple[TestClient, Harness]] = []

    def make(**settings: Any) -> Harness:
        database = tmp_path / f"hl7-{len(started)}.db"
        services = make_services(database, parts, **{**defaults, **settings})
        client = TestClient(build_app(services.settings, services), raise_server_exceptions=False)
        client.__enter__()
        started.append((client, Harness(client)))
        return started[-1][1]

    yield make
    for client, harness in started:
        harness.close()
        client.__exit__(None, None, None)
