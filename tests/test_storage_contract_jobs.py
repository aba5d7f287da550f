"""The background jobs' part of the storage contract (storage/contract.py: ExportTables, Inbox,
SubscriptionTables; issue 17 part B) on every backend: SQLite, MongoDB through mongomock, and
a real MongoDB when FHIR_TEST_MONGODB_URL is set (test_storage_contract.py opens them).

Expectations come from the Bulk Data Access IG 2.0.0 (export.html: kick-off 202 with
Content-Location, status 202 then the manifest, one NDJSON file per type, `deleted` for _since),
HL7 v2.5.1 ch. 2 (original-mode ACK AA echoing MSH-10 in MSA-2; a resent MSH-10 is the same
message) and R4 subscription.html (websocket: "bind <id>", then "ping <id>" per match), checked
against resources written by hand here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from mllp_harness import Harness, fields, sample
from test_storage_contract import BACKENDS, open_backend
from test_subscriptions import Lines

from fhir_server.context import RequestContext
from fhir_server.interactions import write
from fhir_server.interactions.hooks import transaction
from fhir_server.interactions.search import find
from fhir_server.services import Parts
from fhir_server.storage.contract import Selection
from integrations.hl7v2.worker import CHANNEL

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
LOINC = "http://loinc.org"


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    client, close = open_backend(request.param, parts, tmp_path)
    yield client
    close()


def put(c: TestClient, resource: dict[str, Any]) -> None:
    r = c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def obs(oid: str, code: str, subject: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }  # fmt: skip
    if subject:
        body["subject"] = {"reference": subject}
    return body


# --- Bulk Data export --------------------------------------------------------------------------


def finish(c: TestClient, location: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the status URL: 202 while it runs, then 200 with the manifest as JSON."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = c.get(location)
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("application/json")
            manifest: dict[str, Any] = r.json()
            return manifest
        assert r.status_code == 202, r.text
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def kick_off(c: TestClient, url: str, **params: str) -> str:
    r = c.get(url, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return str(r.headers["content-location"])


def files(c: TestClient, manifest: dict[str, Any], key: str = "output") -> dict[str, list[Any]]:
    """Each file of the manifest's `key` list, by type, as parsed NDJSON lines; each line count
    checked against the manifest's."""
    out: dict[str, list[Any]] = {}
    for item in manifest[key]:
        r = c.get(item["url"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/fhir+ndjson"
        got = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(got) == item["count"]
        out[item["type"]] = got
    return out


def test_export_kick_off_status_and_files(api: TestClient) -> None:
    put(api, patient("p1", "Zhang"))
    put(api, patient("p2", "Li"))
    put(api, obs("o1", "1234-5", "Patient/p1"))
    put(api, obs("o2", "1234-5", "Patient/p2"))
    put(api, obs("o3", "9999-9", "Patient/p1"))
    put(api, obs("o4", "1234-5", None))  # in no patient's compartment
    assert api.delete("/fhir/Observation/o3").status_code in (200, 204)

    # system level: every current resource of the types asked, o3 gone
    location = kick_off(api, "/fhir/$export", _type="Patient,Observation")
    manifest = finish(api, location)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"] == "http://testserver/fhir/$export?_type=Patient%2CObservation"
    got = files(api, manifest)
    assert {t: sorted(r["id"] for r in rs) for t, rs in got.items()} == {
        "Patient": ["p1", "p2"], "Observation": ["o1", "o2", "o4"]}  # fmt: skip
    for resources in got.values():  # each line is the resource as a read returns it
        for r in resources:
            read = api.get(f"/fhir/{r['resourceType']}/{r['id']}").json()
            assert read == r

    # patient level with a _typeFilter: the compartment's Observations of one code
    location = kick_off(api, "/fhir/Patient/$export", _type="Observation",
                        _typeFilter="Observation?code=1234-5")  # fmt: skip
    got = files(api, finish(api, location))
    assert sorted(r["id"] for r in got["Observation"]) == ["o1", "o2"]

    # _since: what changed after it, and the deletions after it in `deleted`
    since = manifest["transactionTime"]
    time.sleep(0.01)
    put(api, {**obs("o1", "1234-5", "Patient/p1"), "status": "amended"})
    assert api.delete("/fhir/Observation/o2").status_code in (200, 204)
    location = kick_off(api, "/fhir/$export", _type="Observation", _since=since)
    later = finish(api, location)
    got = files(api, later)
    assert [(r["id"], r["status"]) for r in got["Observation"]] == [("o1", "amended")]
    deleted = files(api, later, "deleted")["Bundle"]
    assert [b["entry"][0]["request"] for b in deleted] == [
        {"method": "DELETE", "url": "Observation/o2"}]  # fmt: skip

    # the Bulk Data Delete Request: 202, then the job is gone (404)
    assert api.delete(location).status_code == 202
    assert api.get(location).status_code == 404


def test_an_export_reads_resources_as_they_were_at_its_transaction_time(api: TestClient) -> None:
    """export.html: the files hold the resources as of transactionTime; a resource changed
    since is written as its version then, one created since is left out."""
    exports = api.app.state.services.store.exports  # type: ignore[attr-defined]
    put(api, obs("o1", "1234-5", "Patient/p1"))
    put(api, obs("o2", "1234-5", "Patient/p1"))
    at = api.get("/fhir/Observation/o2").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    put(api, {**obs("o1", "1234-5", "Patient/p1"), "status": "amended"})
    put(api, obs("o3", "1234-5", "Patient/p1"))
    sel = Selection("Observation")
    rows, last = exports.batch("http://testserver/fhir", sel, 0, 10, at)
    assert [(r["id"], r["status"]) for r in map(orjson.loads, rows)] == [
        ("o1", "final"), ("o2", "final")]  # fmt: skip
    assert last is not None  # o3's row was read (and left out)
    assert exports.batch("http://testserver/fhir", sel, last, 10, at) == ([], None)
    # in two batches of one: the row continues where the first stopped
    first, after = exports.batch("http://testserver/fhir", sel, 0, 1, at)
    second, _ = exports.batch("http://testserver/fhir", sel, after, 1, at)
    assert [orjson.loads(r)["id"] for r in first + second] == ["o1", "o2"]


# --- the HL7 v2 inbox ----------------------------------------------------------------------------


@pytest.fixture
def hl7(api: TestClient) -> Iterator[Harness]:
    harness = Harness(api)
    yield harness
    harness.close()


def wait_mapped(hl7: Harness, received: int, timeout: float = 30.0) -> dict[str, int]:
    """The inbox counts once `received` messages are stored and none waits to be mapped."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = hl7.inbox.counts(CHANNEL)
        if counts["received"] == 0 and sum(counts.values()) == received:
            return counts
        time.sleep(0.02)
    raise AssertionError(f"not mapped in {timeout} s: {hl7.inbox.counts(CHANNEL)}")


def test_hl7_message_is_acked_stored_once_mapped_listed_and_replayed(
    hl7: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integrations.hl7v2 import tables

    # original mode: AA, MSA-2 = the message's MSH-10
    assert fields(hl7.send(sample("adt_a01_admit.hl7")), "MSA")[1:3] == ["AA", "ADT20240301-0001"]
    wait_mapped(hl7, 1)
    [pat] = hl7.search("Patient?identifier=0001234567")
    assert pat["name"][0]["family"] == "张" and pat["gender"] == "male"  # PID-5, PID-8 M
    [enc] = hl7.search(f"Encounter?subject=Patient/{pat['id']}")
    assert enc["class"]["code"] == "IMP"  # PV1-2 I: inpatient (v2-0004 -> v3 ActCode)
    made = {t: len(hl7.search(f"{t}?_count=100")) for t in ("Patient", "Encounter")}

    # the same MSH-4/MSH-3 and MSH-10 again: acknowledged again, stored once, nothing new
    assert fields(hl7.send(sample("adt_a01_resend.hl7")), "MSA")[1:3] == [
        "AA", "ADT20240301-0001"]  # fmt: skip
    assert wait_mapped(hl7, 1)["mapped"] == 1
    assert {t: len(hl7.search(f"{t}?_count=100")) for t in made} == made
    [record] = hl7.inbox.search(CHANNEL)
    assert record.duplicates == 1 and record.status == "mapped"

    # a message whose PID-8 is not in table 0001: ACKed (it is stored), mapping fails
    unknown_sex = sample("adt_a28_add_person.hl7").replace(b"|20010203|F|", b"|20010203|X|")
    assert fields(hl7.send(unknown_sex), "MSA")[1] == "AA"
    wait_mapped(hl7, 2)
    listing = hl7.client.get("/hl7/messages").json()  # newest first
    assert listing["counts"] == {"received": 0, "mapped": 1, "error": 1, "rejected": 0}
    assert [m["controlId"] for m in listing["messages"]] == [
        "ADT20240306-0040", "ADT20240301-0001"]  # fmt: skip
    [failed] = hl7.client.get("/hl7/messages", params={"status": "error"}).json()["messages"]
    assert failed["errorAt"] == "PID-8"
    assert hl7.search("Patient?identifier=0009990001") == []  # nothing half written
    assert hl7.client.get(f"/hl7/messages/{failed['seq']}/raw").content == unknown_sex

    # the fix (X is this site's "not stated"), then the replay maps it
    local = {**tables.local(), "AdministrativeSexLocal": {"X": "unknown"}}
    monkeypatch.setattr(tables, "local", lambda: local)
    replayed = hl7.client.post(f"/hl7/messages/{failed['seq']}/replay").json()
    assert replayed["status"] == "mapped" and replayed["attempts"] == 2
    [added] = hl7.search("Patient?identifier=0009990001")
    assert added["gender"] == "unknown"


def test_a_savepoint_undoes_its_part_alone(api: TestClient) -> None:
    """contract.Session.savepoint (the HL7 mapper's per-message rollback in a batch): what a
    failing part wrote is gone, created or updated; what the transaction wrote besides stays."""
    services = api.app.state.services  # type: ignore[attr-defined]
    ctx = RequestContext(base_url="http://testserver/fhir")
    put(api, patient("kept", "Before"))
    with transaction(services, None) as session:
        write.create(session, services, ctx, "Patient", services.validator(patient("a", "A")),
                     rid="a")  # fmt: skip
        with pytest.raises(RuntimeError), session.savepoint():
            write.create(session, services, ctx, "Patient",
                         services.validator(patient("b", "B")), rid="b")  # fmt: skip
            current = session.current("Patient", "kept")
            write.update(session, services, ctx, "Patient", "kept",
                         services.validator(patient("kept", "After")))  # fmt: skip
            assert current is not None
            raise RuntimeError("the part fails")
        assert [s.id for s in session.written] == ["a"]
    assert api.get("/fhir/Patient/a").status_code == 200
    assert api.get("/fhir/Patient/b").status_code == 404
    kept = api.get("/fhir/Patient/kept").json()
    assert kept["name"] == [{"family": "Before"}] and kept["meta"]["versionId"] == "1"
    assert api.get("/fhir/Patient/kept/_history").json()["total"] == 1
    found = api.get("/fhir/Patient", params={"family": "After"}).json()
    assert found.get("entry", []) == []


def test_full_text_rows_follow_the_transaction_and_its_savepoints(api: TestClient) -> None:
    """_content (search.html#content: the resource's text) finds what this transaction wrote
    before it searches, even inside a savepoint; a failing savepoint takes its own text with
    it but not what was written before it, also when it searched that text meanwhile."""
    services = api.app.state.services  # type: ignore[attr-defined]
    ctx = RequestContext(base_url="http://testserver/fhir")

    def content(session: Any, word: str) -> list[str]:
        return [i for _, i in find(session, services, ctx, "Patient", f"_content={word}")]

    with transaction(services, None) as session:
        write.create(session, services, ctx, "Patient",
                     services.validator(patient("a", "Quillfeather")), rid="a")  # fmt: skip
        with pytest.raises(RuntimeError), session.savepoint():
            write.create(session, services, ctx, "Patient",
                         services.validator(patient("b", "Marrowdale")), rid="b")  # fmt: skip
            assert content(session, "quillfeather") == ["a"]
            assert content(session, "marrowdale") == ["b"]
            raise RuntimeError("the part fails")
        write.create(session, services, ctx, "Patient",
                     services.validator(patient("c", "Thistlewood")), rid="c")  # fmt: skip
        with session.savepoint():
            write.update(session, services, ctx, "Patient", "c",
                         services.validator(patient("c", "Brackenridge")))  # fmt: skip
        assert content(session, "thistlewood") == []
    for word, expected in [("quillfeather", ["a"]), ("marrowdale", []), ("thistlewood", []),
                           ("brackenridge", ["c"])]:  # fmt: skip
        found = api.get("/fhir/Patient", params={"_content": word}).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == expected, word


# --- R4 Subscriptions --------------------------------------------------------------------------


def subscribe(c: TestClient, criteria: str) -> str:
    body = {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": criteria, "channel": {"type": "websocket"}}  # fmt: skip
    r = c.post("/fhir/Subscription", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"  # accepted (subscription.html: requested -> active)
    return str(r.json()["id"])


def test_a_websocket_subscription_is_pinged_after_a_matching_write(api: TestClient) -> None:
    put(api, patient("p1", "Zhang"))
    put(api, patient("p2", "Li"))
    by_code = subscribe(api, f"Observation?code={LOINC}|1234-5")
    chained = subscribe(api, "Observation?subject:Patient.family=Zhang")  # asked of the store
    with api.websocket_connect("/fhir/websocket") as ws:
        lines = Lines(ws)
        ws.send_text(f"bind {by_code}")
        ws.send_text(f"bind {chained}")
        assert lines.settle(0.3) == [f"bound {by_code}", f"bound {chained}"]
        put(api, obs("o1", "1234-5", "Patient/p2"))  # the code only
        assert lines.settle() == [f"ping {by_code}"]
        put(api, obs("o2", "9999-9", "Patient/p1"))  # the chain only
        assert lines.settle() == [f"ping {chained}"]
        put(api, obs("o3", "9999-9", "Patient/p2"))  # neither
        put(api, patient("p3", "Zhang"))  # another type
        assert lines.settle() == []


def test_websocket_events_reach_the_other_processes(api: TestClient) -> None:
    """The event table the worker processes share: an event another process (origin) wrote is
    seen after the last seen seq; one's own come back empty (already delivered here)."""
    store = api.app.state.services.store  # type: ignore[attr-defined]
    tables = store.subscriptions
    start = tables.last_event(store.reader())
    with store.write() as session:
        tables.add_events(session, ["s1", "s2"], "other")
    with store.write() as session:
        tables.add_events(session, ["s3"], "me")
    events = tables.events_after(store.reader(), start, "me")
    assert [sub for _, sub in events] == ["s1", "s2", ""]
    assert [seq for seq, _ in events] == sorted(seq for seq, _ in events)
    assert tables.last_event(store.reader()) == events[-1][0]
    assert tables.events_after(store.reader(), events[-1][0], "me") == []


def test_a_websocket_event_committed_late_is_not_skipped(api: TestClient) -> None:
    """MongoDB takes an event's seq from a counter before the event commits: a reader that
    has seen a higher seq must still get the lower one when it lands (within the grace);
    a seq that never lands is passed once it is old. SQLite numbers events inside its one
    write lock, so a lower seq never lands late there."""
    store = api.app.state.services.store  # type: ignore[attr-defined]
    if store.kind != "mongodb":
        pytest.skip("seqs are taken inside the write lock")
    tables = store.subscriptions
    with store.write() as session:
        tables.add_events(session, ["a"], "other")
    late = store.allocate(1, "subscription_event")  # a writer took a seq, not yet committed
    with store.write() as session:
        tables.add_events(session, ["c"], "other")
    first = tables.events_after(store.reader(), 0, "me")
    assert [sub for _, sub in first] == ["a"]  # c waits for the seq before it
    store.db["subscription_event"].insert_one(
        {"_id": late, "subscription": "b", "origin": "other", "at": time.time()})
    assert [s for _, s in tables.events_after(store.reader(), first[-1][0], "me")] == ["b", "c"]
    # a seq taken by a write that never committed: passed once the events after it are old
    lost = store.allocate(1, "subscription_event")
    with store.write() as session:
        tables.add_events(session, ["d"], "other")
    assert tables.events_after(store.reader(), lost - 1, "me") == []
    store.db["subscription_event"].update_many({"_id": {"$gt": lost}}, {"$inc": {"at": -60}})
    assert [s for _, s in tables.events_after(store.reader(), lost - 1, "me")] == ["d"]


def test_hl7_maps_again_onto_what_was_deleted_over_rest(hl7: Harness) -> None:
    """R4 http.html#update: an update of a deleted resource re-creates it as its next version;
    http.html#cond-update: a match finding nothing (search never finds the deleted) creates."""
    assert fields(hl7.send(sample("adt_a01_admit.hl7")), "MSA")[1] == "AA"
    wait_mapped(hl7, 1)
    [header] = hl7.search("MessageHeader?event=A01")
    [pat] = hl7.search("Patient?identifier=0001234567")
    [enc] = hl7.search(f"Encounter?subject=Patient/{pat['id']}")
    for ref in (f"MessageHeader/{header['id']}", f"Patient/{pat['id']}", f"Encounter/{enc['id']}"):
        assert hl7.client.delete(f"/fhir/{ref}").status_code == 200
        assert hl7.client.get(f"/fhir/{ref}").status_code == 410

    # an A08 for the deleted patient's PID-3 and visit: mapped, as a new Patient and Encounter
    assert fields(hl7.send(sample("adt_a08_update.hl7")), "MSA")[1:3] == [
        "AA", "ADT20240302-0007"]  # fmt: skip
    assert wait_mapped(hl7, 2) == {"received": 0, "mapped": 2, "error": 0, "rejected": 0}
    [new] = hl7.search("Patient?identifier=0001234567")
    assert new["id"] != pat["id"] and new["meta"]["versionId"] == "1"
    assert new["address"][0]["line"] == ["莫干山路100号"]  # the A08's PID-11
    [visit] = hl7.search(f"Encounter?subject=Patient/{new['id']}")
    assert visit["identifier"][0]["value"] == "ZY2024030100123"  # PV1-19
    assert hl7.client.get(f"/fhir/Patient/{pat['id']}").status_code == 410  # still deleted

    # the replay writes the MessageHeader's fixed id (one per message) again: version 3
    # (1 create, 2 delete, 3 re-create), not a second version 1 refused by the database
    replayed = hl7.client.post("/hl7/messages/1/replay").json()
    assert replayed["status"] == "mapped" and "error" not in replayed
    again = hl7.read(f"MessageHeader/{header['id']}")
    assert again["meta"]["versionId"] == "3" and again["eventCoding"]["code"] == "A01"
    history = hl7.client.get(f"/fhir/MessageHeader/{header['id']}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "DELETE", "POST"]
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert [m["id"] for m in hl7.search("MessageHeader?event=A01")] == [header["id"]]


def test_a_subscriptions_owner_is_who_wrote_it_last(api: TestClient) -> None:
    """The websocket lets only a Subscription's owner bind it (README, Subscriptions): the
    owner read back is the principal stored with the write; none for an unknown id."""
    store = api.app.state.services.store  # type: ignore[attr-defined]
    tables = store.subscriptions
    sid = subscribe(api, "Observation?status=final")
    owner = tables.owner(store.reader(), sid)
    assert owner is not None and owner["kind"] == "anonymous"  # this harness runs auth off
    dra = {"kind": "user", "user": "dra", "client_id": "ward-app", "scopes": [], "roles": []}
    with store.write() as session:
        tables.set_owner(session, sid, dra)
    assert tables.owner(store.reader(), sid) == dra
    assert tables.owner(store.reader(), "no-such-subscription") is None
