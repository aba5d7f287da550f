"""Defects in batch/transaction reads, history, and search input handling.

Expectations come from the R4 spec (http.html#transaction, #history, search.html#elements,
#all, #paging) and, where it is silent, from what HAPI FHIR does.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts
from fhir_server.storage.sqlite import SqliteStore

JSON = {"Content-Type": "application/fhir+json"}
SUBSETTED = "SUBSETTED"


def post_bundle(client: TestClient, kind: str, entries: list[dict[str, Any]]) -> Any:
    return client.post(
        "/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries}, headers=JSON
    )


def get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def observation(oid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def ids(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(fullUrl, versionId or '') of every entry, in order."""
    out = []
    for e in bundle.get("entry", []):
        res = e.get("resource") or {}
        out.append((e.get("fullUrl", ""), (res.get("meta") or {}).get("versionId", "")))
    return out


def status_code(item: dict[str, Any]) -> int:
    return int(item["response"]["status"].split()[0])


# --- 1. every read interaction inside batch and transaction -------------------------------

READ_URLS = [
    "metadata",
    "_history",
    "Patient/_history",
    "Patient/p1/_history",
    "?_type=Patient",
    "Patient/p1",
    "Patient/p1/_history/1",
    "Patient?family=Alpha",
    "Patient/p1/Observation",
    "Patient/p1?_elements=name",
]


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_every_read_interaction_in_a_bundle_answers_as_the_rest_call(
    client_with: Callable[..., TestClient], kind: str
) -> None:
    # without the audit trail: its AuditEvents, expanded in the background between the
    # bundle and the REST calls, would change the system history the two compare
    client = client_with(audit=False)
    put(client, patient("p1", "Alpha"))
    put(client, patient("p1", "Alpha2"))  # version 2, so history and vread differ
    put(client, patient("p2", "Beta"))
    put(client, observation("o1", "p1"))
    r = post_bundle(client, kind, [get(u) for u in READ_URLS])
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    for url, item in zip(READ_URLS, entries, strict=True):
        assert item["response"]["status"].startswith("200"), (url, item)
        rest = client.get(f"/fhir/{url}" if not url.startswith("?") else f"/fhir{url}")
        assert rest.status_code == 200, (url, rest.text)
        want, got = rest.json(), item["resource"]
        assert got["resourceType"] == want["resourceType"], url
        if want["resourceType"] == "Bundle":
            assert got["type"] == want["type"], url
            assert got.get("total") == want.get("total"), url
            assert ids(got) == ids(want), url
            assert want.get("total", 0) > 0 or want["type"] == "searchset", url
        elif want["resourceType"] == "CapabilityStatement":
            assert got["fhirVersion"] == want["fhirVersion"] == "4.0.1"
            assert got["rest"] == want["rest"]
        else:
            assert got == want, url


def test_bundle_read_errors_answer_per_entry_in_a_batch(client: TestClient) -> None:
    r = post_bundle(client, "batch", [get("Patient/nope"), get("Patient/nope/_history")])
    assert r.status_code == 200, r.text
    assert [status_code(e) for e in r.json()["entry"]] == [404, 404]


# --- 2. reads of a bundle do not take the write lock; lock waits end in 503 ----------------


@pytest.fixture
def locked(tmp_path: Path, parts: Parts) -> Iterator[tuple[TestClient, sqlite3.Connection]]:
    """A server with a 0.3 s lock timeout, and a second connection that can hold the lock."""
    services = make_services(tmp_path / "locked.db", parts, lock_timeout_seconds=0.3)
    path = services.settings.database
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        yield c, other
        other.close()


def test_write_waiting_on_a_held_lock_answers_503_with_retry_after(
    locked: tuple[TestClient, sqlite3.Connection],
) -> None:
    client, other = locked
    other.execute("BEGIN IMMEDIATE")
    try:
        r = client.post("/fhir/Patient", json={"resourceType": "Patient"})
    finally:
        other.execute("ROLLBACK")
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    issue = r.json()["issue"][0]
    assert issue["code"] in ("transient", "lock-error")
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201


def test_a_write_takes_the_lock_within_milliseconds_of_its_release(
    tmp_path: Path, parts: Parts
) -> None:
    """Another process holds the write lock for 0.34 s. SQLite's own wait tries again after
    sleeping 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms (sqliteDefaultBusyCallback), so
    its tries fall at 328 and 428 ms: the write would start some 85 ms after the release.
    The store tries every millisecond."""
    services = make_services(tmp_path / "handoff.db", parts, lock_timeout_seconds=5)
    with TestClient(build_app(services.settings, services)) as client:
        client.post("/fhir/Patient", json={"resourceType": "Patient"})  # warm
        other = sqlite3.connect(services.settings.database, isolation_level=None,
                                check_same_thread=False)  # fmt: skip
        other.execute("BEGIN IMMEDIATE")
        released: list[float] = []

        def release() -> None:
            time.sleep(0.34)
            released.append(time.monotonic())
            other.execute("ROLLBACK")

        holder = threading.Thread(target=release)
        holder.start()
        r = client.post("/fhir/Patient", json={"resourceType": "Patient"})
        answered = time.monotonic()
        holder.join()
        other.close()
    assert r.status_code == 201, r.text
    assert answered - released[0] < 0.05, f"{1000 * (answered - released[0]):.0f} ms"


def test_bundle_reads_run_while_another_process_holds_the_write_lock(
    locked: tuple[TestClient, sqlite3.Connection],
) -> None:
    client, other = locked
    put(client, patient("p1", "Alpha"))
    other.execute("BEGIN IMMEDIATE")
    try:
        batch = post_bundle(client, "batch", [get("Patient/p1"), get("Patient?family=alpha")])
        transaction = post_bundle(client, "transaction", [get("Patient/p1")])
    finally:
        other.execute("ROLLBACK")
    assert batch.status_code == 200, batch.text
    assert [status_code(e) for e in batch.json()["entry"]] == [200, 200]
    assert batch.json()["entry"][1]["resource"]["total"] == 1
    assert transaction.status_code == 200, transaction.text
    assert transaction.json()["entry"][0]["resource"]["id"] == "p1"


def test_transaction_get_entries_see_the_transaction_writes(client: TestClient) -> None:
    """http.html#trules: GETs are processed last, after the writes of the same transaction."""
    r = post_bundle(
        client,
        "transaction",
        [
            get("Patient?family=Gamma"),
            {
                "fullUrl": "urn:uuid:7f3c3f0e-8f0a-4a43-9d2b-6f1c1f0c0001",
                "resource": {"resourceType": "Patient", "name": [{"family": "Gamma"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    )
    assert r.status_code == 200, r.text
    search = r.json()["entry"][0]
    assert search["response"]["status"].startswith("200")
    assert search["resource"]["total"] == 1


# --- 3. issue expressions under an entry are FHIRPath --------------------------------------


def test_transaction_error_expression_points_into_the_entry_resource(client: TestClient) -> None:
    bad = {**observation("o1", "p1"), "code": 5}
    r = post_bundle(
        client,
        "transaction",
        [
            {"resource": patient("p1", "A"), "request": {"method": "PUT", "url": "Patient/p1"}},
            {"resource": bad, "request": {"method": "PUT", "url": "Observation/o1"}},
        ],
    )
    assert r.status_code == 400, r.text
    expressions = [x for i in r.json()["issue"] for x in i.get("expression", [])]
    assert expressions and all(x.startswith("Bundle.entry[1].resource") for x in expressions)
    # (validate.py may add a pydantic '.root' to the element path: not FHIRPath either, but
    # outside the bundle's mapping)
    assert any(x.split(".root")[0] == "Bundle.entry[1].resource.code" for x in expressions)


# --- 4. history response.status is the status the client was given ------------------------


def test_history_statuses_are_those_the_client_got(client: TestClient) -> None:
    put(client, patient("h1", "One"))  # update-as-create: 201
    put(client, patient("h1", "Two"))  # 200
    assert client.delete("/fhir/Patient/h1").status_code == 200  # 200 with an OperationOutcome
    assert client.put("/fhir/Patient/h1", json=patient("h1", "Three")).status_code == 201
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"})
    assert created.status_code == 201
    h = client.get("/fhir/Patient/h1/_history").json()
    got = [(e["request"]["method"], e["response"]["status"]) for e in h["entry"]]
    assert got == [
        ("PUT", "201 Created"),
        ("DELETE", "200 OK"),
        ("PUT", "200 OK"),
        ("PUT", "201 Created"),
    ]
    h2 = client.get(f"/fhir/Patient/{created.json()['id']}/_history").json()
    assert [e["response"]["status"] for e in h2["entry"]] == ["201 Created"]


# --- 5. _elements keeps mandatory elements and is tagged SUBSETTED -------------------------


def test_elements_keeps_mandatory_elements_in_search_and_read(client: TestClient) -> None:
    put(client, patient("p1", "A"))
    put(client, {**observation("o1", "p1"), "valueQuantity": {"value": 1}})
    found = client.get("/fhir/Observation?_elements=subject").json()["entry"][0]["resource"]
    read = client.get("/fhir/Observation/o1?_elements=subject").json()
    for res in (found, read):
        assert set(res) == {"resourceType", "id", "meta", "subject", "status", "code"}, res
        assert SUBSETTED in [t.get("code") for t in res["meta"]["tag"]]


# --- 6. _type with a parameter common to the listed types ----------------------------------


def test_system_search_applies_a_parameter_common_to_every_type_listed(
    client: TestClient,
) -> None:
    put(client, patient("p1", "Smith"))
    put(client, patient("p2", "Jones"))
    put(client, {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Smith"}]})
    one = client.get("/fhir?_type=Patient&family=Smith").json()
    assert one["total"] == 1 and one["entry"][0]["resource"]["id"] == "p1"
    two = client.get("/fhir?_type=Patient,Practitioner&family=Smith").json()
    assert two["total"] == 2
    assert {e["resource"]["id"] for e in two["entry"]} == {"p1", "d1"}
    # a parameter that Organization lacks cannot filter both types
    strict = {"Prefer": "handling=strict"}
    r = client.get("/fhir?_type=Patient,Organization&gender=male", headers=strict)
    assert r.status_code == 400


# --- 7. history: _at semantics and paging --------------------------------------------------


def test_history_at_returns_the_versions_current_at_that_instant(client: TestClient) -> None:
    a1 = put(client, patient("a", "A1"))["meta"]["lastUpdated"]
    b1 = put(client, patient("b", "B1"))["meta"]["lastUpdated"]
    a2 = put(client, patient("a", "A2"))["meta"]["lastUpdated"]
    assert a1 < b1 < a2

    def at(instant: str) -> set[tuple[str, str]]:
        r = client.get("/fhir/Patient/_history", params={"_at": instant})
        assert r.status_code == 200, r.text
        found = r.json()["entry"]
        return {(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in found}

    assert at(a1) == {("a", "1")}
    assert at(b1) == {("a", "1"), ("b", "1")}
    assert at(a2) == {("a", "2"), ("b", "1")}
    assert at("2000-01-01T00:00:00Z") == set()
    typed = client.get("/fhir/Patient/a/_history", params={"_at": b1}).json()
    assert [e["resource"]["meta"]["versionId"] for e in typed["entry"]] == ["1"]


def test_history_next_links_walk_every_version_once_newest_first(client: TestClient) -> None:
    for i in range(7):
        put(client, patient(f"x{i % 3}", f"N{i}"))
    # the conformance resources loaded at start-up are in the system history too
    full = client.get("/fhir/Patient/_history?_count=100").json()
    assert full["total"] == 7
    seen: list[tuple[str, str]] = []
    url: str | None = "/fhir/Patient/_history?_count=2"
    pages = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += ids(body)
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        url = None
        if nxt:
            assert "_page=" in nxt[0] and "_offset" not in nxt[0]  # keyset, not offset
            parts = urlsplit(nxt[0])
            url = f"{parts.path}?{parts.query}"
        pages += 1
        assert pages < 10
    assert seen == ids(full)
    assert len(set(seen)) == 7


def test_history_deep_offset_is_refused_with_a_pointer_to_next_links(client: TestClient) -> None:
    r = client.get("/fhir/_history?_offset=10001")
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["_offset"]
    assert client.get("/fhir/_history?_offset=10000").status_code == 200


# --- 8. _revinclude over a full page of 1,000 matches --------------------------------------


def test_revinclude_over_a_thousand_matches(client: TestClient) -> None:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
            "resource": {"resourceType": "Basic", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Basic"},
        }
        for i in range(1000)
    ]
    entries.append(
        {
            "resource": {
                "resourceType": "Provenance",
                "target": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000999"}],
                "recorded": "2024-01-01T00:00:00Z",
                "agent": [{"who": {"display": "x"}}],
            },
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    assert post_bundle(client, "transaction", entries).status_code == 200
    r = client.get("/fhir/Basic?_count=1000&_revinclude=Provenance:target")
    assert r.status_code == 200, r.text
    modes = [e["search"]["mode"] for e in r.json()["entry"]]
    assert modes.count("match") == 1000 and modes.count("include") == 1


# --- 9. _content / _text patterns are bounded ----------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "_content=" + ",".join(f"term{i}" for i in range(11)),
        "_text=" + "a" * 101,
        "_content:not=" + "b" * 101,
    ],
)
def test_fulltext_patterns_beyond_the_bounds_are_refused(client: TestClient, query: str) -> None:
    r = client.get(f"/fhir/Patient?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"][0] in ("_content", "_text", "_content:not")


def test_fulltext_patterns_within_the_bounds_are_served(client: TestClient) -> None:
    r = client.get("/fhir/Patient?_content=" + ",".join(["c" * 100] * 10))
    assert r.status_code == 200, r.text


# --- 10. malformed entries are 4xx for that entry ------------------------------------------

BAD_PATCHES: list[Any] = [
    [1, 2],
    5,
    "text",
    {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "@@@"},
    {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": ""},
    {"resourceType": "Binary", "data": base64.b64encode(b"not json").decode()},
    {"resourceType": "Binary", "data": base64.b64encode(b'{"op": "add"}').decode()},
    {"resourceType": "Binary", "data": 5},
]


@pytest.mark.parametrize("resource", BAD_PATCHES)
def test_malformed_patch_entry_is_a_4xx_for_that_entry(client: TestClient, resource: Any) -> None:
    put(client, patient("p1", "A"))
    entry = {"resource": resource, "request": {"method": "PATCH", "url": "Patient/p1"}}
    batch = post_bundle(client, "batch", [get("Patient/p1"), entry])
    assert batch.status_code == 200, batch.text
    item = batch.json()["entry"][1]
    assert 400 <= status_code(item) < 500, item
    assert "Bundle.entry[1]" in json.dumps(item["response"]["outcome"])
    transaction = post_bundle(client, "transaction", [entry])
    assert 400 <= transaction.status_code < 500, transaction.text
    assert "Bundle.entry[0]" in transaction.text


NEW = {"resourceType": "Patient"}


@pytest.mark.parametrize(
    "entry",
    [
        {"resource": NEW, "request": {"method": "POST", "url": "Patient", "ifNoneExist": 5}},
        {
            "resource": patient("p1", "A"),
            "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 5},
        },
        {"fullUrl": {}, "resource": NEW, "request": {"method": "POST", "url": "Patient"}},
        {"resource": NEW, "request": {"method": {}, "url": "Patient"}},
        {"request": {"method": "GET", "url": 5}},
    ],
)
def test_entry_fields_of_the_wrong_type_are_a_400_naming_the_entry(
    client: TestClient, entry: dict[str, Any]
) -> None:
    for kind in ("transaction", "batch"):
        r = post_bundle(client, kind, [get("metadata"), entry])
        if kind == "transaction":
            assert r.status_code == 400, r.text
            assert "Bundle.entry[1]" in r.text
        else:
            assert r.status_code == 200, r.text
            assert status_code(r.json()["entry"][1]) == 400


# --- 11. fhir-server load goes on after a failing bundle -----------------------------------


def test_load_reports_a_failing_bundle_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.cli import main

    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": 5},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    good = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient("g1", "Good"), "request": {"method": "PUT", "url": "Patient/g1"}}
        ],
    }
    (tmp_path / "a-bad.json").write_bytes(orjson.dumps(bad))
    (tmp_path / "b-good.json").write_bytes(orjson.dumps(good))
    db = tmp_path / "load.db"
    monkeypatch.delenv("FHIR_SERVER_DATABASE", raising=False)
    files = [str(tmp_path / "a-bad.json"), str(tmp_path / "b-good.json")]
    code = main(["load", *files, "--database", str(db)])
    err = capsys.readouterr().err
    assert code != 0
    assert "a-bad.json" in err and "Bundle.entry[0].resource.gender" in err
    assert "loaded 1" in err and "failed 1" in err
    store = SqliteStore(db)
    try:
        assert store.reader().current("Patient", "g1") is not None
    finally:
        store.close()


# --- 12. wrong input types are 400, never 500 ----------------------------------------------


def _cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient?_count=\u00b2",
        "/fhir/_history?_count=\u00b2",
        "/fhir/_history?_offset=\u00b2",
        "/fhir/_history?_offset=99999999999999999999",
        "/fhir/_history?_count=99999999999999999999",
        "/fhir/Patient?_count=99999999999999999999",
        "/fhir/Observation?value-quantity=1e1000000",
        "/fhir/Observation?value-quantity=gt1e1000000",
        "/fhir/Observation?value-quantity=ap-1e1000000",
        "/fhir/RiskAssessment?probability=1e1000000",
        *(
            f"/fhir/{where}?_page={_cursor(data)}"
            for where in ("Patient", "_history")
            for data in ([1], [1, 1, 2, 3], [1, {"a": 1}], {"a": 1}, 5, [[1], 2], ["x", 1, 2, 3, 4])
        ),
    ],
)
def test_wrong_input_types_are_4xx_never_500(client: TestClient, url: str) -> None:
    put(client, patient("p1", "A"))
    put(client, {**observation("o1", "p1"), "valueQuantity": {"value": 1}})
    r = client.get(url)
    assert r.status_code in (200, 400), (url, r.status_code, r.text)
    if r.status_code == 200:  # a big _count is clamped to the maximum (search.html#count)
        assert "_count=99999999999999999999" in url
    else:
        assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("version", ["\u00b2", "99999999999999999999", "-1"])
def test_vread_of_a_malformed_or_huge_version_is_404(client: TestClient, version: str) -> None:
    put(client, patient("p1", "A"))
    r = client.get(f"/fhir/Patient/p1/_history/{version}")
    assert r.status_code == 404, r.text
    bundle = post_bundle(client, "batch", [get(f"Patient/p1/_history/{version}")])
    assert status_code(bundle.json()["entry"][0]) == 404
