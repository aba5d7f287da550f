"""Races the spec leaves to the server: conditional create and version conflicts under load."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.156.112604.1", "value": "RACE-1"}],
    "name": [{"family": "李", "given": ["四"]}],
}


def test_concurrent_conditional_creates_leave_exactly_one(live_server: str) -> None:
    def attempt(_: int) -> int:
        with httpx.Client(timeout=30) as c:
            r = c.post(
                f"{live_server}/Patient",
                json=PATIENT,
                headers={"If-None-Exist": "identifier=urn:oid:1.2.156.112604.1|RACE-1"},
            )
            return r.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert sorted(statuses) == [200] * 19 + [201]
    total = httpx.get(f"{live_server}/Patient?identifier=RACE-1&_summary=count").json()["total"]
    assert total == 1


def test_concurrent_if_match_updates_exactly_one_wins(live_server: str) -> None:
    r = httpx.put(f"{live_server}/Patient/race", json={**PATIENT, "id": "race"})
    assert r.status_code == 201

    def attempt(n: int) -> int:
        body = {**PATIENT, "id": "race", "gender": "male" if n % 2 else "female", "active": n > 4}
        with httpx.Client(timeout=30) as c:
            return c.put(
                f"{live_server}/Patient/race", json=body, headers={"If-Match": 'W/"1"'}
            ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(attempt, range(10)))
    assert sorted(statuses) == [200] + [412] * 9
    assert httpx.get(f"{live_server}/Patient/race").json()["meta"]["versionId"] == "2"
