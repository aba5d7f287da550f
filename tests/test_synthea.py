"""Loading Synthea bundles: the batch bundles of organizations/locations and practitioners with
`ifNoneExist`, then patient transactions full of `urn:uuid:` and conditional references.

The vendored sample (tests/data/synthea) runs through the HTTP API; the whole data set
(../shared/synthea, 122 patients) runs through `fhir_server.loader.load` with --run-slow.
"""

from __future__ import annotations

import bz2
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.loader import load
from fhir_server.services import Parts

SAMPLE = Path(__file__).parent / "data" / "synthea"
FULL = Path(__file__).parent.parent.parent / "shared" / "synthea"
#: entries in the 122 files, counted from them (their README says 92,299, which they do not hold)
FULL_RESOURCES = 92_114


def ordered(folder: Path) -> list[Path]:
    """Hospital and practitioner bundles (named 0-...) before the patients that refer to them."""
    files = sorted(folder.glob("*.json.bz2"))
    return [f for f in files if f.name.startswith("0-")] + [
        f for f in files if not f.name.startswith("0-")
    ]


def read_bundle(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bz2.decompress(path.read_bytes()))
    return data


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> Iterator[tuple[TestClient, Counter[str]]]:
    """Every sample bundle POSTed to the base, once for the module (the tests read it; the
    reload, last, changes nothing); yields the client and the input type counts."""
    services = make_services(tmp_path_factory.mktemp("synthea") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c, _load(c)


def _load(client: TestClient) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in ordered(SAMPLE):
        bundle = read_bundle(path)
        counts.update(e["resource"]["resourceType"] for e in bundle["entry"])
        r = client.post("/fhir", content=json.dumps(bundle),
                        headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, (path.name, r.text[:2000])
        body = r.json()
        assert body["type"] == f"{bundle['type']}-response"
        assert len(body["entry"]) == len(bundle["entry"])
        failed = [(i, e["response"]) for i, e in enumerate(body["entry"])
                  if e["response"]["status"][:1] != "2"]
        assert not failed, (path.name, failed[:3])
    return counts


def test_synthea_sample_loads_with_matching_counts(
    loaded: tuple[TestClient, Counter[str]],
) -> None:
    client, counts = loaded
    assert len(ordered(SAMPLE)) == 5 and counts["Patient"] == 3
    stored = {}
    for rtype in counts:
        r = client.get(f"/fhir/{rtype}?_summary=count")
        assert r.status_code == 200, r.text
        stored[rtype] = r.json()["total"]
    assert stored == dict(counts)


def test_synthea_sample_conditional_references_resolved(
    loaded: tuple[TestClient, Counter[str]],
) -> None:
    client, _ = loaded
    r = client.get("/fhir/Encounter?_count=1000")
    assert r.status_code == 200, r.text
    encounters = [e["resource"] for e in r.json()["entry"]]
    assert len(encounters) == 20
    targets: set[str] = set()
    for enc in encounters:
        provider = enc["serviceProvider"]["reference"]
        assert provider.startswith("Organization/") and "?" not in provider, provider
        targets.add(provider)
        for part in enc["participant"]:
            individual = part["individual"]["reference"]
            assert individual.startswith("Practitioner/") and "?" not in individual, individual
            targets.add(individual)
        for loc in enc.get("location", []):
            ref = loc["location"]["reference"]
            assert ref.startswith("Location/") and "?" not in ref, ref
            targets.add(ref)
        subject = enc["subject"]["reference"]
        assert subject.startswith("Patient/") and "urn:" not in subject, subject
        targets.add(subject)
    for ref in sorted(targets):
        assert client.get(f"/fhir/{ref}").status_code == 200, ref


def test_synthea_sample_reload_creates_no_duplicate_providers(
    loaded: tuple[TestClient, Counter[str]],
) -> None:
    """The provider batches are conditional creates: a second load matches and creates nothing."""
    client, counts = loaded
    for path in ordered(SAMPLE)[:2]:
        bundle = read_bundle(path)
        r = client.post("/fhir", json=bundle)
        assert r.status_code == 200, r.text
        statuses = Counter(e["response"]["status"].split()[0] for e in r.json()["entry"])
        conditional = sum(1 for e in bundle["entry"] if e["request"].get("ifNoneExist"))
        assert statuses["200"] == conditional
    for rtype in ("Organization", "Location", "Practitioner"):
        r = client.get(f"/fhir/{rtype}?_summary=count")
        assert r.json()["total"] == counts[rtype]


@pytest.mark.slow
def test_synthea_full_load(tmp_path: Path, parts: Parts) -> None:
    if not FULL.is_dir():
        pytest.skip(f"{FULL} not present")
    services = make_services(tmp_path / "synthea.db", parts)
    files = ordered(FULL)
    assert sum(len(read_bundle(p)["entry"]) for p in files) == FULL_RESOURCES
    done = failed = 0
    start = time.perf_counter()
    for path in files:
        d, f = load(services, path, "http://localhost/fhir")
        done, failed = done + d, failed + f
    elapsed = time.perf_counter() - start
    print(f"\nSynthea: {len(files)} files, {done} resources, {failed} failures in {elapsed:.1f} s "
          f"({done / elapsed:.0f} resources/s)")
    assert failed == 0
    assert done == FULL_RESOURCES
