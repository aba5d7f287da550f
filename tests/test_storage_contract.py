"""The storage contract (fhir_server/storage/contract.py), run over REST against every backend
available: SQLite always, MongoDB through mongomock (no server here), and a real MongoDB when
FHIR_TEST_MONGODB_URL is set (README, MongoDB: how to run it).

Expectations come from the FHIR R4 spec (http.html, search.html) and hand-built resources, as
the comments say; the cross-backend test compares MongoDB with SQLite on the vendored R4
examples and Synthea sample, which is the point of the issue (same behaviour, one setting).
What mongomock cannot check (multi-document transactions) is skipped there with the reason;
it runs against a real replica set only."""

from __future__ import annotations

import bz2
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import LiveParts, Parts, Services
from fhir_server.settings import Settings

MONGODB_URL = os.environ.get("FHIR_TEST_MONGODB_URL")
BACKENDS = ["sqlite", "mongomock"] + (["mongodb"] if MONGODB_URL else [])
DATA = Path(__file__).parent / "data"


def _mongo_services(
    kind: str, parts: Parts, tmp: Path, **settings: Any
) -> tuple[Services, Callable[[], None]]:
    pytest.importorskip("pymongo")
    from fhir_server.storage.mongo import MongoStore

    chosen = {"auth": "off", "audit": False, "demo_on_empty": False, **settings}
    config = Settings(database=tmp / "unused.db", **chosen)
    name = f"fhir_test_{uuid.uuid4().hex[:12]}"
    if kind == "mongomock":
        mongomock = pytest.importorskip("mongomock")
        store = MongoStore(mongomock.MongoClient(), name)
    else:
        from pymongo import MongoClient

        assert MONGODB_URL is not None
        store = MongoStore(MongoClient(MONGODB_URL), name, chained=config.audit)
    client = store.client
    return Services(config, store, LiveParts(parts, config)), lambda: client.drop_database(name)


def open_backend(
    kind: str, parts: Parts, tmp: Path, **settings: Any
) -> tuple[TestClient, Callable[[], None]]:
    """A client of the app on backend `kind`; by default with auth and audit off."""
    if kind == "sqlite":
        chosen = {"audit": False, **settings}
        services = make_services(tmp / f"{uuid.uuid4().hex}.db", parts, **chosen)
        done: Callable[[], None] = lambda: None  # noqa: E731
    else:
        services, done = _mongo_services(kind, parts, tmp, **settings)
    client = TestClient(build_app(services.settings, services), raise_server_exceptions=False)
    client.__enter__()

    def close() -> None:
        client.__exit__(None, None, None)
        done()

    return client, close


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    client, close = open_backend(request.param, parts, tmp_path)
    client.backend = request.param  # type: ignore[attr-defined]
    yield client
    close()


def put(c: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def ids(c: TestClient, url: str) -> list[str]:
    r = c.get(url)
    assert r.status_code == 200, r.text
    return [
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    ]


def follow(c: TestClient, url: str) -> list[str]:
    """Every page through the `next` links."""
    out: list[str] = []
    while url:
        page = c.get(url).json()
        out += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [lk["url"] for lk in page["link"] if lk["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else ""
    return out


def patient(pid: str, family: str, given: str, born: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": [given]}],
        "birthDate": born,
        **extra,
    }


def observation(oid: str, pid: str, code: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": f"loinc {code}"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2020-05-01T10:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },  # fmt: skip
    }


# --- CRUD, versions, history (http.html#read, #vread, #update, #delete, #history) ----------


def test_versions_history_and_delete(api: TestClient) -> None:
    put(api, patient("p1", "Chen", "Wei", "1980-02-03"))
    second = put(api, patient("p1", "Chen", "Wei", "1980-02-04"))
    assert second["meta"]["versionId"] == "2"  # each update is a new version
    assert api.get("/fhir/Patient/p1/_history/1").json()["birthDate"] == "1980-02-03"
    assert api.get("/fhir/Patient/p1").json()["birthDate"] == "1980-02-04"
    assert api.delete("/fhir/Patient/p1").status_code in (200, 204)
    assert api.get("/fhir/Patient/p1").status_code == 410  # read of a deleted resource: Gone
    history = api.get("/fhir/Patient/p1/_history").json()
    # newest first: the delete, then the update, then the create (http.html#history)
    assert history["total"] == 3
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "PUT"]
    put(api, patient("p1", "Chen", "Wei", "1980-02-05"))  # re-created after the delete
    assert api.get("/fhir/Patient/p1").json()["meta"]["versionId"] == "4"
    assert api.get("/fhir/Patient/nope").status_code == 404


def test_history_since_and_paging(api: TestClient) -> None:
    for n in range(5):
        put(api, patient(f"h{n}", "Li", "Na", f"199{n}-01-01"))
    stamp = api.get("/fhir/Patient/h2").json()["meta"]["lastUpdated"]
    since = api.get(f"/fhir/Patient/_history?_since={stamp.replace('+', '%2B')}").json()
    # _since is inclusive: versions at or after the instant (h2, h3, h4)
    assert sorted(e["resource"]["id"] for e in since["entry"]) == ["h2", "h3", "h4"]
    pages = follow(api, "/fhir/Patient/_history?_count=2")
    assert pages[:5] == ["h4", "h3", "h2", "h1", "h0"]  # newest first, no repeats


# --- conditional interactions (http.html#ccreate, #cond-update, #cdelete) ------------------


def test_conditional_create_update_delete(api: TestClient) -> None:
    body = patient("x", "Wang", "Fang", "1970-01-01")
    body.pop("id")
    body["identifier"] = [{"system": "urn:oid:1.2.3", "value": "A1"}]
    header = {"If-None-Exist": "identifier=urn:oid:1.2.3|A1"}
    first = api.post("/fhir/Patient", json=body, headers=header)
    again = api.post("/fhir/Patient", json=body, headers=header)
    # a match: 200 with the existing resource, nothing created
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    body["birthDate"] = "1971-01-01"
    updated = api.put("/fhir/Patient?identifier=urn:oid:1.2.3|A1", json=body)
    assert updated.status_code == 200 and updated.json()["id"] == first.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    assert api.delete("/fhir/Patient?identifier=urn:oid:1.2.3|A1").status_code in (200, 204)
    assert ids(api, "/fhir/Patient?identifier=urn:oid:1.2.3|A1") == []


def test_concurrent_conditional_creates_make_one_resource(api: TestClient) -> None:
    """Check-then-write must not race (http.html#ccreate): SQLite's one writer, MongoDB's
    lock document per condition inside the transaction (the process lock on mongomock)."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "race"}]}
    header = {"If-None-Exist": "identifier=urn:x|race"}

    def create(_: int) -> tuple[int, str]:
        r = api.post("/fhir/Patient", json=body, headers=header)
        return r.status_code, r.json().get("id", r.text)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(16)))
    # one 201; the others 200 with that resource (or 503 to retry, on a write conflict)
    assert sorted(code for code, _ in results).count(201) == 1
    made = {rid for code, rid in results if code in (200, 201)}
    assert len(made) == 1 and all(code in (200, 201, 503) for code, _ in results)
    assert api.get("/fhir/Patient?identifier=urn:x|race").json()["total"] == 1


# --- search: every type and modifier the server implements (search.html) -------------------


@pytest.fixture
def people(api: TestClient) -> TestClient:
    put(api, patient("a", "Zhang", "San", "1980-01-15", gender="male", active=True))
    put(api, patient("b", "Zhao", "Si", "1990-06-30", gender="female", active=False))
    put(api, patient("c", "Smith", "Ann", "1975-12-01", gender="female"))
    put(api, {"resourceType": "Organization", "id": "org1", "name": "Ward One"})
    put(api, observation("o1", "a", "8867-4", 72, "/min"))
    put(api, observation("o2", "b", "8867-4", 90, "/min"))
    put(api, observation("o3", "b", "29463-7", 5.5, "kg"))
    return api


def test_string_token_date_quantity_reference_uri(people: TestClient) -> None:
    api = people
    assert ids(api, "/fhir/Patient?family=zha") == ["a", "b"]  # prefix, case-insensitive
    assert ids(api, "/fhir/Patient?family:exact=Zhang") == ["a"]
    assert ids(api, "/fhir/Patient?family:exact=zhang") == []
    assert ids(api, "/fhir/Patient?name:contains=mit") == ["c"]
    assert ids(api, "/fhir/Patient?gender=female") == ["b", "c"]
    assert ids(api, "/fhir/Patient?gender:not=female") == ["a"]
    assert ids(api, "/fhir/Observation?code=http://loinc.org|8867-4") == ["o1", "o2"]
    assert ids(api, "/fhir/Observation?code=http://other|8867-4") == []
    assert ids(api, "/fhir/Observation?code:text=loinc 294") == ["o3"]
    # dates are ranges: 1980 covers 1980-01-15; gt/lt compare the day's range
    assert ids(api, "/fhir/Patient?birthdate=1980") == ["a"]
    assert ids(api, "/fhir/Patient?birthdate=gt1979-12-31") == ["a", "b"]
    assert ids(api, "/fhir/Patient?birthdate=le1980-01-15") == ["a", "c"]
    assert ids(api, "/fhir/Patient?birthdate=ge1980&birthdate=lt1990-06-30") == ["a"]
    # quantities: 5.5 kg is 5500 g in UCUM's canonical units
    assert ids(api, "/fhir/Observation?value-quantity=5500|http://unitsofmeasure.org|g") == ["o3"]
    assert ids(api, "/fhir/Observation?value-quantity=gt80|http://unitsofmeasure.org|/min") == [
        "o2"
    ]
    assert ids(api, "/fhir/Observation?subject=Patient/b") == ["o2", "o3"]
    assert ids(api, "/fhir/Observation?subject:Patient=a") == ["o1"]
    assert ids(api, "/fhir/Observation?patient=b&code=29463-7") == ["o3"]
    assert ids(api, "/fhir/Patient?active:missing=true") == ["c"]
    assert ids(api, "/fhir/Patient?active:missing=false") == ["a", "b"]
    assert ids(api, "/fhir/Patient?_id=a,c") == ["a", "c"]
    assert ids(api, "/fhir/Patient?_id:not=a") == ["b", "c"]
    assert ids(api, "/fhir/Patient?_content=smith") == ["c"]  # the resource's text
    assert ids(api, "/fhir/Patient?_lastUpdated=gt2000-01-01") == ["a", "b", "c"]
    assert ids(api, "/fhir/Patient?_lastUpdated=lt2000-01-01") == []
    put(api, {"resourceType": "List", "id": "l1", "status": "current", "mode": "working",
              "entry": [{"item": {"reference": "Patient/c"}}]})  # fmt: skip
    assert ids(api, "/fhir/Patient?_list=l1") == ["c"]
    vs = {"resourceType": "ValueSet", "id": "v1", "status": "active",
          "url": "http://example.org/fhir/ValueSet/colours"}  # fmt: skip
    put(api, vs)
    assert ids(api, "/fhir/ValueSet?url:below=http://example.org/fhir") == ["v1"]
    assert ids(api, "/fhir/ValueSet?url=http://example.org/fhir") == []


def test_quantity_in_the_canonical_unit_matches_a_search_in_another(api: TestClient) -> None:
    # 5500 g is stored in UCUM's canonical unit (no second row); 5.5 kg = 5500 g finds it,
    # and gt5.4 kg (> 5400 g) too, while lt5.4 kg does not
    put(api, observation("g", "a", "29463-7", 5500, "g"))
    ucum = "http://unitsofmeasure.org"
    assert ids(api, f"/fhir/Observation?value-quantity=5.5|{ucum}|kg") == ["g"]
    assert ids(api, f"/fhir/Observation?value-quantity=gt5.4|{ucum}|kg") == ["g"]
    assert ids(api, f"/fhir/Observation?value-quantity=lt5.4|{ucum}|kg") == []


def test_composite_matches_within_one_component(people: TestClient) -> None:
    api = people
    bp = {"resourceType": "Observation", "id": "bp", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
          "subject": {"reference": "Patient/a"},
          "component": [
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
               "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
               "valueQuantity": {"value": 80, "unit": "mm[Hg]"}}]}  # fmt: skip
    put(api, bp)
    assert ids(api, "/fhir/Observation?code-value-quantity=8867-4$gt80") == ["o2"]
    url = "/fhir/Observation?component-code-value-quantity="
    assert ids(api, url + "8480-6$gt100") == ["bp"]
    # diastolic is 80: the 120 of the other component must not make it match (search.html#combining)
    assert ids(api, url + "8462-4$gt100") == []
    assert ids(api, url + "8462-4$80") == ["bp"]


def test_chain_has_include_revinclude(people: TestClient) -> None:
    api = people
    assert ids(api, "/fhir/Observation?subject:Patient.family=zhao") == ["o2", "o3"]
    assert ids(api, "/fhir/Patient?_has:Observation:subject:code=29463-7") == ["b"]
    assert ids(api, "/fhir/Patient?_has:Observation:subject:code=8867-4") == ["a", "b"]
    page = api.get("/fhir/Observation?code=29463-7&_include=Observation:subject").json()
    modes = sorted((e["resource"]["id"], e["search"]["mode"]) for e in page["entry"])
    assert modes == [("b", "include"), ("o3", "match")]
    page = api.get("/fhir/Patient?_id=a&_revinclude=Observation:subject").json()
    modes = sorted((e["resource"]["id"], e["search"]["mode"]) for e in page["entry"])
    assert modes == [("a", "match"), ("o1", "include")]


def test_sort_total_and_paging_under_writes(people: TestClient) -> None:
    api = people
    assert ids(api, "/fhir/Patient?_sort=birthdate") == ["c", "a", "b"]
    assert ids(api, "/fhir/Patient?_sort=-birthdate") == ["b", "a", "c"]
    # a resource without the key follows the others, either direction (search.html#sort)
    put(api, {"resourceType": "Patient", "id": "d", "name": [{"family": "Sun"}]})
    assert ids(api, "/fhir/Patient?_sort=birthdate") == ["c", "a", "b", "d"]
    assert ids(api, "/fhir/Patient?_sort=-birthdate") == ["b", "a", "c", "d"]
    assert api.get("/fhir/Patient?_summary=count").json()["total"] == 4
    assert api.get("/fhir/Patient?gender=female&_total=accurate").json()["total"] == 2
    first = api.get("/fhir/Patient?_sort=birthdate&_count=2").json()
    assert [e["resource"]["id"] for e in first["entry"]] == ["c", "a"]
    # written between two pages: one sorting before the cursor, one after it
    put(api, patient("e", "Early", "E", "1900-01-01"))
    put(api, patient("f", "Late", "F", "1985-01-01"))
    nxt = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    rest = follow(api, nxt.replace("http://testserver", ""))
    # keyset paging: no repeat of c or a, nothing skipped, the new later one included
    assert rest == ["f", "b", "d"]
    prev = api.get(nxt.replace("http://testserver", "")).json()
    back = next(lk["url"] for lk in prev["link"] if lk["relation"] == "previous")
    assert ids(api, back.replace("http://testserver", "")) == ["c", "a"]


def test_system_search_and_type_filter(people: TestClient) -> None:
    api = people
    found = ids(api, "/fhir?_type=Patient,Organization&_count=100")
    assert sorted(found) == ["a", "b", "c", "org1"]
    assert api.get("/fhir?_type=Observation&_summary=count").json()["total"] == 3


# --- transactions (http.html#transaction) ---------------------------------------------------


def test_transaction_rolls_back_whole(api: TestClient) -> None:
    if api.backend == "mongomock":  # type: ignore[attr-defined]
        pytest.skip("mongomock has no multi-document transactions: real MongoDB only")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient("t1", "Ok", "A", "2000-01-01"),
             "request": {"method": "PUT", "url": "Patient/t1"}},
            {"resource": {"resourceType": "Patient", "id": "t2", "gender": "not-a-gender"},
             "request": {"method": "PUT", "url": "Patient/t2"}},
        ],
    }  # fmt: skip
    r = api.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text
    # all or nothing: the valid first entry was not kept either
    assert api.get("/fhir/Patient/t1").status_code == 404


def test_transaction_bundle_resolves_references(api: TestClient) -> None:
    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": {"resourceType": "Patient", "name": [{"family": "Qian"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation("tx", "placeholder", "8867-4", 60, "/min")
             | {"subject": {"reference": urn}},
             "request": {"method": "PUT", "url": "Observation/tx"}},
        ],
    }  # fmt: skip
    r = api.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    pid = api.get("/fhir/Observation/tx").json()["subject"]["reference"]
    assert ids(api, f"/fhir/Observation?subject={pid}") == ["tx"]


# --- the same results on both backends: R4 examples and the Synthea sample -----------------

QUERIES = [
    "Patient?gender=male",
    "Patient?family=sh",
    "Patient?birthdate=lt1990",
    "Patient?_sort=birthdate",
    "Patient?_has:Observation:subject:code=8302-2",
    "Observation?code=http://loinc.org|8302-2",
    "Observation?date=ge2015",
    "Observation?value-quantity=gt100",
    "Observation?combo-code=8480-6&_count=500",
    "Observation?combo-code-value-quantity=8480-6$gt130&_count=500",
    "Observation?combo-value-quantity=lt70|http://unitsofmeasure.org|mm[Hg]&_count=500",
    "Observation?subject:Patient.gender=female&_count=500",
    "Observation?category=vital-signs&_sort=-date&_count=500",
    "Condition?clinical-status=active",
    "Encounter?class=AMB&_include=Encounter:patient",
    "Practitioner?_revinclude=Encounter:practitioner&_count=500",
    "MedicationRequest?status=active,stopped",
    "Immunization?vaccine-code=http://hl7.org/fhir/sid/cvx|140",
    "Organization?name=general",
    "Procedure?date=2010",
    "Claim?_total=accurate&_count=5",
    "Questionnaire?status=active",
    "ValueSet?url:below=http://hl7.org/fhir",
]


def _load(client: TestClient) -> dict[str, str]:
    """Load the sample; server-assigned ids (transaction POSTs) mapped to the entry that made
    them, so results compare across backends, which assign different ids."""
    stable: dict[str, str] = {}
    for f in sorted(
        (DATA / "synthea").glob("*.json.bz2"), key=lambda p: (p.name[0] != "0", p.name)
    ):
        r = client.post("/fhir", json=json.loads(bz2.decompress(f.read_bytes())))
        assert r.status_code == 200, r.text[:300]
        for n, e in enumerate(r.json()["entry"]):
            location = e["response"].get("location", "")
            if location:
                stable[location.split("/")[1]] = f"{f.name}#{n}"
    for f in sorted((DATA / "r4-examples").glob("*.json"))[:150]:
        resource = json.loads(f.read_text())
        if resource.get("resourceType") in ("Bundle", "SearchParameter", "StructureDefinition"):
            continue
        rtype, rid = resource["resourceType"], resource.get("id")
        if rid:
            client.put(f"/fhir/{rtype}/{rid}", json=resource)  # invalid examples: 4xx, as both
    return stable


def _results(client: TestClient, url: str, stable: dict[str, str]) -> Any:
    page = client.get(f"/fhir/{url}").json()
    entries = [
        (e["resource"]["resourceType"], stable.get(e["resource"]["id"], e["resource"]["id"]),
         e["search"]["mode"])
        for e in page.get("entry", [])
    ]  # fmt: skip
    # the order of sorted queries compares by their sort values (ties may differ: server ids
    # differ between backends); the entries as sets
    order = [_sort_value(e["resource"]) for e in page.get("entry", [])] if "_sort" in url else []
    return page.get("total"), order, sorted(entries)


def _sort_value(resource: dict[str, Any]) -> Any:
    return resource.get("birthDate") or resource.get("effectiveDateTime")


@pytest.mark.slow  # the R4 examples and Synthea through both backends: `make test-slow`
def test_mongodb_answers_as_sqlite_on_examples_and_synthea(tmp_path: Path, parts: Parts) -> None:
    pytest.importorskip("mongomock")
    sqlite, close_sqlite = open_backend("sqlite", parts, tmp_path)
    others = [open_backend(kind, parts, tmp_path) for kind in BACKENDS if kind != "sqlite"]
    try:
        stable = _load(sqlite)
        expected = {url: _results(sqlite, url, stable) for url in QUERIES}
        assert sum(1 for _, _, entries in expected.values() if entries) >= 15  # not vacuous
        for client, _ in others:
            stable = _load(client)
            for url in QUERIES:
                assert _results(client, url, stable) == expected[url], url
    finally:
        close_sqlite()
        for _, close in others:
            close()


# --- a referral round: the workflow's operations write through the contract ----------------


def test_referral_round(api: TestClient) -> None:
    from test_workflow import CANCEL, booked, build_world, get, ok, op

    world = build_world(api)
    task, sr, _ = booked(api, world)  # draft, $submit, booked into a Slot
    ok(op(api, f"{task}/$cancel", CANCEL))
    # referral-model: cancelling ends the referral (ServiceRequest revoked), one Task for it
    assert get(api, sr)["status"] == "revoked"
    assert api.get(f"/fhir/Task?focus={sr}").json()["total"] == 1


# --- fhir-server migrate: every version, with its history, from SQLite into MongoDB --------


def test_migrate_copies_every_version(tmp_path: Path, parts: Parts) -> None:
    mongomock = pytest.importorskip("mongomock")
    from fhir_server.cli import migrate_into
    from fhir_server.storage.mongo import MongoStore

    source, close = open_backend("sqlite", parts, tmp_path)
    put(source, patient("m1", "Zhou", "Yi", "1960-01-01"))
    put(source, patient("m1", "Zhou", "Yi", "1960-01-02"))
    put(source, patient("m2", "Wu", "Er", "1961-01-01"))
    source.delete("/fhir/Patient/m2")
    put(source, observation("mo", "m1", "8867-4", 61, "/min"))
    database = Path(source.app.state.services.settings.database)  # type: ignore[attr-defined]
    expected_history = source.get("/fhir/_history?_count=1000").json()
    close()

    config = Settings(database=tmp_path / "unused.db", auth="off", audit=False,
                      demo_on_empty=False)  # fmt: skip
    target = MongoStore(mongomock.MongoClient(), "migrated")
    assert migrate_into(database, target, config) == 0
    services = Services(config, MongoStore(target.client, "migrated"), LiveParts(parts, config))
    with TestClient(build_app(config, services), raise_server_exceptions=False) as api:
        copied = api.get("/fhir/_history?_count=1000").json()

        # the same versions, newest first, with their methods and timestamps
        def facts(bundle: dict[str, Any]) -> list[tuple[Any, ...]]:
            return [(e["request"]["method"], e["request"]["url"],
                     (e.get("resource") or {}).get("meta", {}).get("versionId"),
                     (e.get("resource") or {}).get("meta", {}).get("lastUpdated"))
                    for e in bundle["entry"]]  # fmt: skip

        assert copied["total"] == expected_history["total"]
        assert facts(copied) == facts(expected_history)
        assert api.get("/fhir/Patient/m1/_history/1").json()["birthDate"] == "1960-01-01"
        assert api.get("/fhir/Patient/m2").status_code == 410
        # the current versions are indexed: searches, chains and new writes work
        assert ids(api, "/fhir/Observation?subject:Patient.family=zhou") == ["mo"]
        assert ids(api, "/fhir/Patient?birthdate=1960-01-02") == ["m1"]
        put(api, patient("m3", "Xu", "San", "1962-01-01"))
        assert ids(api, "/fhir/Patient?_count=10") == ["m1", "m3"]  # creation order kept


# --- the consortium rule's narrowing (security.md §3.2), below the policy ------------------
# Authorization runs on SQLite only for now, so the rule's clause is handed to each backend's
# search directly: Organization/ha sees the patients it manages, those of a live referral Task
# it is a party to (or one ended within the relationship's days), and those whose Consent
# permits it, less those a Consent denies everyone (a denial never hides a managed patient).

TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
REFERRAL_STATUS = "https://yilian.health/fhir/CodeSystem/yl-referral-business-status"
PRIVACY = "http://terminology.hl7.org/CodeSystem/consentscope"


def _task(tid: str, pid: str, status: str, owner: str, modified: str) -> dict[str, Any]:
    return {
        "resourceType": "Task", "id": tid, "status": status, "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "businessStatus": {"coding": [{"system": REFERRAL_STATUS, "code": "x"}]},
        "for": {"reference": f"Patient/{pid}"}, "owner": {"reference": owner},
        "lastModified": modified,
    }  # fmt: skip


def _consent(cid: str, pid: str, decision: str, *actors: str) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": decision}
    if actors:
        role = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP"}]}  # fmt: skip
        provision["actor"] = [{"role": role, "reference": {"reference": a}} for a in actors]
    return {
        "resourceType": "Consent", "id": cid, "status": "active",
        "scope": {"coding": [{"system": PRIVACY, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"}, "provision": provision,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN"}]},
    }  # fmt: skip


def _message(mid: str, pid: str, thread: str | None) -> dict[str, Any]:
    out = {"resourceType": "Communication", "id": mid, "status": "completed",
           "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
    if thread:
        out["partOf"] = [{"reference": f"Task/{thread}"}]
    return out


def consortium_world() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "top", "name": "Consortium"},
        {"resourceType": "Organization", "id": "ha", "name": "A",
         "partOf": {"reference": "Organization/top"}},
        {"resourceType": "Organization", "id": "hb", "name": "B"},
        {"resourceType": "PractitionerRole", "id": "dra",
         "organization": {"reference": "Organization/ha"}},
    ]  # fmt: skip
    managing = {"pa": "ha", "pf": "ha", "pb": "hb", "pc": "hb", "pd": "hb", "pe": "hb", "pg": "hb"}
    for pid, org in managing.items():
        out.append({"resourceType": "Patient", "id": pid,
                    "managingOrganization": {"reference": f"Organization/{org}"}})  # fmt: skip
        out.append({"resourceType": "Observation", "id": f"o{pid}", "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": f"Patient/{pid}"}})  # fmt: skip
    out += [
        # pc: a live referral owned by ha's practitioner role
        _task("tc", "pc", "in-progress", "PractitionerRole/dra", "2026-01-01T00:00:00Z"),
        # pg: a referral to ha that ended long before the relationship's days
        _task("tg", "pg", "completed", "Organization/ha", "2001-01-01T00:00:00Z"),
        # pd: a Consent permitting the consortium ha is part of
        _consent("cd", "pd", "permit", "Organization/top"),
        # pe: permitted to ha, and a denial naming no organization, which binds everyone
        _consent("ce1", "pe", "permit", "Organization/ha"),
        _consent("ce2", "pe", "deny"),
        # pf: managed by ha, which a denial does not take away
        _consent("cf", "pf", "deny", "Organization/ha"),
        # pa's messages: one in the thread of ha's referral, one in the thread of hb's alone
        _task("tx", "pa", "in-progress", "Organization/hb", "2026-01-01T00:00:00Z"),
        _message("m1", "pa", "tc"),
        _message("m2", "pa", "tx"),
        _message("m3", "pa", None),
        # Provenance of transitions (targets a Task, names no Patient), and of a Patient write
        _provenance("pvc", "Task/tc"),  # pc's referral: seen
        _provenance("pvg", "Task/tg"),  # pg's, ended long ago: hidden
        _provenance("pvp", "Patient/pa"),  # ha's own patient: seen
        _provenance("pvb", "Patient/pb"),  # hb's patient: hidden
    ]
    return out


def _provenance(pid: str, target: str) -> dict[str, Any]:
    return {"resourceType": "Provenance", "id": pid, "target": [{"reference": target}],
            "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Organization/hb"}}]}  # fmt: skip


@pytest.mark.parametrize("kind", BACKENDS)
def test_consortium_narrowing(kind: str, tmp_path: Path, parts: Parts) -> None:
    from conftest import seed

    from fhir_server.search import query as q

    client, close = open_backend(kind, parts, tmp_path)
    try:
        seed(client, consortium_world())
        store = client.app.state.services.store  # type: ignore[attr-defined]
        referral = q.CareRelationship((TASK_CODE, "fulfill"), REFERRAL_STATUS,
                                      ("in-progress",), ("completed",), 30,
                                      confines_messages=True)  # fmt: skip
        compartment = {"Observation": ("subject", "performer"), "Communication": ("subject",),
                       "Provenance": ("patient",)}  # fmt: skip

        def sees(rtype: str, **more: Any) -> list[str]:
            params = compartment.get(rtype, ())
            ps = q.PatientSet("ha", ((referral, "2025-12-01T00:00:00Z"),), params,
                              consents_at="2026-02-01T00:00:00Z", **more)  # fmt: skip
            clause = q.Clause(q.Param("_tenancy", "special"), (), patients=ps)
            query = q.Query(rtype, [clause], count=100)
            page = store.reader().search("http://testserver/fhir", query, None, False)
            return sorted(row[2] for row in page.rows)

        assert sees("Patient") == ["pa", "pc", "pd", "pf"]
        assert sees("Observation") == ["opa", "opc", "opd", "opf"]
        # a thread of a relationship ha is no party of stays its parties', managed patient or not
        assert sees("Communication") == ["m1", "m3"]
        # a Provenance naming no Patient is seen with the Task it targets (policy SEEN_WITH_TARGET)
        through = (("target", "Task", ("subject",)),)
        assert sees("Provenance", through=through) == ["pvc", "pvp"]
        assert sees("Provenance") == ["pvp"]  # without it, only through a Patient target
        # the check of the referral Task's own write: it cannot grant its writer access
        assert sees("Patient", excluding="tc") == ["pa", "pd", "pf"]
    finally:
        close()
