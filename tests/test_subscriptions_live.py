"""Subscriptions across worker processes and under the access policy (issue 14, Notifications):
a write in one worker notifies a websocket bound in another, every worker's list of
Subscriptions is current, each rest-hook notification is sent once, and a hospital user's
Subscription carries only what that user may see."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from conftest import make_services, seed, wait_serving
from fastapi.testclient import TestClient
from test_conformance_live import _free_port
from test_policy_consortium import _obs, _serve, login
from test_subscriptions import Lines, Receiver, obs, subscribe, wait_for

from fhir_server.app import build_app
from fhir_server.services import Parts


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def workers(tmp_path: Path, parts: Parts) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps over one database file, as two `serve --workers 2` processes are."""
    settings = {"subscription_allow_private": True}
    first = make_services(tmp_path / "fhir.db", parts, **settings)
    second = make_services(tmp_path / "fhir.db", parts, **settings)
    with (
        TestClient(build_app(first.settings, first), raise_server_exceptions=False) as a,
        TestClient(build_app(second.settings, second), raise_server_exceptions=False) as b,
    ):
        yield a, b


def test_a_write_in_one_worker_pings_a_websocket_bound_in_the_other(
    workers: tuple[TestClient, TestClient],
) -> None:
    a, b = workers
    sid = subscribe(a, "Observation?code=1", {"type": "websocket"})
    with b.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text(f"bind {sid}")
        assert lines.settle(0.2) == [f"bound {sid}"]
        a.post("/fhir/Observation", json=obs("1"))
        a.post("/fhir/Observation", json=obs("2"))
        b.post("/fhir/Observation", json=obs("1"))
        assert lines.settle() == [f"ping {sid}"] * 2


def test_a_subscription_made_in_one_worker_serves_writes_in_the_other_once(
    workers: tuple[TestClient, TestClient], receiver: Receiver
) -> None:
    a, b = workers
    b.post("/fhir/Observation", json=obs("1"))  # b has read its (empty) list by now
    subscribe(a, "Observation?code=1", {"type": "rest-hook", "endpoint": receiver.url})
    b.post("/fhir/Observation", json=obs("1"))
    a.post("/fhir/Observation", json=obs("1"))
    wait_for(lambda: len(receiver.requests) >= 2)
    time.sleep(0.5)
    assert len(receiver.requests) == 2  # each write notified once, by the worker that wrote it


@pytest.mark.slow  # serve --workers 2: `make test-slow`
def test_serve_with_two_workers_delivers_every_event_to_every_socket_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The real thing: `serve --workers 2`; eight sockets (the kernel spreads them over both
    processes) each get every ping, writes land on either process, the rest-hook gets each
    notification once."""
    from websockets.sync.client import connect

    port = _free_port()
    env = {**os.environ, "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_DEMO_ON_EMPTY": "false",
           "FHIR_SERVER_SUBSCRIPTION_ALLOW_PRIVATE": "true"}  # fmt: skip
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port),
               "--database", str(tmp_path / "w.db"), "--workers", "2"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    sockets = ExitStack()
    try:
        wait_serving(f"{base}/metadata")
        ws_url = httpx.get(f"{base}/metadata").json()["rest"][0]["extension"][0]["valueUri"]
        assert ws_url == f"ws://127.0.0.1:{port}/fhir/websocket"
        channel = {"type": "websocket"}
        r = httpx.post(f"{base}/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "t",
            "criteria": "Observation?code=1", "channel": channel})  # fmt: skip
        sid = r.json()["id"]
        hook = {"type": "rest-hook", "endpoint": receiver.url}
        httpx.post(f"{base}/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "t",
            "criteria": "Observation?code=1", "channel": hook})  # fmt: skip
        bound = []
        for _ in range(8):
            ws = sockets.enter_context(connect(ws_url))
            ws.send(f"bind {sid}")
            assert ws.recv(timeout=5) == f"bound {sid}"
            bound.append(ws)
        for i in range(6):
            with httpx.Client() as fresh:  # a new connection: either process may take it
                code = "1" if i % 3 else "2"  # i = 0 and 3 do not match: four do
                assert fresh.post(f"{base}/Observation", json=obs(code)).status_code == 201
        for ws in bound:
            got = [ws.recv(timeout=5) for _ in range(4)]
            assert got == [f"ping {sid}"] * 4
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)  # and nothing more
        wait_for(lambda: len(receiver.requests) >= 4)
        time.sleep(0.5)
        assert len(receiver.requests) == 4
    finally:
        sockets.close()
        server.terminate()
        server.wait(timeout=30)


# --- the policy -------------------------------------------------------------------------------


@pytest.fixture
def consortium(tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """Hospitals A and B with their patients pa and pb (test_policy_consortium); a token
    sent is checked and its policy applied."""
    yield from _serve(tmp_path / "fhir.db", parts, subscription_allow_private=True)


def test_a_hospital_users_subscription_carries_only_what_the_user_may_see(
    consortium: TestClient, receiver: Receiver
) -> None:
    a = login(consortium, "dra")  # A's user: sees pa, not B's pb
    full = subscribe(
        a,
        "Observation?status=final",
        {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"},
    )
    ping = subscribe(a, "Observation?status=final", {"type": "websocket"})
    with consortium.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text(f"bind {ping}")
        assert lines.settle(0.2) == [f"bound {ping}"]
        # the server's own writes (as an HL7 v2 or DICOM mapping makes them) pass the hooks too
        seed(consortium, [_obs("new-b", "pb"), _obs("new-a", "pa")])
        assert lines.settle() == [f"ping {ping}"]  # for new-a only
    wait_for(lambda: receiver.requests)
    time.sleep(0.5)
    assert [r["path"] for r in receiver.requests] == ["/hook/Observation/new-a"]
    assert full


def test_a_user_cannot_subscribe_to_what_they_may_not_search(consortium: TestClient) -> None:
    a = login(consortium, "dra")
    r = a.post("/fhir/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "t",
        "criteria": "AuditEvent?outcome=0", "channel": {"type": "websocket"}})  # fmt: skip
    assert r.status_code == 403, r.text
