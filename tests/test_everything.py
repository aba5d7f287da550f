"""Patient/$everything and Encounter/$everything (patient-operation-everything.html,
encounter-operation-everything.html).

The Synthea expectations are computed from the raw bundles, never from the server: Synthea
writes one transaction bundle per patient holding that patient's record, every resource of it
in the Patient compartment (R4 CompartmentDefinition: Observation.subject, Claim.patient,
Provenance.target, ...); the shared Practitioners, Organizations and Locations it refers to by
conditional references (`Practitioner?identifier=…`) come from the hospital bundles. The
server assigns new ids, so resources are compared by content: the JSON without id and meta,
every reference blanked."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of, code_flow
from test_storage_contract import BACKENDS, open_backend
from test_synthea import SAMPLE, ordered, read_bundle

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts


def fingerprint(resource: dict[str, Any]) -> bytes:
    """The content that identifies a resource across servers: no id, no meta, references
    blanked (the server rewrites urn:uuid and conditional references), and so are identifiers
    of system urn:ietf:rfc:3986 (Synthea puts a fullUrl there, which a transaction rewrites
    like a reference)."""

    def blank(node: Any) -> Any:
        if isinstance(node, dict):
            uri = node.get("system") == "urn:ietf:rfc:3986"
            return {k: ("*" if k == "reference" or (uri and k == "value") else blank(v))
                    for k, v in node.items() if k not in ("id", "meta")}  # fmt: skip
        if isinstance(node, list):
            return [blank(v) for v in node]
        return node

    return orjson.dumps(blank(resource), option=orjson.OPT_SORT_KEYS)


@pytest.fixture(scope="module", params=BACKENDS)
def synthea(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> Iterator[Any]:
    """The sample loaded over HTTP, on every storage backend (test_storage_contract.py); yields
    the client and the raw patient bundles by the server id of their Patient."""
    # no audit trail: its AuditEvents name the patients (R4 puts them in the Patient
    # compartment), and these expectations are the clinical records
    c, close = open_backend(request.param, parts, tmp_path_factory.mktemp("everything"))
    try:
        raw: dict[str, dict[str, Any]] = {}
        shared: dict[tuple[str, str], dict[str, Any]] = {}
        for path in ordered(SAMPLE):
            bundle = read_bundle(path)
            r = c.post("/fhir", content=orjson.dumps(bundle),
                       headers={"Content-Type": "application/fhir+json"})  # fmt: skip
            assert r.status_code == 200, r.text[:500]
            if path.name.startswith("0-"):
                for e in bundle["entry"]:
                    for ident in e["resource"].get("identifier", []):
                        key = (e["resource"]["resourceType"], f"{ident['system']}|{ident['value']}")
                        shared[key] = e["resource"]
                continue
            (patient_entry,) = [e for e in r.json()["entry"]
                                if e["response"]["location"].startswith("Patient/")]  # fmt: skip
            raw[patient_entry["response"]["location"].split("/")[1]] = bundle
        yield c, raw, shared
    finally:
        close()


def everything(c: TestClient, url: str, **params: str) -> list[dict[str, Any]]:
    """Every entry of the operation's answer, following next links."""
    entries: list[dict[str, Any]] = []
    r = c.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["type"] == "searchset"
        entries += body.get("entry", [])
        nxt = [lk["url"] for lk in body["link"] if lk["relation"] == "next"]
        if not nxt:
            return entries
        r = c.get(nxt[0])


def referenced_shared(bundle: dict[str, Any]) -> set[tuple[str, str]]:
    """The conditional references of a raw bundle: (type, system|value) of shared resources."""
    out = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and "?identifier=" in ref:
                rtype, _, ident = ref.partition("?identifier=")
                out.add((rtype, ident))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bundle)
    return out


def test_everything_is_the_patients_bundle_and_what_it_refers_to(synthea: Any) -> None:
    c, raw, shared = synthea
    assert len(raw) == 3
    for pid, bundle in raw.items():
        entries = everything(c, f"/fhir/Patient/{pid}/$everything")
        assert entries[0]["resource"] == c.get(f"/fhir/Patient/{pid}").json()
        matches = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
        expected = Counter(fingerprint(e["resource"]) for e in bundle["entry"])
        assert Counter(fingerprint(r) for r in matches) == expected
        included = [e["resource"] for e in entries if e["search"]["mode"] == "include"]
        wanted = {fingerprint(shared[key]) for key in referenced_shared(bundle)}
        assert Counter(fingerprint(r) for r in included) == Counter(wanted)
        # the shared resources are whole (read them) and each appears once
        for e in entries:
            if e["search"]["mode"] == "include":
                assert e["fullUrl"].endswith(f"{e['resource']['resourceType']}/"
                                             f"{e['resource']['id']}")  # fmt: skip


def test_pages_cover_the_record_once(synthea: Any) -> None:
    c, raw, _ = synthea
    pid = next(iter(raw))
    first = c.get(f"/fhir/Patient/{pid}/$everything", params={"_count": "40"}).json()
    assert first["total"] == len(raw[pid]["entry"])
    assert first["entry"][0]["resource"]["resourceType"] == "Patient"
    assert sum(e["search"]["mode"] == "match" for e in first["entry"]) == 40
    paged = everything(c, f"/fhir/Patient/{pid}/$everything", _count="40")
    ids = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in paged
           if e["search"]["mode"] == "match"]  # fmt: skip
    assert len(ids) == len(set(ids)) == len(raw[pid]["entry"])


#: the care date of each type (the element the R4 search parameter the server uses for it
#: reads: `date` = clinical-date for Observation, Encounter, ...; Condition onset-date, Claim
#: and ExplanationOfBenefit created, MedicationRequest authoredon, DocumentReference date)
CARE_ELEMENT = {
    "Observation": "effective", "DiagnosticReport": "effective", "Encounter": "period",
    "Immunization": "occurrence", "Procedure": "performed", "CareTeam": "period",
    "CarePlan": "period", "DocumentReference": "date", "Condition": "onset",
    "Claim": "created", "ExplanationOfBenefit": "created", "MedicationRequest": "authoredOn",
}  # fmt: skip


def _instant(text: str, end: bool) -> datetime:
    """A dateTime as an aware UTC instant (the start, or the end of its precision; the
    Synthea values are full dateTimes with offsets, or dates)."""
    if len(text) == 10:
        text += "T23:59:59.999999+00:00" if end else "T00:00:00+00:00"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def care_range(resource: dict[str, Any]) -> tuple[datetime, datetime] | None:
    element = CARE_ELEMENT.get(resource["resourceType"])
    if element is None:
        return None
    for key, value in resource.items():
        if key == element or (key.startswith(element) and key[len(element) :][:1].isupper()):
            if isinstance(value, str):
                return _instant(value, False), _instant(value, True)
            if isinstance(value, dict) and ("start" in value or "end" in value):
                low = _instant(value["start"], False) if "start" in value else datetime.min
                high = _instant(value["end"], True) if "end" in value else datetime.max
                return low.replace(tzinfo=UTC), high.replace(tzinfo=UTC)
    return None


def test_start_and_end_select_care_dates(synthea: Any) -> None:
    c, raw, _ = synthea
    low = datetime(2015, 1, 1, tzinfo=UTC)
    high = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for pid, bundle in raw.items():
        expected = Counter()
        for e in bundle["entry"]:
            span = care_range(e["resource"])
            # kept when its care date overlaps the window, or when it has none
            if span is None or (span[0] <= high and span[1] >= low):
                expected[fingerprint(e["resource"])] += 1
        entries = everything(c, f"/fhir/Patient/{pid}/$everything",
                             start="2015-01-01", end="2016-12-31")  # fmt: skip
        got = Counter(fingerprint(e["resource"]) for e in entries if e["search"]["mode"] == "match")
        assert got == expected
        assert sum(expected.values()) < len(bundle["entry"])  # the window did leave some out


def test_type_and_since(synthea: Any) -> None:
    c, raw, _ = synthea
    pid, bundle = next(iter(raw.items()))
    entries = everything(c, f"/fhir/Patient/{pid}/$everything", _type="Patient,Encounter")
    kinds = Counter(e["resource"]["resourceType"] for e in entries)
    raw_kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == Counter({"Patient": 1, "Encounter": raw_kinds["Encounter"]})
    # _since: only what changed after the instant
    # _since: only what changed after the instant (the first Encounter is changed; the
    # Encounter test below uses the last one)
    first = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Encounter")
    mark = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    changed = {**first, "status": "entered-in-error"}
    changed.pop("meta")
    assert c.put(f"/fhir/Encounter/{first['id']}", json=changed).status_code == 200
    since = everything(c, f"/fhir/Patient/{pid}/$everything", _since=mark)
    assert [e["resource"]["id"] for e in since if e["search"]["mode"] == "match"] == [first["id"]]


def test_encounter_everything_is_the_encounter_compartment(synthea: Any) -> None:
    """R4 CompartmentDefinition encounter: the Encounter and what names it in `encounter`
    (Observation.encounter, Claim.item.encounter, ...) or `context`; counted in the raw
    bundle as the resources that refer to the Encounter's urn:uuid anywhere an encounter is
    named (Claim names it in item.encounter, EOB too)."""
    c, raw, _ = synthea
    pid, bundle = next(iter(raw.items()))
    encounter = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"][-1]
    urn = encounter["fullUrl"]

    def names_it(node: Any, key: str = "") -> bool:
        if isinstance(node, dict):
            if key in ("encounter", "context") and node.get("reference") == urn:
                return True
            return any(names_it(v, k) for k, v in node.items())
        if isinstance(node, list):
            return any(names_it(v, key) for v in node)
        return False

    expected = Counter(fingerprint(e["resource"]) for e in bundle["entry"]
                       if e is encounter or names_it(e["resource"]))  # fmt: skip
    stored = c.get("/fhir/Encounter", params={"patient": pid, "_count": "100"}).json()
    eid = next(e["resource"]["id"] for e in stored["entry"]
               if fingerprint(e["resource"]) == fingerprint(encounter["resource"]))  # fmt: skip
    entries = everything(c, f"/fhir/Encounter/{eid}/$everything")
    assert entries[0]["resource"]["id"] == eid
    got = Counter(fingerprint(e["resource"]) for e in entries if e["search"]["mode"] == "match")
    assert got == expected and len(expected) > 3
    included = {e["resource"]["resourceType"] for e in entries if e["search"]["mode"] == "include"}
    assert "Patient" in included and "Practitioner" in included


# --- linked records, Binary attachments, access, bad input ---------------------------------------


def _p(pid: str, org: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid,
            "managingOrganization": {"reference": f"Organization/{org}"}, **more}  # fmt: skip


def _obs(oid: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "bp"},
            "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip


LINKED = [
    {"resourceType": "Organization", "id": "ha", "name": "HA"},
    {"resourceType": "Organization", "id": "hb", "name": "HB"},
    {"resourceType": "PractitionerRole", "id": "dra",
     "organization": {"reference": "Organization/ha"}},
    _p("pa", "ha", link=[{"other": {"reference": "Patient/pb"}, "type": "seealso"}]),
    _p("pb", "hb", link=[{"other": {"reference": "Patient/pa"}, "type": "seealso"}]),
    _p("pc", "ha", link=[{"other": {"reference": "Patient/pb"}, "type": "replaced-by"}]),
    _p("stranger", "ha"),
    _obs("oa", "pa"), _obs("ob", "pb"), _obs("oc", "pc"), _obs("os", "stranger"),
    {"resourceType": "Binary", "id": "scan", "contentType": "text/plain", "data": "aGk="},
    {"resourceType": "Binary", "id": "unrelated", "contentType": "text/plain", "data": "aGk="},
    {"resourceType": "DocumentReference", "id": "doc", "status": "current",
     "subject": {"reference": "Patient/pa"},
     "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/scan"}}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    # no audit trail: its AuditEvents name the patients (R4 puts them in the Patient
    # compartment), and these expectations are the clinical records
    services = make_services(tmp_path_factory.mktemp("linked") / "fhir.db", parts, audit=False)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in LINKED:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, "app", [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "dra", PASSWORD, "PractitionerRole/dra")
        admin.add_user(store, "pat-a", PASSWORD, "Patient/pa")
        yield c


def got(c: TestClient, pid: str, mode: str = "match") -> set[str]:
    entries = everything(c, f"/fhir/Patient/{pid}/$everything")
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries
            if e["search"]["mode"] == mode}  # fmt: skip


def test_everything_spans_the_linked_records(linked: TestClient) -> None:
    # pa - pb (seealso both ways) - pc (merged into pb): one person's three records
    person = {"Patient/pa", "Patient/pb", "Patient/pc", "Observation/oa", "Observation/ob",
              "Observation/oc", "DocumentReference/doc"}  # fmt: skip
    for pid in ("pa", "pb", "pc"):
        assert got(linked, pid) == person
    assert got(linked, "stranger") == {"Patient/stranger", "Observation/os"}


def test_binary_attachments_are_included(linked: TestClient) -> None:
    included = got(linked, "pa", "include")
    assert "Binary/scan" in included and "Binary/unrelated" not in included


def test_links_never_widen_access(linked: TestClient) -> None:
    """A user of hospital A sees A's records of the person (pa, pc), not B's (pb); a patient's
    own token sees their own compartment only."""

    def bearer(user: str, scope: str) -> TestClient:
        token = code_flow(linked, "app", scope, user)
        assert token.status_code == 200, token.text
        client = TestClient(linked.app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return client

    a = bearer("dra", "openid fhirUser user/*.rs")
    assert got(a, "pa") == {"Patient/pa", "Patient/pc", "Observation/oa", "Observation/oc",
                            "DocumentReference/doc"}  # fmt: skip
    assert a.get("/fhir/Patient/pb/$everything").status_code == 404
    me = bearer("pat-a", "openid fhirUser patient/*.rs")
    assert got(me, "pa") == {"Patient/pa", "Observation/oa", "DocumentReference/doc"}
    assert me.get("/fhir/Patient/pc/$everything").status_code == 404


@pytest.mark.parametrize(
    ("url", "status", "expression"),
    [
        ("/fhir/Patient/nobody/$everything", 404, None),
        ("/fhir/Patient/pa/$everything?_type=Observation,Nonsense", 400, "_type"),
        ("/fhir/Patient/pa/$everything?_count=0", 400, "_count"),
        ("/fhir/Patient/pa/$everything?start=2015-13", 400, "start"),
        ("/fhir/Patient/pa/$everything?colour=blue", 400, "colour"),
        ("/fhir/Patient/pa/$everything?_page=garbage", 400, "_page"),
        ("/fhir/Encounter/pa/$everything?start=2015", 400, "start"),
    ],
)
def test_bad_input(linked: TestClient, url: str, status: int, expression: str | None) -> None:
    r = linked.get(url)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    if expression:
        assert issue["expression"] == [expression]


def test_a_deleted_patient_is_gone_and_both_operations_are_listed(linked: TestClient) -> None:
    assert linked.put("/fhir/Patient/gone", json=_p("gone", "ha")).status_code == 201
    assert linked.delete("/fhir/Patient/gone").status_code == 200
    assert linked.get("/fhir/Patient/gone/$everything").status_code == 410
    assert linked.post("/fhir/Patient/pa/$everything", json={
        "resourceType": "Parameters", "parameter": [{"name": "_type", "valueCode": "Patient"}],
    }).json()["total"] == 3  # fmt: skip
    statement = linked.get("/fhir/metadata").json()
    ops = {(r["type"], o["definition"]) for r in statement["rest"][0]["resource"]
           for o in r.get("operation", []) if o["name"] == "everything"}  # fmt: skip
    assert ops == {
        ("Patient", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
        ("Encounter", "http://hl7.org/fhir/OperationDefinition/Encounter-everything"),
    }
