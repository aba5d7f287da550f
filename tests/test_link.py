"""Linking one person's records (issue 15): Patient/$link and $unlink change both records in
one transaction, with the R4 link types (valueset-link-type.html): seealso both ways between
hospitals' records, replaced-by on the merged record and replaces on the surviving one (as an
HL7 v2 A40 merge); searches follow links with `link=` and `_include=Patient:link`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, REDIRECT, auth_of, code_flow

from fhir_server.app import build_app
from fhir_server.auth import admin
from fhir_server.services import Parts


def _patient(pid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "张", "given": ["三"]}],
            "managingOrganization": {"reference": f"Organization/{org}"}}  # fmt: skip


DATA = [
    {"resourceType": "Organization", "id": "ha", "name": "HA"},
    {"resourceType": "Organization", "id": "hb", "name": "HB"},
    {"resourceType": "PractitionerRole", "id": "drb",
     "organization": {"reference": "Organization/hb"}},
    _patient("a", "ha"), _patient("b", "hb"), _patient("c", "ha"), _patient("d", "ha"),
]  # fmt: skip


@pytest.fixture
def server(tmp_path: Any, parts: Parts) -> Iterator[TestClient]:
    services = make_services(tmp_path / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in DATA:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_client(store, "app", [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "drb", PASSWORD, "PractitionerRole/drb")
        yield c


def op(c: TestClient, name: str, source: str, target: str, kind: str | None = None) -> Any:
    parameter: list[dict[str, Any]] = [
        {"name": "source", "valueReference": {"reference": f"Patient/{source}"}},
        {"name": "target", "valueReference": {"reference": f"Patient/{target}"}},
    ]
    if kind:
        parameter.append({"name": "type", "valueCode": kind})
    return c.post(f"/fhir/Patient/${name}", json={"resourceType": "Parameters",
                                                   "parameter": parameter})  # fmt: skip


def links(c: TestClient, pid: str) -> list[tuple[str, str]]:
    body = c.get(f"/fhir/Patient/{pid}").json()
    return [(x["other"]["reference"], x["type"]) for x in body.get("link", [])]


def ids(r: Any, mode: str = "match") -> set[str]:
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == mode}


def test_seealso_links_both_records_and_searches_follow_them(server: TestClient) -> None:
    r = op(server, "link", "a", "b")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "collection"
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a", "b"]
    assert links(server, "a") == [("Patient/b", "seealso")]
    assert links(server, "b") == [("Patient/a", "seealso")]
    assert server.get("/fhir/Patient/a").json()["meta"]["versionId"] == "2"
    # R4 Patient search parameter `link` (Patient.link.other)
    assert ids(server.get("/fhir/Patient", params={"link": "Patient/a"})) == {"b"}
    found = server.get("/fhir/Patient", params={"_id": "a", "_include": "Patient:link"})
    assert ids(found) == {"a"} and ids(found, "include") == {"b"}
    # linking again changes nothing: one link per pair
    assert op(server, "link", "a", "b").status_code == 200
    assert links(server, "a") == [("Patient/b", "seealso")]


def test_include_iterate_follows_a_chain_of_links(server: TestClient) -> None:
    assert op(server, "link", "a", "c").status_code == 200
    assert op(server, "link", "c", "d", "refer").status_code == 200
    assert links(server, "c") == [("Patient/a", "seealso"), ("Patient/d", "refer")]
    found = server.get("/fhir/Patient", params={"_id": "a", "_include:iterate": "Patient:link"})
    assert ids(found, "include") == {"c", "d"}


def test_replaced_by_merges_the_source_into_the_target(server: TestClient) -> None:
    r = op(server, "link", "c", "a", "replaced-by")
    assert r.status_code == 200, r.text
    assert links(server, "c") == [("Patient/a", "replaced-by")]
    assert links(server, "a") == [("Patient/c", "replaces")]
    assert server.get("/fhir/Patient/c").json()["active"] is False
    # a merged record takes no further links; its replacement does
    refused = op(server, "link", "c", "d")
    assert refused.status_code == 409, refused.text
    assert "merged into Patient/a" in refused.json()["issue"][0]["diagnostics"]
    assert op(server, "link", "d", "c").status_code == 409
    assert op(server, "link", "d", "a").status_code == 200
    # linking the pair otherwise replaces the merge links (one relationship per pair)
    assert op(server, "link", "c", "a", "seealso").status_code == 200
    assert links(server, "c") == [("Patient/a", "seealso")]


def test_unlink_removes_the_links_from_both(server: TestClient) -> None:
    assert op(server, "link", "a", "b").status_code == 200
    assert op(server, "link", "a", "c").status_code == 200
    r = op(server, "unlink", "b", "a")
    assert r.status_code == 200, r.text
    assert links(server, "a") == [("Patient/c", "seealso")]
    assert links(server, "b") == []
    assert "link" not in server.get("/fhir/Patient/b").json()


@pytest.mark.parametrize(
    ("source", "target", "kind", "status", "expression"),
    [
        ("a", "a", None, 400, "target"),
        ("a", "b", "replaces", 400, "type"),  # only the merged side is named
        ("a", "nobody", None, 404, None),
        ("a", "Observation/x", None, 400, "target"),
    ],
)
def test_bad_links_are_refused_and_change_nothing(
    server: TestClient, source: str, target: str, kind: str | None, status: int,
    expression: str | None,
) -> None:
    parameter = [{"name": "source", "valueReference": {"reference": f"Patient/{source}"}},
                 {"name": "target", "valueReference": {"reference": (
                     target if "/" in target else f"Patient/{target}")}}]  # fmt: skip
    if kind:
        parameter.append({"name": "type", "valueCode": kind})
    r = server.post("/fhir/Patient/$link", json={"resourceType": "Parameters",
                                                  "parameter": parameter})  # fmt: skip
    assert r.status_code == status, r.text
    if expression:
        assert r.json()["issue"][0]["expression"] == [expression]
    assert links(server, "a") == []
    assert server.get("/fhir/Patient/a").json()["meta"]["versionId"] == "1"


def test_a_user_links_only_records_they_may_change(server: TestClient) -> None:
    """A practitioner of hospital B cannot reach A's patient (404), nor does a link give B
    access to A's record: links never widen access (README, Security)."""
    token = code_flow(server, "app", "openid fhirUser user/Patient.cruds", "drb")
    assert token.status_code == 200, token.text
    b = TestClient(server.app, raise_server_exceptions=False)
    b.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    assert op(b, "link", "b", "a").status_code == 404
    assert links(server, "b") == []
    assert op(server, "link", "a", "b").status_code == 200  # done by someone who may
    assert b.get("/fhir/Patient/a").status_code == 404
    found = b.get("/fhir/Patient", params={"_id": "b", "_include": "Patient:link"})
    assert ids(found) == {"b"} and ids(found, "include") == set()
