"""The feature seam of the write path (interactions/hooks.py): hooks see every write, what they
add or change is validated like any resource, and after-commit hooks see only what committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.errors import error
from fhir_server.interactions.hooks import Change, Effect
from fhir_server.services import Parts
from fhir_server.storage.sqlite import Stored


@pytest.fixture
def hooked(tmp_path: Path, parts: Parts) -> Iterator[tuple[TestClient, list[Any]]]:
    """An app with test hooks on Basic: a `code.text` of 'refuse' is refused, 'note' adds a
    Provenance, 'bad-note' adds an invalid one, 'rename' replaces the resource."""
    services = make_services(tmp_path / "hooks.db", parts)
    seen: list[Any] = []

    def on_write(change: Change) -> Effect | None:
        seen.append((change.method, change.rid, change.before is not None))
        text = ((change.resource or {}).get("code") or {}).get("text")
        if text == "refuse":
            raise error(409, "business-rule", "refused by the test hook", "Basic.code")
        if text in ("note", "bad-note"):
            target = {"reference": f"Basic/{change.rid}"}
            note: dict[str, Any] = {"resourceType": "Provenance", "target": [target],
                                    "recorded": "2026-01-01T00:00:00Z",
                                    "agent": [{"who": {"display": "hook"}}]}  # fmt: skip
            if text == "bad-note":
                note["recorded"] = "yesterday"
            return Effect(extra=[note])
        if text == "rename":
            return Effect(resource={**(change.resource or {}), "code": {"text": "renamed"}})
        if text == "rename-badly":
            return Effect(resource={**(change.resource or {}), "created": "soon"})
        return None

    def after_commit(written: list[Stored]) -> None:
        seen.append(("commit", [f"{s.type}/{s.id}" for s in written]))

    services.hooks.add_on_write(on_write, ("Basic",), lambda r: True)
    services.hooks.after_commit.append(after_commit)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        seen.clear()  # start-up wrote the guide
        yield c, seen


def basic(text: str, rid: str = "b1") -> dict[str, Any]:
    return {"resourceType": "Basic", "id": rid, "code": {"text": text}}


def test_a_hook_refuses_a_write_and_nothing_is_stored(hooked: Any) -> None:
    client, seen = hooked
    answer = client.put("/fhir/Basic/b1", json=basic("refuse"))
    assert answer.status_code == 409
    assert answer.json()["issue"][0]["expression"] == ["Basic.code"]
    assert client.get("/fhir/Basic/b1").status_code == 404
    assert not [s for s in seen if s[0] == "commit"]  # a rolled-back write is not reported


def test_what_a_hook_adds_is_stored_in_the_same_transaction(hooked: Any) -> None:
    client, seen = hooked
    assert client.put("/fhir/Basic/b1", json=basic("note")).status_code == 201
    found = client.get("/fhir/Provenance?target=Basic/b1").json()
    assert found["total"] == 1
    assert seen[-1][0] == "commit" and sorted(seen[-1][1])[0] == "Basic/b1"
    assert any(w.startswith("Provenance/") for w in seen[-1][1])


def test_what_a_hook_adds_is_validated_and_a_bad_one_fails_the_write(hooked: Any) -> None:
    client, _ = hooked
    answer = client.put("/fhir/Basic/b1", json=basic("bad-note"))
    assert answer.status_code == 400
    assert "Provenance.recorded" in str(answer.json())
    assert client.get("/fhir/Basic/b1").status_code == 404
    assert client.get("/fhir/Provenance").json()["total"] == 0


def test_a_resource_a_hook_replaces_is_validated_again(hooked: Any) -> None:
    client, _ = hooked
    assert client.put("/fhir/Basic/b1", json=basic("rename")).json()["code"]["text"] == "renamed"
    answer = client.put("/fhir/Basic/b2", json=basic("rename-badly", "b2"))
    assert answer.status_code == 400 and "Basic.created" in str(answer.json())
    assert client.get("/fhir/Basic/b2").status_code == 404


def test_hooks_see_every_kind_of_write(hooked: Any) -> None:
    client, seen = hooked
    client.put("/fhir/Basic/b1", json=basic("plain"))
    client.patch("/fhir/Basic/b1", json=[{"op": "replace", "path": "/code/text", "value": "x"}],
                 headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    client.post("/fhir/Basic", json={"resourceType": "Basic", "code": {"text": "new"}})
    client.delete("/fhir/Basic/b1")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": basic("in-bundle", "b3"), "request": {"method": "PUT", "url": "Basic/b3"}}]}
    assert client.post("/fhir", json=bundle).status_code == 200
    writes = [s for s in seen if s[0] != "commit"]
    assert [(m, before) for m, _, before in writes] == [
        ("PUT", False), ("PUT", True), ("POST", False), ("DELETE", True), ("PUT", False)
    ]
