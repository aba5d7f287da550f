"""R4 Subscriptions over the real app (issue 14, Notifications): a websocket client and a real
rest-hook receiver on loopback get exactly the notifications expected, payloads as R4 and the
Backport IG say, retries then `error`, recovery, `end`, and the SSRF refusals."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

LOINC = "http://loinc.org"


def obs(code: str, patient: str = "p1", **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"}, **more,
    }  # fmt: skip


def subscription(criteria: str, channel: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": criteria, "channel": channel, **more}  # fmt: skip


def subscribe(c: TestClient, criteria: str, channel: dict[str, Any], **more: Any) -> str:
    r = c.post("/fhir/Subscription", json=subscription(criteria, channel, **more))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"  # R4: the server activates a requested one
    return str(r.json()["id"])


def wait_for(check: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


class Receiver:
    """A real HTTP server on loopback recording every request; `answers` are the statuses
    to give in turn (then 200), `delay` seconds to wait before answering."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    {"method": self.command, "path": self.path,
                     "headers": dict(self.headers), "body": body}
                )  # fmt: skip
                time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _any  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks(client_with: Callable[..., TestClient]) -> TestClient:
    """A server that may call loopback endpoints, retrying quickly."""
    return client_with(
        subscription_allow_private=True, subscription_retries=2,
        subscription_retry_seconds=0.05, subscription_timeout_seconds=1.0,
    )  # fmt: skip


class Lines:
    """What a TestClient websocket receives, read by a thread (its sockets have no timeout)."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.lines, self.seen = ws, [], 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.lines.append(self.ws.receive_text())
        except Exception:
            pass

    def settle(self, seconds: float = 0.5) -> list[str]:
        """The lines received since the last call, once `seconds` passed with none new."""
        count = -1
        while count != len(self.lines):
            count = len(self.lines)
            time.sleep(seconds)
        new, self.seen = self.lines[self.seen : count], count
        return new


# --- websocket ------------------------------------------------------------------------------


def test_websocket_gets_one_ping_per_matching_write_and_nothing_else(client: TestClient) -> None:
    sid = subscribe(client, f"Observation?code={LOINC}|1234-5", {"type": "websocket"})
    other = subscribe(client, "Patient?family=zhang", {"type": "websocket"})
    rest = client.get("/fhir/metadata").json()["rest"][0]
    assert {"url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
            "valueUri": "ws://testserver/fhir/websocket"} in rest["extension"]  # fmt: skip
    with client.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text(f"bind {sid}")
        assert lines.settle(0.2) == [f"bound {sid}"]
        # matching: a create, an update of it, a transaction entry -> three pings
        first = client.post("/fhir/Observation", json=obs("1234-5")).json()
        client.put(f"/fhir/Observation/{first['id']}", json={**first, "status": "amended"})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": obs("1234-5"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": obs("9999-9"), "request": {"method": "POST", "url": "Observation"}},
        ]}  # fmt: skip
        assert client.post("/fhir", json=bundle).status_code == 200
        # not matching: another code, the same code in another system, another type
        client.post("/fhir/Observation", json=obs("4321-0"))
        other_system = obs("1234-5")
        other_system["code"]["coding"][0]["system"] = "http://snomed.info/sct"
        client.post("/fhir/Observation", json=other_system)
        client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Li"}]})
        # an update that changes nothing makes no version, so no notification
        client.put(f"/fhir/Observation/{first['id']}", json={**first, "status": "amended"})
        assert lines.settle() == [f"ping {sid}"] * 3
    assert other  # bound by nobody: its matches went nowhere


def test_websocket_bind_refusals_and_several_bindings_on_one_socket(client: TestClient) -> None:
    a = subscribe(client, f"Observation?code={LOINC}|1-1", {"type": "websocket"})
    b = subscribe(client, "Observation?subject=Patient/p9", {"type": "websocket"})
    with client.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text("bind nope")
        assert lines.settle(0.2) == ["error nope no such Subscription"]
        ws.send_text("hello")
        assert lines.settle(0.2) == ["error - expected 'bind <id>'"]
        ws.send_text(f"bind {a}")
        ws.send_text(f"bind {b}")
        assert lines.settle(0.3) == [f"bound {a}", f"bound {b}"]
        client.post("/fhir/Observation", json=obs("1-1", patient="p9"))  # both match
        assert sorted(lines.settle()) == sorted([f"ping {a}", f"ping {b}"])


def test_websocket_bad_input_is_answered_not_crashed_on(client: TestClient) -> None:
    """A binary frame is not a bind (an error line); a line beyond 256 characters closes the
    socket with 1009 (message too big, RFC 6455 §7.4.1)."""
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_bytes(b"bind x")
        assert lines.settle(0.2) == ["error - expected 'bind <id>'"]
    with client.websocket_connect("/fhir/websocket") as ws:
        ws.send_text("bind " + "x" * 300)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1009


def test_criteria_beyond_the_index_rows_are_decided_by_the_search_engine(
    client: TestClient,
) -> None:
    """A chain needs the referenced Patient: the matcher asks the search engine with _id."""
    client.put("/fhir/Patient/zw", json={"resourceType": "Patient", "id": "zw",
                                          "name": [{"family": "Zhang"}]})  # fmt: skip
    client.put("/fhir/Patient/lw", json={"resourceType": "Patient", "id": "lw",
                                          "name": [{"family": "Li"}]})  # fmt: skip
    sid = subscribe(client, "Observation?subject:Patient.family=zhang", {"type": "websocket"})
    with client.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text(f"bind {sid}")
        assert lines.settle(0.2) == [f"bound {sid}"]
        client.post("/fhir/Observation", json=obs("1-1", patient="zw"))
        client.post("/fhir/Observation", json=obs("1-1", patient="lw"))
        assert lines.settle() == [f"ping {sid}"]


# --- accepting a Subscription ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("criteria", "channel", "expression"),
    [
        ("Observation?nonsense=1", {"type": "websocket"}, "Subscription.criteria"),
        ("Nothing?code=1", {"type": "websocket"}, "Subscription.criteria"),
        ("Observation?date=notadate", {"type": "websocket"}, "Subscription.criteria"),
        ("Observation?_include=Observation:subject", {"type": "websocket"},
         "Subscription.criteria"),
        ("Observation?code=1", {"type": "email", "endpoint": "mailto:a@b.c"},
         "Subscription.channel.type"),
        ("Observation?code=1", {"type": "rest-hook", "endpoint": "ftp://example.org/x"},
         "Subscription.channel.endpoint"),
        ("Observation?code=1", {"type": "rest-hook", "endpoint": "file:///etc/passwd"},
         "Subscription.channel.endpoint"),
        ("Observation?code=1", {"type": "websocket", "payload": "application/fhir+xml"},
         "Subscription.channel.payload"),
    ],
)  # fmt: skip
def test_a_subscription_we_cannot_honour_is_refused_naming_the_element(
    client: TestClient, criteria: str, channel: dict[str, Any], expression: str
) -> None:
    r = client.post("/fhir/Subscription", json=subscription(criteria, channel))
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [expression]
    assert client.get("/fhir/Subscription").json()["total"] == 0


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9/hook",  # loopback
        "http://localhost:9/hook",  # a name resolving to loopback
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",  # RFC 1918
        "http://192.168.0.10/hook",
        "http://[fd12::1]/hook",  # unique local
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[::ffff:127.0.0.1]/hook",  # loopback hidden in an IPv4-mapped address
    ],
)
def test_rest_hook_endpoints_on_our_networks_are_refused(client: TestClient, endpoint: str) -> None:
    r = client.post("/fhir/Subscription",
                    json=subscription("Observation?code=1", {"type": "rest-hook",
                                                             "endpoint": endpoint}))  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["code"] == "security"
    assert r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]


@pytest.mark.parametrize(
    "endpoint", ["http://169.254.169.254/latest/", "http://[fe80::1]/x", "http://[fd00:ec2::254]/"]
)
def test_link_local_and_metadata_stay_refused_when_private_ones_are_allowed(
    hooks: TestClient, endpoint: str
) -> None:
    r = hooks.post("/fhir/Subscription",
                   json=subscription("Observation?code=1", {"type": "rest-hook",
                                                            "endpoint": endpoint}))  # fmt: skip
    assert r.status_code == 400, r.text
    assert "link-local or cloud metadata" in r.json()["issue"][0]["diagnostics"]


def test_off_is_kept_and_requested_activates_again(hooks: TestClient, receiver: Receiver) -> None:
    body = subscription("Observation?code=1", {"type": "rest-hook", "endpoint": receiver.url})
    r = hooks.post("/fhir/Subscription", json={**body, "status": "off"})
    assert r.json()["status"] == "off"
    sub = r.json()
    hooks.post("/fhir/Observation", json=obs("1"))
    time.sleep(0.3)
    assert receiver.requests == []  # off: nothing sent
    r = hooks.put(f"/fhir/Subscription/{sub['id']}", json={**sub, "status": "requested"})
    assert r.json()["status"] == "active"


# --- rest-hook ----------------------------------------------------------------------------


def test_rest_hook_payloads_empty_id_only_and_full_resource(
    hooks: TestClient, receiver: Receiver
) -> None:
    backport = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                "backport-payload-content")  # fmt: skip
    empty = subscribe(hooks, "Observation?code=1", {
        "type": "rest-hook", "endpoint": receiver.url + "/empty",
        "header": ["Authorization: Bearer secret-for-the-receiver", "X-Ward: 3"]})  # fmt: skip
    full = subscribe(hooks, "Observation?code=1", {
        "type": "rest-hook", "endpoint": receiver.url + "/full",
        "payload": "application/fhir+json"})  # fmt: skip
    ids = subscribe(hooks, "Observation?code=1", {
        "type": "rest-hook", "endpoint": receiver.url + "/ids", "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": backport, "valueCode": "id-only"}]}})  # fmt: skip
    created = hooks.post("/fhir/Observation", json=obs("1")).json()
    hooks.post("/fhir/Observation", json=obs("2"))  # matches none
    wait_for(lambda: len(receiver.requests) >= 3)
    time.sleep(0.3)
    assert len(receiver.requests) == 3
    by_path = {r["path"].split("/")[2]: r for r in receiver.requests}
    # empty: R4 "a POST with no body"; the channel's headers are sent as given
    assert by_path["empty"]["method"] == "POST" and by_path["empty"]["body"] == b""
    assert by_path["empty"]["headers"]["Authorization"] == "Bearer secret-for-the-receiver"
    assert by_path["empty"]["headers"]["X-Ward"] == "3"
    # full-resource: R4 "PUT [endpoint]/[type]/[id]" with the resource as stored
    put = by_path["full"]
    assert (put["method"], put["path"]) == ("PUT", f"/hook/full/Observation/{created['id']}")
    assert put["headers"]["Content-Type"] == "application/fhir+json"
    assert json.loads(put["body"]) == created
    # id-only: a Backport IG notification Bundle naming the resource, without its content
    bundle = json.loads(by_path["ids"]["body"])
    assert by_path["ids"]["method"] == "POST"
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    status, focus = bundle["entry"]
    params = {p["name"]: p for p in status["resource"]["parameter"]}
    assert params["subscription"]["valueReference"]["reference"].endswith(f"Subscription/{ids}")
    assert params["type"]["valueCode"] == "event-notification"
    assert focus["fullUrl"].endswith(f"Observation/{created['id']}") and "resource" not in focus
    assert {empty, full}


def test_rest_hook_retries_with_back_off_then_error_then_recovers(
    hooks: TestClient, receiver: Receiver
) -> None:
    sid = subscribe(hooks, "Observation?code=1", {"type": "rest-hook", "endpoint": receiver.url})
    receiver.answers = [500, 503, 500]  # three failures: the first try and both retries
    hooks.post("/fhir/Observation", json=obs("1"))
    sub = wait_for(lambda: (s := hooks.get(f"/fhir/Subscription/{sid}").json())["status"]
                   == "error" and s)  # fmt: skip
    assert "HTTP 500" in sub["error"] and "3 attempts" in sub["error"]
    stamps = [r for r in receiver.requests]
    assert len(stamps) == 3
    # the next notification succeeds: the Subscription is active again, without error
    hooks.post("/fhir/Observation", json=obs("1"))
    sub = wait_for(lambda: (s := hooks.get(f"/fhir/Subscription/{sid}").json())["status"]
                   == "active" and s)  # fmt: skip
    assert "error" not in sub
    assert len(receiver.requests) == 4


def test_a_retry_that_succeeds_leaves_the_subscription_active(
    hooks: TestClient, receiver: Receiver
) -> None:
    sid = subscribe(hooks, "Observation?code=1", {"type": "rest-hook", "endpoint": receiver.url})
    receiver.answers = [503]
    hooks.post("/fhir/Observation", json=obs("1"))
    wait_for(lambda: len(receiver.requests) == 2)
    time.sleep(0.2)
    assert hooks.get(f"/fhir/Subscription/{sid}").json()["status"] == "active"
    assert len(receiver.requests) == 2


def test_an_unreachable_or_slow_endpoint_never_slows_the_write(
    hooks: TestClient, receiver: Receiver
) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dead = subscribe(hooks, "Observation?code=1",
                     {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{closed}/x"})  # fmt: skip
    slow = subscribe(hooks, "Observation?code=1", {"type": "rest-hook", "endpoint": receiver.url})
    receiver.delay = 3.0  # beyond the 1 s timeout
    started = time.perf_counter()
    r = hooks.post("/fhir/Observation", json=obs("1"))
    took = time.perf_counter() - started
    assert r.status_code == 201
    assert took < 0.5, took  # the write returned long before any delivery gave up
    for sid, reason in ((dead, "ConnectError"), (slow, "Timeout")):
        sub = wait_for(lambda sid=sid: (s := hooks.get(f"/fhir/Subscription/{sid}").json())[
            "status"] == "error" and s, 20)  # fmt: skip
        assert reason in sub["error"], sub["error"]


def test_end_turns_the_subscription_off(hooks: TestClient, receiver: Receiver) -> None:
    """R4 Subscription.end: stored `off` when it has passed already; turned `off` when it
    passes (an offset counts: 2020-01-01T07:00+08:00 is 2019-12-31T23:00Z)."""
    channel = {"type": "rest-hook", "endpoint": receiver.url}
    past = subscription("Observation?code=1", channel, end="2020-01-01T07:00:00+08:00")
    r = hooks.post("/fhir/Subscription", json=past)
    assert r.status_code == 201 and r.json()["status"] == "off"
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    sid = subscribe(hooks, "Observation?code=1", channel, end=soon.isoformat())
    wait_for(lambda: hooks.get(f"/fhir/Subscription/{sid}").json()["status"] == "off", 10)
    hooks.post("/fhir/Observation", json=obs("1"))
    time.sleep(0.3)
    assert receiver.requests == []


def test_an_endpoint_whose_name_does_not_resolve_is_accepted_and_fails_at_delivery(
    hooks: TestClient,
) -> None:
    """Not known now is not refused (the name may be one of another network's); each delivery
    resolves it again, and fails until it resolves."""
    endpoint = "https://no-such-host.invalid/hook"  # RFC 6761: .invalid never resolves
    sid = subscribe(hooks, "Observation?code=1", {"type": "rest-hook", "endpoint": endpoint})
    hooks.post("/fhir/Observation", json=obs("1"))
    sub = wait_for(lambda: (s := hooks.get(f"/fhir/Subscription/{sid}").json())["status"]
                   == "error" and s)  # fmt: skip
    assert "does not resolve" in sub["error"]


# --- the matcher against the search engine -------------------------------------------------

RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "zhang", "gender": "male", "birthDate": "1970-05-03",
     "name": [{"family": "张", "given": ["伟"]}],
     "managingOrganization": {"reference": "Organization/ha"},
     "identifier": [{"system": "urn:oid:1.2.3", "value": "A-1"}]},
    {"resourceType": "Patient", "id": "jose", "gender": "male", "birthDate": "1985",
     "name": [{"family": "Álvarez", "given": ["José"]}],
     "managingOrganization": {"reference": "http://other.org/fhir/Organization/x"}},
    {"resourceType": "Patient", "id": "mary", "gender": "female", "birthDate": "2001-12-31",
     "name": [{"family": "Smith", "given": ["Mary Ann"]}],
     "identifier": [{"value": "A-1"}]},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
     "subject": {"reference": "Patient/zhang"}, "effectiveDateTime": "2024-03-05T10:00:00+08:00"},
    {"resourceType": "Observation", "id": "o2", "status": "preliminary",
     "code": {"coding": [{"code": "8867-4"}]}, "subject": {"reference": "Patient/mary"},
     "effectivePeriod": {"start": "2024-02-28", "end": "2024-03-02"}},
    {"resourceType": "Observation", "id": "o3", "status": "final",
     "code": {"coding": [{"system": "http://snomed.info/sct", "code": "8867-4"}]},
     "subject": {"reference": "Patient/jose"}},
    {"resourceType": "Observation", "id": "o4", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
     "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": {"value": 107}}]},
]  # fmt: skip

CRITERIA = [
    "Patient?gender=male", "Patient?gender=male,female", "Patient?gender:not=male",
    "Patient?family=alv", "Patient?family=ALVAREZ", "Patient?family:exact=Álvarez",
    "Patient?family:contains=mit", "Patient?name=zhang", "Patient?name=张", "Patient?given=mary",
    "Patient?identifier=A-1", "Patient?identifier=urn:oid:1.2.3|A-1", "Patient?identifier=|A-1",
    "Patient?identifier=urn:oid:1.2.3|", "Patient?birthdate=1985", "Patient?birthdate=ge2000",
    "Patient?birthdate=lt1980-01-01", "Patient?birthdate=sa1985-06", "Patient?birthdate=ne1985",
    "Patient?organization=Organization/ha", "Patient?organization=ha",
    "Patient?organization=http://other.org/fhir/Organization/x",
    "Patient?_id=mary,jose", "Patient?gender=male&birthdate=le1980",
    f"Observation?code={LOINC}|8867-4", "Observation?code=8867-4", "Observation?code=|8867-4",
    "Observation?subject=Patient/zhang", "Observation?subject:Patient=mary",
    "Observation?date=2024-03", "Observation?date=eq2024-03-01", "Observation?date=ap2024-03-01",
    "Observation?date=gt2024-03-05T01:00:00Z", "Observation?date=eb2024-03-01",
    "Observation?status=final&code=8867-4", "Observation?subject=http://testserver/fhir/Patient/mary",
    "Patient?_id=zhang&gender=male", "Observation?combo-code=8480-6",
    f"Observation?combo-code={LOINC}|8867-4,{LOINC}|85354-9",
]  # fmt: skip


def test_in_memory_matching_agrees_with_the_search_engine(client: TestClient) -> None:
    """Each criteria decided from a version's index rows must pick exactly the resources
    the search engine finds for the same query (spot checks by hand: `family=alv` finds
    Álvarez, accents folded; `date=2024-03` finds o1 only: o2's period leaves March;
    `name=zhang` finds 张 by its pinyin)."""
    from fhir_server.model import literal
    from fhir_server.search.index import index_rows
    from fhir_server.subscriptions.criteria import compile_criteria, matches
    from fhir_server.subscriptions.notifier import Active
    from fhir_server.subscriptions.watch import Watch

    base = "http://testserver/fhir"

    for r in RESOURCES:
        assert client.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
    services = client.app.state.services  # type: ignore[attr-defined]
    stored = {
        (r["resourceType"], r["id"]): services.store.reader().current(r["resourceType"], r["id"])
        for r in RESOURCES
    }
    tables = services.store.subscriptions
    compiled = {text: compile_criteria(services.registry, text, tables) for text in CRITERIA}
    # the Subscriptions a write is checked against (watch.py: keyed by an exact clause)
    watches = {
        rtype: Watch.build(
            [Active(t, {}, c, "websocket", "empty", None, None)
             for t, c in compiled.items() if c.rtype == rtype], base, tables)
        for rtype in ("Patient", "Observation")
    }  # fmt: skip
    found_by: dict[str, set[str]] = {}
    for text, criteria in compiled.items():
        assert criteria.in_memory, text
        searched = client.get(f"/fhir/{text}").json()
        expected = {e["resource"]["id"] for e in searched.get("entry", [])}
        got = set()
        for (rtype, rid), (_, version) in stored.items():
            if rtype == criteria.rtype:
                rows = index_rows(rtype, literal.loads(version.json), services.registry)
                candidates = {a.id for a in watches[rtype].candidates(rid, rows)}
                if matches(criteria, rid, rows, base):
                    assert text in candidates, (text, rid)  # never keyed away
                    got.add(rid)
        assert got == expected, text
        found_by[text] = got
    assert found_by["Patient?family=alv"] == {"jose"}
    assert found_by["Observation?date=2024-03"] == {"o1"}
    assert found_by["Patient?name=zhang"] == {"zhang"}
    # combo-code is code | component-code: o4 by its component's code, o1 by its own
    assert found_by["Observation?combo-code=8480-6"] == {"o4"}
    assert found_by[f"Observation?combo-code={LOINC}|8867-4,{LOINC}|85354-9"] == {"o1", "o4"}
