"""HTTP-level semantics found by real clients: request parsing, preconditions, HEAD, content
negotiation, Binary raw content, proxies and hosts, body limits and timeouts, safety headers."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

FHIR_JSON = "application/fhir+json"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "name": [{"family": "张", "given": ["三"]}],
    "gender": "male",
}


def outcome(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def diagnostics(r: httpx.Response) -> str:
    return " ".join(i.get("diagnostics", "") for i in outcome(r)["issue"])


def exchange(base: str, data: bytes, wait: float = 8.0) -> tuple[bytes, float]:
    """Send raw bytes to a live server and read until it closes or `wait` passes; the answer
    and the seconds it took (the request is sent as is: no client library rewrites it)."""
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


# --- 1. raw UTF-8 in the request target -------------------------------------------------------


def test_raw_utf8_in_the_query_is_read_as_percent_encoded_utf8(live_server: str) -> None:
    """curl sends `?family=张` as raw UTF-8 bytes; browsers would percent-encode them. The
    server reads both the same way (RFC 3986 §2.5: UTF-8 then percent-encoding)."""
    assert httpx.post(f"{live_server}/Patient", json=PATIENT).status_code == 201
    request = (
        "GET /fhir/Patient?family=张 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ).encode()
    answer, _ = exchange(live_server, request)
    assert status_of(answer) == 200, answer[:300]
    assert orjson.loads(body_of(answer))["total"] == 1


def test_raw_utf8_split_across_packets_and_in_the_path(live_server: str) -> None:
    request = "GET /fhir/Patient/张 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    data = request.encode()
    split = data.index(b"\xbc")  # in the middle of the character
    parts = urlsplit(live_server)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=8) as s:
        s.sendall(data[:split])
        time.sleep(0.2)
        s.sendall(data[split:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    # the id is not a valid FHIR id, so the server's own 400 (an OperationOutcome), not the
    # HTTP parser's plain-text one
    assert status_of(answer) == 400, answer[:300]
    assert b"OperationOutcome" in answer


# --- 2. a trailing newline --------------------------------------------------------------------


def test_fhir_json_bodies_end_with_a_newline(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=PATIENT)
    for r in (
        created,
        client.get(f"/fhir/Patient/{created.json()['id']}"),
        client.get("/fhir/Patient"),
        client.get("/fhir/metadata?_pretty=true"),
        client.get("/fhir/Patient/nope"),
    ):
        assert r.content.endswith(b"\n"), r.content[-40:]
        assert not r.content.endswith(b"\n\n")
        orjson.loads(r.content)


# --- 3. preconditions on PUT --------------------------------------------------------------------


def test_if_none_match_star_on_put_only_creates(client: TestClient) -> None:
    """RFC 9110 §13.1.2: If-None-Match: * fails when a current representation exists."""
    body = {**PATIENT, "id": "only-once"}
    first = client.put("/fhir/Patient/only-once", json=body, headers={"If-None-Match": "*"})
    assert first.status_code == 201
    again = client.put(
        "/fhir/Patient/only-once", json={**body, "gender": "female"}, headers={"If-None-Match": "*"}
    )
    assert again.status_code == 412
    assert outcome(again)["issue"][0]["code"] in ("conflict", "processing")
    assert client.get("/fhir/Patient/only-once").json()["meta"]["versionId"] == "1"


def test_if_none_match_etag_list_on_put_fails_when_one_matches(client: TestClient) -> None:
    body = {**PATIENT, "id": "tagged"}
    assert client.put("/fhir/Patient/tagged", json=body).status_code == 201
    changed = {**body, "gender": "female"}
    matching = client.put(
        "/fhir/Patient/tagged", json=changed, headers={"If-None-Match": 'W/"7", W/"1"'}
    )
    assert matching.status_code == 412
    other = client.put("/fhir/Patient/tagged", json=changed, headers={"If-None-Match": 'W/"7"'})
    assert other.status_code == 200
    assert other.json()["meta"]["versionId"] == "2"


def test_if_none_match_star_on_put_after_delete_creates(client: TestClient) -> None:
    body = {**PATIENT, "id": "gone"}
    assert client.put("/fhir/Patient/gone", json=body).status_code == 201
    assert client.delete("/fhir/Patient/gone").status_code in (200, 204)
    again = client.put("/fhir/Patient/gone", json=body, headers={"If-None-Match": "*"})
    assert again.status_code == 201


def test_if_match_that_is_not_a_plain_version_number_fails_the_precondition(
    live_server: str,
) -> None:
    """Over a real socket, so the header bytes arrive as sent (latin-1 is the header charset)."""
    body = {**PATIENT, "id": "guarded"}
    assert httpx.put(f"{live_server}/Patient/guarded", json=body).status_code == 201
    for tag in (
        b'W/"' + b"9" * 5000 + b'"',
        b"9" * 5000,
        b'W/"1\xb2"',  # '1\u00b2' in latin-1: str.isdigit() accepts it, int() does not
        'W/"\u0661"'.encode(),  # an Arabic-Indic digit one, as UTF-8 bytes
    ):
        headers = {"If-Match": tag}
        r = httpx.put(f"{live_server}/Patient/guarded", json=body, headers=headers)
        assert r.status_code in (400, 412), (tag[:20], r.text)
        outcome(r)
        r = httpx.delete(f"{live_server}/Patient/guarded", headers=headers)
        assert r.status_code in (400, 412), (tag[:20], r.text)


def test_if_match_with_a_superscript_digit_in_a_batch_entry_is_not_500(client: TestClient) -> None:
    assert client.put("/fhir/Patient/b1", json={**PATIENT, "id": "b1"}).status_code == 201
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {**PATIENT, "id": "b1"},
                "request": {"method": "PUT", "url": "Patient/b1", "ifMatch": 'W/"1²"'},
            }
        ],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].startswith(("400", "412"))


# --- 4. HEAD and Allow ------------------------------------------------------------------------


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    for path in (
        "/fhir/metadata",
        "/fhir/Patient",
        f"/fhir/Patient/{pid}",
        f"/fhir/Patient/{pid}/_history/1",
        f"/fhir/Patient/{pid}/_history",
        "/fhir/Patient?family=张",
    ):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b""
        for name in ("content-type", "etag", "last-modified"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)
        if path == "/fhir/metadata" or "_history/1" in path or path.endswith(pid):
            assert head.headers["content-length"] == get.headers["content-length"]


def test_405_carries_an_allow_header_with_every_method_of_the_path(client: TestClient) -> None:
    r = client.delete("/fhir/Patient/123/_history/1")
    assert r.status_code == 405
    assert outcome(r)["issue"][0]["code"] == "not-supported"
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}
    r = client.put("/fhir")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}


# --- 5. DELETE of what never existed ------------------------------------------------------------


def test_delete_of_an_unknown_id_is_204(client: TestClient) -> None:
    """http.html#delete: deleting a resource that does not exist answers 200 or 204."""
    r = client.delete("/fhir/Patient/never-was")
    assert r.status_code == 204
    assert r.content == b""
    asked = client.delete(
        "/fhir/Patient/never-was", headers={"Prefer": "return=OperationOutcome"}
    )
    assert asked.status_code == 200
    assert outcome(asked)["issue"][0]["severity"] == "information"


def test_batch_delete_of_an_unknown_id_is_204(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/never-was"}}],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200
    assert r.json()["entry"][0]["response"]["status"].startswith("204")


# --- 6. the fhirVersion parameter -------------------------------------------------------------


def test_accept_with_another_fhir_version_is_406(client: TestClient) -> None:
    """http.html#version-parameter: a server that cannot honour the version answers 406."""
    for accept in (
        "application/fhir+json;fhirVersion=3.0",
        "application/fhir+json; fhirVersion=1.0",
    ):
        r = client.get("/fhir/metadata", headers={"Accept": accept})
        assert r.status_code == 406, accept
        outcome(r)
    for accept in (
        "application/fhir+json;fhirVersion=4.0",
        "application/fhir+json; fhirVersion=4.0.1",
        "application/fhir+json;fhirVersion=3.0, application/fhir+json;fhirVersion=4.0",
    ):
        assert client.get("/fhir/metadata", headers={"Accept": accept}).status_code == 200
    r = client.get("/fhir/metadata", params={"_format": "application/fhir+json;fhirVersion=3.0"})
    assert r.status_code == 406


def test_content_type_with_another_fhir_version_is_415(client: TestClient) -> None:
    body = orjson.dumps(PATIENT)
    r = client.post(
        "/fhir/Patient",
        content=body,
        headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"},
    )
    assert r.status_code == 415
    outcome(r)
    ok = client.post(
        "/fhir/Patient",
        content=body,
        headers={"Content-Type": "application/fhir+json; fhirVersion=4.0"},
    )
    assert ok.status_code == 201


# --- 7. Binary raw content ----------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def test_binary_posted_raw_is_stored_and_served_raw(client: TestClient) -> None:
    """binary.html#rest: raw content in, a Binary stored; raw content out unless FHIR asked."""
    r = client.post(
        "/fhir/Binary",
        content=PNG,
        headers={"Content-Type": "image/png", "X-Security-Context": "Patient/p1"},
    )
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["resourceType"] == "Binary"
    assert stored["contentType"] == "image/png"
    assert base64.b64decode(stored["data"]) == PNG
    assert stored["securityContext"] == {"reference": "Patient/p1"}
    bid = stored["id"]
    raw = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "image/png"})
    assert raw.status_code == 200
    assert raw.content == PNG
    assert raw.headers["content-type"] == "image/png"
    assert raw.headers["x-security-context"] == "Patient/p1"
    assert raw.headers["etag"] == 'W/"1"'
    assert client.get(f"/fhir/Binary/{bid}", headers={"Accept": "*/*"}).content == PNG
    fhir = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/fhir+json"})
    assert fhir.json()["contentType"] == "image/png"
    assert client.get(f"/fhir/Binary/{bid}?_format=json").json()["resourceType"] == "Binary"


def test_binary_put_raw_creates_and_updates(client: TestClient) -> None:
    r = client.put(
        "/fhir/Binary/note", content="第一版".encode(), headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 201, r.text
    r = client.put(
        "/fhir/Binary/note", content="第二版".encode(), headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 200
    raw = client.get("/fhir/Binary/note", headers={"Accept": "text/plain"})
    assert raw.content.decode() == "第二版"
    assert raw.headers["content-type"].startswith("text/plain")
    assert "x-security-context" not in raw.headers


# --- 8. base URL, proxies and Host --------------------------------------------------------------


def test_host_not_allowed_is_400(client: TestClient) -> None:
    r = client.get("/fhir/metadata", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert "Host not allowed" in diagnostics(r)
    r = client.get("/fhir/Patient", headers={"X-Forwarded-Host": "evil.example"})
    assert r.status_code == 400


def test_trailing_slash_is_served_not_redirected_to_the_host(client: TestClient) -> None:
    r = client.get("/fhir/Patient/", follow_redirects=False)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "Bundle"
    evil = client.get("/fhir/Patient/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert evil.status_code == 400
    assert "location" not in evil.headers


def test_forwarded_headers_give_consistent_links(client_with: Callable[..., TestClient]) -> None:
    c = client_with(allowed_hosts="fhir.example.org")
    for headers in (
        {"X-Forwarded-Host": "fhir.example.org", "X-Forwarded-Proto": "https"},
        {"Forwarded": 'for=10.0.0.1;proto=https;host="fhir.example.org"'},
    ):
        r = c.post("/fhir/Patient", json=PATIENT, headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith("https://fhir.example.org/fhir/Patient/")
        bundle = c.get("/fhir/Patient", headers=headers).json()
        assert bundle["link"][0]["url"].startswith("https://fhir.example.org/fhir/Patient")
        assert bundle["entry"][0]["fullUrl"].startswith("https://fhir.example.org/fhir/Patient/")
    with_port = c.get(
        "/fhir/Patient",
        headers={
            "X-Forwarded-Host": "fhir.example.org",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "8443",
            "X-Forwarded-Prefix": "/api",
        },
    ).json()
    assert with_port["link"][0]["url"].startswith("https://fhir.example.org:8443/api/fhir/Patient")
    # the default Host of the test client is not in this server's allowed_hosts
    assert c.get("/fhir/metadata").status_code == 400


def test_public_base_url_wins_over_request_headers(client_with: Callable[..., TestClient]) -> None:
    c = client_with(public_base_url="https://records.example.org/fhir")
    r = c.post(
        "/fhir/Patient",
        json=PATIENT,
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert r.status_code == 201
    assert r.headers["location"].startswith("https://records.example.org/fhir/Patient/")


def test_allowed_hosts_star_allows_every_host(client_with: Callable[..., TestClient]) -> None:
    c = client_with(allowed_hosts="*")
    r = c.post("/fhir/Patient", json=PATIENT, headers={"Host": "anything.example:8080"})
    assert r.status_code == 201
    assert r.headers["location"].startswith("http://anything.example:8080/fhir/Patient/")


# --- 9. the body limit applies while streaming --------------------------------------------------


def test_chunked_body_over_the_limit_is_refused_before_it_ends(
    live_server_with: Callable[..., str],
) -> None:
    base = live_server_with(max_body_bytes=1000)
    head = (
        b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    # two chunks, 2048 bytes, and the body never ends: the server must answer anyway
    answer, took = exchange(base, head + chunk + chunk, wait=6)
    assert status_of(answer) == 413, answer[:200]
    assert b"too-costly" in answer
    assert took < 5


# --- 10. slow clients ---------------------------------------------------------------------------


def test_a_body_that_stops_arriving_gets_408(live_server_with: Callable[..., str]) -> None:
    base = live_server_with(read_timeout_seconds=1)
    head = (
        b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n"
    )
    answer, took = exchange(base, head + b'{"resourceType"', wait=8)
    assert status_of(answer) == 408, answer[:200]
    assert took < 5


def test_a_request_head_that_stops_arriving_is_closed(live_server_with: Callable[..., str]) -> None:
    base = live_server_with(read_timeout_seconds=1)
    answer, took = exchange(base, b"GET /fhir/metadata HTTP/1.1\r\nHost: 12", wait=8)
    assert took < 5
    assert status_of(answer) == 408, answer[:200]


def test_connections_over_the_cap_get_503(live_server_with: Callable[..., str]) -> None:
    base = live_server_with(max_connections=2)
    parts = urlsplit(base)
    idle = [socket.create_connection((parts.hostname, parts.port)) for _ in range(2)]  # type: ignore[arg-type]
    try:
        time.sleep(0.2)
        assert httpx.get(f"{base}/metadata", timeout=5).status_code == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert httpx.get(f"{base}/metadata", timeout=5).status_code == 200


# --- 11. safety headers -------------------------------------------------------------------------


def test_every_response_says_nosniff(client: TestClient) -> None:
    for r in (
        client.get("/fhir/metadata"),
        client.get("/fhir/Patient/nope"),
        client.get("/nowhere"),
        client.get("/fhir/metadata", headers={"Host": "evil.example"}),
    ):
        assert r.headers.get("x-content-type-options") == "nosniff", r.url


def test_referral_slip_html_is_served_with_a_restrictive_csp(client: TestClient) -> None:
    from conftest import seed
    from test_slip_stats_demo import fixture_resources

    seed(client, fixture_resources())
    page = client.get("/fhir/ServiceRequest/sr-1/$referral-slip")
    assert page.status_code == 200
    csp = {
        d.strip().split(" ", 1)[0]: d.strip()
        for d in page.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == "default-src 'none'"
    assert "script-src" not in csp  # no script may run in the slip
    assert page.headers["x-content-type-options"] == "nosniff"


# --- 12. duplicate JSON keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Patient","gender":"male","gender":"female"}',
        b'{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}',
        b'{"resourceType":"Patient","gender" : "male","gender"\n: "female"}',
        b'{"resourceType":"Patient","gender":"male","\\u0067ender":"female"}',
    ],
)
def test_duplicate_json_keys_are_refused(client: TestClient, body: bytes) -> None:
    """RFC 8259 §4: names SHOULD be unique; a FHIR resource never repeats a property."""
    r = client.post("/fhir/Patient", content=body, headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 400, r.text
    text = diagnostics(r)
    assert "Duplicate" in text and ("'gender'" in text or "'family'" in text)
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_quotes_and_colons_inside_strings_are_not_duplicates(client: TestClient) -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"text": 'he said "a": "b" : \\" :'}, {"text": "\u0022:x"}],
        "gender": "male",
    }
    r = client.post(
        "/fhir/Patient", content=orjson.dumps(patient), headers={"Content-Type": FHIR_JSON}
    )
    assert r.status_code == 201, r.text
    escaped = b'{"resourceType":"Patient","name":[{"text":"\\u5f20\\u0022:"}]}'
    r = client.post("/fhir/Patient", content=escaped, headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 201, r.text


# --- 13. form bodies that are not UTF-8 ---------------------------------------------------------


def test_search_form_body_that_is_not_utf8_is_400(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient/_search",
        content=b"family=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    outcome(r)
