"""What the apps' live screens stand on (issue 16: notifications by websocket Subscription, the
referral's activity from Provenance), over real sockets on the demo consortium with
authorization on: the websocket channel needs an access token (close code 4401 without a valid
one), a user binds only the Subscriptions they own, and a referral's Provenance (which targets
the Task and names no Patient) is read by the hospitals that see the referral and by no other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps_harness import serve_demo, token
from conftest import make_services
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fhir_server.app import build_app
from fhir_server.auth import server
from fhir_server.services import Parts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[tuple[str, Path]]:
    """(FHIR base of the demo served with auth on, its database file)."""
    db = tmp_path_factory.mktemp("live") / "demo.db"
    for base in serve_demo(db, parts):
        yield base, db


def _as(base: str, user: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token(base, user)}"}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _ws(base: str) -> str:
    return base.replace("http://", "ws://").removesuffix("/fhir") + "/fhir/websocket"


def _subscribe(c: httpx.Client, criteria: str) -> str:
    r = c.post("/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "工作台提醒",
        "criteria": criteria, "channel": {"type": "websocket"}})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _closed_with(url: str, **kwargs: Any) -> int | None:
    """The close code the server ends the connection with (before any bind is answered)."""
    with connect(url, **kwargs) as ws:
        try:
            ws.send("bind x")
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def test_the_websocket_needs_a_valid_access_token(world: tuple[str, Path]) -> None:
    base, _ = world
    url = _ws(base)
    assert _closed_with(url) == 4401
    assert _closed_with(f"{url}?access_token=not-a-token") == 4401
    assert _closed_with(url, additional_headers={"Authorization": "Bearer nope"}) == 4401
    assert _closed_with(url, additional_headers={"Authorization": "Basic eDp5"}) == 4401


def test_a_user_binds_their_own_subscriptions_and_no_one_elses(world: tuple[str, Path]) -> None:
    base, _ = world
    with _as(base, "rc-hz-first") as office, _as(base, "dr-hubin-chc") as doctor:
        mine = _subscribe(office, "Task?status=requested")
        theirs = _subscribe(doctor, "Task?status=requested")
        office_token = office.headers["Authorization"].removeprefix("Bearer ")
        # the token in the query (a browser's WebSocket cannot set headers) ...
        with connect(f"{_ws(base)}?access_token={office_token}") as ws:
            ws.send(f"bind {mine}")
            assert ws.recv(timeout=5) == f"bound {mine}"
            ws.send(f"bind {theirs}")
            assert ws.recv(timeout=5) == f"error {theirs} not a Subscription of this user"
        # ... or in the Authorization header, as any other client sends it
        header = {"Authorization": doctor.headers["Authorization"]}
        with connect(_ws(base), additional_headers=header) as ws:
            ws.send(f"bind {mine}")
            assert ws.recv(timeout=5) == f"error {mine} not a Subscription of this user"
            ws.send(f"bind {theirs}")
            assert ws.recv(timeout=5) == f"bound {theirs}"
        for c, sid in ((office, mine), (doctor, theirs)):
            assert c.delete(f"/Subscription/{sid}").status_code in (200, 204)


def test_the_socket_closes_with_4401_when_its_token_expires(
    world: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token's end is the socket's: the browser reconnects with its fresh token."""
    base, _ = world
    monkeypatch.setattr(server, "ACCESS_SECONDS", 2)
    with _as(base, "rc-hz-first") as office:
        sid = _subscribe(office, "Task?status=requested")
        short = office.headers["Authorization"].removeprefix("Bearer ")
        with connect(f"{_ws(base)}?access_token={short}") as ws:
            ws.send(f"bind {sid}")
            assert ws.recv(timeout=5) == f"bound {sid}"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        # and a new socket with the expired token is refused
        assert _closed_with(f"{_ws(base)}?access_token={short}") == 4401


def _role_org(everything: TestClient, reference: str) -> str:
    """The organization a PractitionerRole (or the Organization itself) stands for."""
    if reference.startswith("Organization/"):
        return reference.removeprefix("Organization/")
    role = everything.get(f"/fhir/{reference}").json()
    return str(role["organization"]["reference"]).removeprefix("Organization/")


def test_a_referrals_provenance_is_read_by_its_hospitals_and_no_other(
    world: tuple[str, Path], parts: Parts
) -> None:
    """The consortium rule: a Provenance naming no Patient is seen with the Task it targets
    (policy/decide.py SEEN_WITH_TARGET), so the sending and the receiving hospital read a
    referral's activity (操作记录), and a hospital that does not see the referral reads none."""
    base, db = world
    # the whole picture, without the policy: the same database with authorization off
    services = make_services(db, parts)
    with TestClient(build_app(services.settings, services)) as everything:
        every = everything.get("/fhir/Provenance", params={"_count": "500"}).json()["entry"]
        prov = next(e["resource"] for e in every
                    if e["resource"]["activity"]["coding"][0]["code"] == "accept")  # fmt: skip
        task = next(t["reference"] for t in prov["target"] if t["reference"].startswith("Task/"))
        request = everything.get(f"/fhir/{task}").json()["focus"]["reference"]
        expected = {
            e["resource"]["id"]
            for e in everything.get("/fhir/Provenance", params={"target": task}).json()["entry"]
        }
        sr = everything.get(f"/fhir/{request}").json()
        sender = _role_org(everything, sr["requester"]["reference"])
        receiver = _role_org(everything, sr["performer"][0]["reference"])
        patient = sr["subject"]["reference"]
    assert len(expected) >= 2  # submitted, then accepted at least

    def seen(user: str) -> set[str]:
        with _as(base, user) as c:
            r = c.get("/Provenance", params={"target": task})
            assert r.status_code == 200, r.text
            return {e["resource"]["id"] for e in r.json().get("entry", [])}

    assert seen(f"rc-{receiver}") == expected
    assert seen(f"dr-{sender}") == expected
    others = [h for h in ("mishixiang-chc", "cuiyuan-chc", "gongshu-people", "xihu-people",
                          "hz-first") if h not in (sender, receiver)]  # fmt: skip
    for other in others:
        with _as(base, f"rc-{other}") as c:
            if c.get(f"/{patient}").status_code == 404 and c.get(f"/{task}").status_code == 404:
                break  # a hospital that sees neither the patient nor the referral
    else:
        pytest.fail("the demo has no hospital unrelated to this referral")
    assert seen(f"rc-{other}") == set()
