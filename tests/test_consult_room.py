"""The video consultation room over a real server (uvicorn on loopback, real WebSockets):
`Appointment/$join`, the signalling protocol and every refusal, join/leave times on the
Encounter, recordings as Media, and the rooms of a two-worker `serve`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_serving
from joserfc import jwt
from joserfc.jwk import KeySet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fhir_server.consultation.room.hub import Link
from fhir_server.settings import Settings

Json = dict[str, Any]
#: websockets' sync connect() outside a with block is deprecated; the tests close explicitly
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used")


def data() -> list[Json]:
    """Three doctors (one declined), a patient; a1 booked, a2 booked without dr-c, a3
    cancelled, a4 with seven doctors (for the full room)."""

    def practitioner(pid: str, name: str) -> Json:
        return {"resourceType": "Practitioner", "id": pid, "name": [{"text": name}]}

    def appointment(aid: str, status: str, actors: list[tuple[str, str]]) -> Json:
        return {
            "resourceType": "Appointment", "id": aid, "status": status,
            "start": "2026-12-02T08:00:00Z", "end": "2026-12-02T09:00:00Z",  # app-3
            "participant": [{"actor": {"reference": a}, "status": s} for a, s in actors],
        }  # fmt: skip

    doctors = [practitioner(f"dr-{c}", f"医生{c}") for c in "abcdefghi"]
    patient = {"resourceType": "Patient", "id": "pat", "name": [{"family": "张", "given": ["三"]}]}
    role = {"resourceType": "PractitionerRole", "id": "role-a",
            "practitioner": {"reference": "Practitioner/dr-a"}}  # fmt: skip
    return [
        *doctors, patient, role,
        appointment("a1", "booked", [("Practitioner/dr-a", "accepted"),
                                     ("Practitioner/dr-b", "accepted"),
                                     ("Practitioner/dr-c", "declined"),
                                     ("Patient/pat", "accepted")]),
        appointment("a2", "booked", [("Practitioner/dr-a", "accepted")]),
        appointment("a3", "cancelled", [("Practitioner/dr-a", "accepted")]),
        appointment("a4", "booked", [(f"Practitioner/dr-{c}", "accepted") for c in "abcdefg"]),
    ]  # fmt: skip


def seed(base: str) -> None:
    for r in data():
        response = httpx.put(f"{base}/{r['resourceType']}/{r['id']}", json=r)
        assert response.status_code in (200, 201), response.text


def join(base: str, appointment: str, participant: str | None, **headers: str) -> httpx.Response:
    body: Json = {"resourceType": "Parameters", "parameter": []}
    if participant:
        body["parameter"].append({"name": "participant", "valueReference":
                                  {"reference": participant}})  # fmt: skip
    return httpx.post(f"{base}/Appointment/{appointment}/$join", json=body, headers=headers)


def out(response: httpx.Response) -> Json:
    assert response.status_code == 200, response.text
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in response.json()["parameter"]}  # fmt: skip


def token(base: str, appointment: str, participant: str) -> str:
    return str(out(join(base, appointment, participant))["token"])


def ws_url(base: str, appointment: str, value: str) -> str:
    return f"{base.replace('http', 'ws', 1).removesuffix('/fhir')}/consult-room/signal/" \
           f"{appointment}?token={value}"  # fmt: skip


def enter(base: str, appointment: str, participant: str) -> tuple[ClientConnection, Json]:
    """A socket in the room, and its welcome."""
    ws = connect(ws_url(base, appointment, token(base, appointment, participant)))
    return ws, receive(ws)


def receive(ws: ClientConnection) -> Json:
    message: Json = json.loads(ws.recv(timeout=10))
    return message


def closed(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server ended the socket with."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.fixture
def base(live_server: str) -> str:
    seed(live_server)
    return live_server


def test_join_returns_a_token_for_this_appointment_the_socket_url_and_ice_servers(
    base: str,
) -> None:
    before = time.time()
    got = out(join(base, "a1", "Practitioner/dr-a"))
    assert got["signaling"] == ws_url(base, "a1", "").split("?")[0]
    assert json.loads(got["iceServers"]) == []  # the default: one LAN needs none
    # the token is a JWT signed with the key the server publishes (verified independently)
    keys = KeySet.import_key_set(httpx.get(base.removesuffix("/fhir") + "/auth/jwks").json())
    claims = jwt.decode(got["token"], keys, algorithms=["RS256"]).claims
    assert claims["sub"] == "Practitioner/dr-a" and claims["appointment"] == "a1"
    # default lifetime 300 s; `expires` says the same instant
    assert before + 299 <= claims["exp"] <= time.time() + 301
    assert got["expires"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))


def test_a_practitioner_role_joins_as_its_practitioner(base: str) -> None:
    claims = jwt.decode(
        token(base, "a1", "PractitionerRole/role-a"),
        KeySet.import_key_set(httpx.get(base.removesuffix("/fhir") + "/auth/jwks").json()),
        algorithms=["RS256"],
    )
    assert claims.claims["sub"] == "Practitioner/dr-a"


@pytest.mark.parametrize(
    ("appointment", "participant", "status", "code", "expression"),
    [
        ("a1", None, 400, "required", "participant"),
        ("a1", "Practitioner/dr-d", 403, "forbidden", "Appointment.participant"),
        ("a1", "Practitioner/dr-c", 403, "forbidden", "Appointment.participant"),  # declined
        ("a3", "Practitioner/dr-a", 409, "business-rule", "Appointment.status"),  # cancelled
        ("nope", "Practitioner/dr-a", 404, "not-found", None),
    ],
)
def test_join_refuses_who_is_not_an_active_participant_of_a_booked_appointment(
    base: str,
    appointment: str,
    participant: str | None,
    status: int,
    code: str,
    expression: str | None,
) -> None:
    r = join(base, appointment, participant)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == code
    assert issue.get("expression") == ([expression] if expression else None)


def test_two_peers_meet_relay_offers_with_from_and_see_each_other_leave(base: str) -> None:
    a, welcome_a = enter(base, "a1", "Practitioner/dr-a")
    assert welcome_a["type"] == "welcome" and welcome_a["peers"] == []
    assert welcome_a["iceServers"] == [] and welcome_a["token"]
    b, welcome_b = enter(base, "a1", "Patient/pat")
    assert welcome_b["peers"] == [welcome_a["peerId"]]
    assert receive(a) == {"type": "peer-joined", "peerId": welcome_b["peerId"]}
    offer = {"type": "offer", "to": welcome_a["peerId"], "sdp": {"type": "offer", "sdp": "v=0"},
             "from": "spoofed"}  # fmt: skip
    b.send(json.dumps(offer))
    assert receive(a) == {**offer, "from": welcome_b["peerId"]}
    a.send(json.dumps({"type": "candidate", "to": welcome_b["peerId"], "candidate": {"x": 1}}))
    assert receive(b)["from"] == welcome_a["peerId"]
    b.close()
    assert receive(a) == {"type": "peer-left", "peerId": welcome_b["peerId"]}
    a.close()


def test_bad_expired_forged_and_foreign_tokens_close_with_4401_or_4403(
    live_server_with: Callable[..., str],
) -> None:
    base = live_server_with(consult_token_seconds=3)
    seed(base)
    good = token(base, "a1", "Practitioner/dr-a")
    assert closed(connect(ws_url(base, "a2", good)))[0] == 4403  # a1's token, a2's room
    head, payload, signature = good.split(".")
    forged_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_claims["appointment"] = "a2"
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(forged_claims).encode())
                       .decode().rstrip("="), signature])  # fmt: skip
    for bad in ("", "garbage", forged, good[:-4] + "AAAA"):
        assert closed(connect(ws_url(base, "a2", bad)))[0] == 4401, bad
    expires = json.loads(base64.urlsafe_b64decode(payload + "=="))["exp"]
    time.sleep(max(expires - time.time() + 0.1, 0))  # the 3-second token has expired
    assert closed(connect(ws_url(base, "a1", good)))[0] == 4401


def test_a_token_of_a_since_cancelled_appointment_closes_with_4403(base: str) -> None:
    value = token(base, "a2", "Practitioner/dr-a")
    appointment = httpx.get(f"{base}/Appointment/a2").json()
    assert httpx.put(f"{base}/Appointment/a2", json={**appointment, "status": "cancelled"}) \
        .status_code == 200  # fmt: skip
    code, reason = closed(connect(ws_url(base, "a2", value)))
    assert code == 4403 and "cancelled" in reason


def test_bad_messages_get_an_error_and_the_socket_stays_except_a_too_large_one(
    base: str,
) -> None:
    a, _ = enter(base, "a1", "Practitioner/dr-a")
    cases = [
        ("not json", "not-json"),
        (json.dumps([1, 2]), "not-json"),
        (b"\x00binary", "not-json"),
        (json.dumps({"type": "hello", "to": "x"}), "unknown-type"),
        (json.dumps({"type": ["offer"], "to": "x"}), "unknown-type"),
        (json.dumps({"to": "x"}), "unknown-type"),
        (json.dumps({"type": "offer", "to": "nobody"}), "unknown-peer"),
        (json.dumps({"type": "offer"}), "unknown-peer"),
    ]
    for sent, code in cases:
        a.send(sent)
        answer = receive(a)
        assert (answer["type"], answer["code"]) == ("error", code), sent
    a.send(json.dumps({"type": "offer", "to": "x", "sdp": "x" * 70000}))  # > 65536 bytes
    assert closed(a)[0] == 1009


def test_the_seventh_participant_is_refused_with_4429(base: str) -> None:
    sockets = [enter(base, "a4", f"Practitioner/dr-{c}")[0] for c in "abcdef"]
    late = connect(ws_url(base, "a4", token(base, "a4", "Practitioner/dr-g")))
    code, reason = closed(late)
    assert code == 4429 and "6" in reason
    for ws in sockets:
        ws.close()


def test_joining_again_replaces_the_older_socket(base: str) -> None:
    a, first = enter(base, "a1", "Practitioner/dr-a")
    b, _ = enter(base, "a1", "Practitioner/dr-b")
    assert receive(a)["type"] == "peer-joined"
    again, second = enter(base, "a1", "Practitioner/dr-a")
    assert second["peers"] == [_["peerId"]]
    assert closed(a)[0] == 4409
    assert receive(b) == {"type": "peer-left", "peerId": first["peerId"]}
    assert receive(b) == {"type": "peer-joined", "peerId": second["peerId"]}
    again.close()
    b.close()


def encounter_of(base: str, appointment: str) -> Json:
    bundle = httpx.get(f"{base}/Encounter", params={"appointment": f"Appointment/{appointment}"})
    entries = bundle.json().get("entry", [])
    assert len(entries) == 1, bundle.text
    found: Json = entries[0]["resource"]
    return found


def test_join_and_leave_times_are_recorded_on_the_virtual_encounter(base: str) -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    a, _ = enter(base, "a1", "Practitioner/dr-a")
    b, _ = enter(base, "a1", "Practitioner/dr-b")
    receive(a)
    b.close()
    assert receive(a)["type"] == "peer-left"
    deadline = time.time() + 5
    while time.time() < deadline:  # the leave is written after the socket closed
        encounter = encounter_of(base, "a1")
        periods = {p["individual"]["reference"]: p["period"] for p in encounter["participant"]}
        if "end" in periods.get("Practitioner/dr-b", {}):
            break
        time.sleep(0.05)
    assert encounter["class"]["code"] == "VR" and encounter["status"] == "in-progress"
    assert encounter["appointment"] == [{"reference": "Appointment/a1"}]
    assert encounter["subject"] == {"reference": "Patient/pat"}
    assert before <= periods["Practitioner/dr-a"]["start"][:19]
    assert "end" not in periods["Practitioner/dr-a"]  # still there
    b_period = periods["Practitioner/dr-b"]
    assert b_period["start"] <= b_period["end"]
    a.close()


def test_a_recording_is_stored_as_media_with_binary_content_on_the_encounter(
    live_server_with: Callable[..., str],
) -> None:
    base = live_server_with(consult_recording_bytes=1000)
    seed(base)
    root = base.removesuffix("/fhir")
    value = token(base, "a1", "Practitioner/dr-b")
    video = bytes(range(256)) * 3  # 768 bytes, any content: the server keeps it as it is
    r = httpx.post(f"{root}/consult-room/recording", params={"token": value}, content=video,
                   headers={"Content-Type": "video/webm;codecs=vp8,opus"})  # fmt: skip
    assert r.status_code == 201, r.text
    media = r.json()
    assert media["resourceType"] == "Media" and media["type"]["coding"][0]["code"] == "video"
    assert media["operator"] == {"reference": "Practitioner/dr-b"}
    assert media["content"]["size"] == 768 and media["content"]["contentType"] == "video/webm"
    encounter = encounter_of(base, "a1")
    assert media["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
    binary = httpx.get(f"{base}/{media['content']['url']}", headers={"Accept": "video/webm"})
    assert binary.content == video
    refused = [
        ({"token": "garbage"}, "video/webm", video, 401),
        ({"token": value}, "text/plain", video, 415),
        ({"token": value}, "video/webm", b"x" * 1001, 413),
        ({"token": value}, "video/webm", b"", 400),
    ]
    for params, media_type, body, status in refused:
        r = httpx.post(f"{root}/consult-room/recording", params=params, content=body,
                       headers={"Content-Type": media_type})  # fmt: skip
        assert r.status_code == status, (status, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


def test_two_links_relay_through_one_hub() -> None:
    """Two workers' links to the same hub (the first elects itself): a peer on one reaches a
    peer on the other, and when the hub's worker goes the other's sockets close with 1012."""

    async def run() -> None:
        name = f"\0fhir-server-test-hub-{os.getpid()}-{time.time()}"
        first, second = Link(name, 1 << 20), Link(name, 1 << 20)
        got: dict[str, list[Json]] = {"p1": [], "p2": []}

        def deliver(peer: str) -> Any:
            async def put(action: Json) -> None:
                got[peer].append(action)

            return put

        assert await first.join("p1", "r", "Practitioner/x", 6, {}, deliver("p1"))
        assert first.server is not None and second.server is None
        assert await second.join("p2", "r", "Practitioner/y", 6, {}, deliver("p2"))
        assert got["p2"][0]["send"]["peers"] == ["p1"]
        await second.relay("p2", {"type": "offer", "to": "p1"})
        for _ in range(100):
            if len(got["p1"]) == 3:
                break
            await asyncio.sleep(0.01)
        assert got["p1"][1:] == [{"send": {"type": "peer-joined", "peerId": "p2"}},
                                 {"send": {"type": "offer", "to": "p1", "from": "p2"}}]  # fmt: skip
        await first.close()  # the hub's worker ends
        for _ in range(100):
            if got["p2"][-1].get("close"):
                break
            await asyncio.sleep(0.01)
        assert got["p2"][-1]["close"][0] == 1012
        await second.close()

    asyncio.run(run())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(server: int) -> list[int]:
    """The worker processes of a `serve` process (its children)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
        if len(children) >= 2:
            return [int(pid) for pid in children]
        time.sleep(0.1)
    raise AssertionError("serve --workers 2 did not start two workers")


def _holder(workers: list[int], ws: ClientConnection, port: int) -> int | None:
    """Which worker process holds the server side of this client's TCP connection (Linux
    /proc: the connection's socket inode, then the process with a descriptor on it)."""
    client = ws.socket.getsockname()[1]
    inodes = [
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].split(":")[1], 16) == port and int(fields[2].split(":")[1], 16) == client
    ]
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if inodes and os.readlink(fd) == f"socket:[{inodes[0]}]":
                    return pid
    return None


@pytest.mark.slow  # serve --workers 2: `make test-slow`
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_a_room_works_across_the_workers_of_a_two_worker_server(tmp_path: Path, parts: Any) -> None:
    """`serve --workers 2`: two participants whose sockets are held by different worker
    processes (checked in /proc; reconnecting until the kernel hands them to different ones)
    meet, relay both ways and see each other leave; then six on whichever workers all reach
    each other."""
    from conftest import make_services

    make_services(tmp_path / "w.db", parts).close()  # a copy of the template: a quick start
    port = _free_port()
    env = {**os.environ, "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_DEMO_ON_EMPTY": "false"}
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port),
               "--database", str(tmp_path / "w.db"), "--workers", "2"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_serving(f"{base}/metadata")
        workers = _workers(server.pid)
        seed(base)
        a, welcome_a = enter(base, "a1", "Practitioner/dr-a")
        for _ in range(40):  # the same participant again replaces its socket: no peer-joined
            b, welcome_b = enter(base, "a1", "Practitioner/dr-b")
            if _holder(workers, b, port) != _holder(workers, a, port):
                break
            b.close()
        else:
            raise AssertionError("the kernel never handed a connection to the other worker")
        assert None not in (_holder(workers, a, port), _holder(workers, b, port))
        assert welcome_b["peers"] == [welcome_a["peerId"]]
        while (joined := receive(a))["peerId"] != welcome_b["peerId"]:
            assert joined["type"] in ("peer-joined", "peer-left")
        b.send(json.dumps({"type": "offer", "to": welcome_a["peerId"], "sdp": "o"}))
        assert receive(a) == {"type": "offer", "to": welcome_a["peerId"], "sdp": "o",
                              "from": welcome_b["peerId"]}  # fmt: skip
        a.send(json.dumps({"type": "answer", "to": welcome_b["peerId"], "sdp": "a"}))
        assert receive(b)["from"] == welcome_a["peerId"]
        b.close()
        assert receive(a) == {"type": "peer-left", "peerId": welcome_b["peerId"]}
        a.close()
        sockets = [enter(base, "a4", f"Practitioner/dr-{c}") for c in "abcdef"]
        ids = [w["peerId"] for _, w in sockets]
        for ws, _ in sockets:  # drain the peer-joined messages
            while True:
                try:
                    ws.recv(timeout=0.5)
                except TimeoutError:
                    break
        for i, (ws, _) in enumerate(sockets):
            for j in range(len(sockets)):
                if i != j:
                    ws.send(json.dumps({"type": "candidate", "to": ids[j], "n": i}))
        for j, (ws, _) in enumerate(sockets):
            heard = sorted(receive(ws)["n"] for _ in range(len(sockets) - 1))
            assert heard == [i for i in range(len(sockets)) if i != j]
        for ws, _ in sockets:
            ws.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_with_a_token_the_caller_joins_only_as_itself(tmp_path: Path, parts: Any) -> None:
    """A bearer token's fhirUser is who joins: a PractitionerRole as its Practitioner, named
    or not; naming anybody else is 403. Being a participant is the grant: role-a, of another
    hospital than the patient's, cannot read a1 but joins it; of two non-participants, the
    one who can read a1 gets 403, the one who cannot 404 (as a read would answer)."""
    from conftest import make_services
    from fastapi.testclient import TestClient
    from smart import PASSWORD, REDIRECT, auth_of, code_flow

    from fhir_server.app import build_app
    from fhir_server.auth import admin

    services = make_services(tmp_path / "auth.db", parts)
    h1, h2 = {"reference": "Organization/h1"}, {"reference": "Organization/h2"}

    def role(rid: str, org: Json, practitioner: str) -> Json:
        return {"resourceType": "PractitionerRole", "id": rid, "organization": org,
                "practitioner": {"reference": f"Practitioner/{practitioner}"}}  # fmt: skip

    with TestClient(build_app(services.settings, services)) as c:
        extra = [{"resourceType": "Organization", "id": "h1", "name": "H1"},
                 {"resourceType": "Organization", "id": "h2", "name": "H2"},
                 role("role-d", h1, "dr-d"), role("role-e", h2, "dr-e")]  # fmt: skip
        for r in extra + data():
            if r["id"] == "pat":
                r = {**r, "managingOrganization": h1}
            if r["id"] == "role-a":
                r = role("role-a", h2, "dr-a")
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, "app", [REDIRECT], public=True, trusted=True)
        for user in ("a", "d", "e"):
            admin.add_user(store, f"dr{user}", PASSWORD, f"PractitionerRole/role-{user}")

        def bearer(user: str) -> dict[str, str]:
            flow = code_flow(c, "app", "openid fhirUser user/*.rs", user)
            assert flow.status_code == 200, flow.text
            return {"Authorization": f"Bearer {flow.json()['access_token']}"}

        def call(user: str, participant: str | None) -> Any:
            body: Json = {"resourceType": "Parameters", "parameter": []}
            if participant:
                body["parameter"] = [{"name": "participant",
                                      "valueReference": {"reference": participant}}]  # fmt: skip
            return c.post("/fhir/Appointment/a1/$join", json=body, headers=bearer(user))

        keys = KeySet.import_key_set(c.get("/auth/jwks").json())
        assert c.get("/fhir/Appointment/a1", headers=bearer("dra")).status_code == 404
        for named in (None, "PractitionerRole/role-a"):
            r = call("dra", named)
            assert r.status_code == 200, r.text
            value = r.json()["parameter"][0]["valueString"]
            claims = jwt.decode(value, keys, algorithms=["RS256"]).claims
            assert claims["sub"] == "Practitioner/dr-a"
        assert call("dra", "Practitioner/dr-b").status_code == 404  # a1 is hidden from role-a
        assert c.get("/fhir/Appointment/a1", headers=bearer("drd")).status_code == 200
        r = call("drd", "Practitioner/dr-b")
        assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["participant"]
        r = call("drd", None)
        assert r.status_code == 403, r.text
        assert "not a participant" in r.json()["issue"][0]["diagnostics"]
        assert call("dre", None).status_code == 404


def test_a_connected_browser_is_sent_fresh_tokens_that_outlive_the_first(
    live_server_with: Callable[..., str],
) -> None:
    """Every half lifetime a connected socket gets `{"type":"token"}`: after the token of
    $join has expired, the fresh one still reconnects (a network change mid-consultation)."""
    base = live_server_with(consult_token_seconds=4)
    seed(base)
    first = token(base, "a1", "Practitioner/dr-a")
    ws = connect(ws_url(base, "a1", first))
    assert receive(ws)["type"] == "welcome"
    renewed = receive(ws)  # 2 s later, valid 4 s from then
    assert renewed["type"] == "token" and renewed["token"] != first
    expires = json.loads(base64.urlsafe_b64decode(first.split(".")[1] + "=="))["exp"]
    time.sleep(max(expires - time.time() + 0.1, 0))  # the first has expired; the fresh not
    assert closed(connect(ws_url(base, "a1", first)))[0] == 4401
    again = connect(ws_url(base, "a1", renewed["token"]))
    assert receive(again)["type"] == "welcome"
    assert closed(ws)[0] == 4409  # the reconnect replaced the first socket
    again.close()


def test_ice_servers_from_the_setting_reach_join_and_a_bad_setting_stops_the_start(
    tmp_path: Path, parts: Any
) -> None:
    from conftest import make_services
    from fastapi.testclient import TestClient

    from fhir_server.app import build_app

    servers = [{"urls": "stun:stun.example.org:3478"},
               {"urls": ["turns:turn.example.org:443?transport=tcp"], "username": "u",
                "credential": "p"}]  # fmt: skip
    services = make_services(tmp_path / "ice.db", parts, consult_ice_servers=json.dumps(servers),
                             public_base_url="https://h.example.org/yl/fhir")  # fmt: skip
    with TestClient(build_app(services.settings, services)) as c:
        for r in data():
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "participant", "valueReference": {"reference": "Practitioner/dr-a"}}
            ],
        }
        got = {p["name"]: p for p in c.post("/fhir/Appointment/a1/$join", json=body)
               .json()["parameter"]}  # fmt: skip
        assert json.loads(got["iceServers"]["valueString"]) == servers
        # behind a TLS proxy: the WebSocket is wss:// under the public base's prefix
        assert got["signaling"]["valueUrl"] == "wss://h.example.org/yl/consult-room/signal/a1"
    for bad, why in [
        ("nope", "not JSON"),
        ('{"urls": "stun:x"}', "array"),
        ('[{"url": "stun:x"}]', "urls"),
        ('[{"urls": "turn:t.example.org"}]', "username and credential"),
    ]:
        with pytest.raises(ValueError, match=why):
            build_app(Settings(), make_services(tmp_path / "bad.db", parts,
                                                consult_ice_servers=bad))  # fmt: skip
