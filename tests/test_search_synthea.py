"""Search over realistic data: the vendored Synthea sample, loaded once through POST /fhir.

Expected results come from plain Python over the bundle files (an oracle that shares no code
with the server), never from the server itself.
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts

SAMPLE = Path(__file__).parent / "data" / "synthea"


def _bundles() -> list[dict[str, Any]]:
    files = sorted(SAMPLE.glob("*.json.bz2"), key=lambda p: (not p.name.startswith("0-"), p.name))
    return [json.loads(bz2.decompress(f.read_bytes())) for f in files]


BUNDLES = _bundles()
#: every resource of the patient bundles, keyed by its urn:uuid fullUrl
BY_URN = {e["fullUrl"]: e["resource"] for b in BUNDLES[2:] for e in b["entry"]}
RESOURCES = [e["resource"] for b in BUNDLES for e in b["entry"]]


def of_type(rtype: str) -> list[dict[str, Any]]:
    return [r for r in RESOURCES if r["resourceType"] == rtype]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    services = make_services(tmp_path_factory.mktemp("synthea") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services)) as client:
        for bundle in BUNDLES:
            r = client.post("/fhir", json=bundle)
            assert r.status_code == 200, r.text[:500]
        yield client


def search_all(client: TestClient, url: str) -> tuple[list[dict[str, Any]], list[dict]]:
    """Follow `next` links; returns (matches, includes) over all pages."""
    matches: list[dict[str, Any]] = []
    includes: list[dict[str, Any]] = []
    while url:
        page = client.get(url).json()
        assert page["resourceType"] == "Bundle", page
        for e in page.get("entry", []):
            (matches if e["search"]["mode"] == "match" else includes).append(e["resource"])
        nxt = [lk["url"] for lk in page["link"] if lk["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else ""
    return matches, includes


def patient_id(client: TestClient, family: str) -> str:
    bundle = client.get(f"/fhir/Patient?family:exact={family}").json()
    assert bundle["total"] == 1
    return str(bundle["entry"][0]["resource"]["id"])


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_token_counts_match_the_data(api: TestClient) -> None:
    for system, code in [("http://loinc.org", "8302-2"), ("http://loinc.org", "29463-7")]:
        expected = sum(
            1
            for o in of_type("Observation")
            if any(
                c.get("system") == system and c.get("code") == code
                for c in o["code"].get("coding", [])
            )
        )
        assert expected > 0
        got = api.get(f"/fhir/Observation?code={system}|{code}&_summary=count").json()["total"]
        assert got == expected, code


def test_date_prefixes_on_encounter_periods(api: TestClient) -> None:
    cutoff = instant("2015-01-01T00:00:00+00:00")
    encounters = of_type("Encounter")
    expected_ge = sum(1 for e in encounters if instant(e["period"]["end"]) >= cutoff)
    expected_lt = sum(1 for e in encounters if instant(e["period"]["start"]) < cutoff)
    assert api.get("/fhir/Encounter?date=ge2015-01-01T00:00:00Z").json()["total"] == expected_ge
    assert api.get("/fhir/Encounter?date=lt2015-01-01T00:00:00Z").json()["total"] == expected_lt
    in_2014 = sum(
        1
        for e in encounters
        if instant(e["period"]["start"]) >= instant("2014-01-01T00:00:00+00:00")
        and instant(e["period"]["end"]) <= instant("2014-12-31T23:59:59.999999+00:00")
    )
    assert api.get("/fhir/Encounter?date=2014").json()["total"] == in_2014


def test_reference_and_chain_find_a_patients_observations(api: TestClient) -> None:
    patient = of_type("Patient")[0]
    family = patient["name"][0]["family"]
    pid = patient_id(api, family)
    urn = next(k for k, v in BY_URN.items() if v is patient)
    expected = sum(1 for o in of_type("Observation") if o["subject"]["reference"] == urn)
    assert api.get(f"/fhir/Observation?subject=Patient/{pid}").json()["total"] == expected
    chained = api.get(f"/fhir/Observation?subject:Patient.family={family}").json()["total"]
    assert chained == expected
    compartment = api.get(f"/fhir/Patient/{pid}/Observation?_summary=count").json()["total"]
    assert compartment == expected


def test_conditional_references_chain_to_the_practitioner(api: TestClient) -> None:
    # Encounter.participant.individual was `Practitioner?identifier=...|npi`: chain on it
    npi_ref = of_type("Encounter")[0]["participant"][0]["individual"]["reference"]
    npi = npi_ref.split("|")[1]
    expected = sum(
        1
        for e in of_type("Encounter")
        if any(p["individual"]["reference"] == npi_ref for p in e["participant"])
    )
    url = f"/fhir/Encounter?participant:Practitioner.identifier={npi}&_summary=count"
    assert api.get(url).json()["total"] == expected


def test_has_finds_patients_by_their_conditions(api: TestClient) -> None:
    condition = of_type("Condition")[0]
    coding = condition["code"]["coding"][0]
    owners = {
        c["subject"]["reference"]
        for c in of_type("Condition")
        if any(x["code"] == coding["code"] for x in c["code"]["coding"])
    }
    url = f"/fhir/Patient?_has:Condition:subject:code={coding['system']}|{coding['code']}"
    assert api.get(url).json()["total"] == len(owners)


def test_include_and_revinclude_bring_the_related_resources(api: TestClient) -> None:
    pid = patient_id(api, of_type("Patient")[0]["name"][0]["family"])
    matches, includes = search_all(
        api, f"/fhir/Encounter?subject=Patient/{pid}&_include=Encounter:service-provider&_count=5"
    )
    providers = {m["serviceProvider"]["reference"] for m in matches}
    assert {f"Organization/{i['id']}" for i in includes} == providers
    matches, includes = search_all(api, f"/fhir/Patient?_id={pid}&_revinclude=Encounter:subject")
    assert [m["id"] for m in matches] == [pid]
    assert {i["resourceType"] for i in includes} == {"Encounter"}
    assert len(includes) == api.get(f"/fhir/Encounter?subject={pid}").json()["total"]


def test_sort_order_and_paging_without_gaps_or_repeats(api: TestClient) -> None:
    matches, _ = search_all(api, "/fhir/Observation?_sort=-date,_id&_count=7")
    assert len(matches) == len(of_type("Observation"))
    assert len({m["id"] for m in matches}) == len(matches)
    dates = [instant(m["effectiveDateTime"]) for m in matches]
    assert dates == sorted(dates, reverse=True)


def test_string_search_on_organization_names(api: TestClient) -> None:
    orgs = of_type("Organization")
    prefix = orgs[0]["name"][:4]
    expected = sum(1 for o in orgs if o["name"].lower().startswith(prefix.lower()))
    got = api.get(f"/fhir/Organization?name={prefix.lower()}&_summary=count").json()["total"]
    assert got == expected
