"""batch and transaction Bundles POSTed to the base (http://hl7.org/fhir/R4/http.html#transaction).

Everything goes through the HTTP API of the real app (the `client` fixture), and every check on
what was (not) stored is made by reading or searching afterwards.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

BASE = "http://testserver/fhir"
SYS = "http://example.org/ids"
LOCATION = re.compile(r"^(?:.*/)?([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/(\d+)$")


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


def post_bundle(client: TestClient, kind: str, entries: list[dict[str, Any]]) -> Any:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})


def status(item: dict[str, Any]) -> int:
    """`response.status` may carry a reason phrase ("201 Created"); the code comes first."""
    return int(item["response"]["status"].split()[0])


def created(item: dict[str, Any]) -> str:
    """'Type/id' from a response entry's location."""
    match = LOCATION.match(item["response"]["location"])
    assert match, item["response"]
    return f"{match[1]}/{match[2]}"


def count(client: TestClient, rtype: str, query: str = "") -> int:
    r = client.get(f"/fhir/{rtype}?_summary=count{'&' + query if query else ''}")
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def read(client: TestClient, ref: str) -> dict[str, Any]:
    r = client.get(f"/fhir/{ref}")
    assert r.status_code == 200, (ref, r.text)
    return r.json()  # type: ignore[no-any-return]


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def patient(ident: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient", **extra}
    if ident is not None:
        out["identifier"] = [{"system": SYS, "value": ident}]
    return out


def organization(ident: str, rid: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Organization",
        "name": ident,
        "identifier": [{"system": SYS, "value": ident}],
    }
    if rid is not None:
        out["id"] = rid
    return out


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
        **extra,
    }


def outcome_text(body: dict[str, Any]) -> str:
    assert body["resourceType"] == "OperationOutcome", body
    return " ".join(
        f"{i.get('diagnostics', '')} {' '.join(i.get('expression', []))}" for i in body["issue"]
    )


# --- transaction: references between entries -----------------------------------------------------


def test_transaction_rewrites_urn_uuid_references_including_forward_ones(
    client: TestClient,
) -> None:
    pat, prac, enc = (
        "urn:uuid:7d8e2a6c-0001-4a6e-9d1e-000000000001",
        "urn:uuid:7d8e2a6c-0002-4a6e-9d1e-000000000002",
        "urn:uuid:7d8e2a6c-0003-4a6e-9d1e-000000000003",
    )
    entries = [
        # refers to the Patient and Encounter listed *after* it
        entry(
            "POST",
            "Observation",
            observation(pat, encounter={"reference": enc}),
            "urn:uuid:7d8e2a6c-0004-4a6e-9d1e-000000000004",
        ),
        entry(
            "POST",
            "Encounter",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": pat},
                "participant": [{"individual": {"reference": prac}}],
            },
            enc,
        ),
        entry("POST", "Patient", patient("urn-1", generalPractitioner=[{"reference": prac}]), pat),
        entry("POST", "Practitioner", {"resourceType": "Practitioner", "active": True}, prac),
    ]
    r = post_bundle(client, "transaction", entries)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    assert len(body["entry"]) == len(entries)
    refs = []
    for sent, got in zip(entries, body["entry"], strict=True):
        assert status(got) == 201
        ref = created(got)
        assert ref.split("/")[0] == sent["request"]["url"], "response entries keep request order"
        assert got["response"]["location"].endswith(f"{ref}/_history/1")
        assert got["response"]["etag"] == 'W/"1"'
        refs.append(ref)
    obs_ref, enc_ref, pat_ref, prac_ref = refs
    assert len(set(refs)) == 4 and all("urn" not in r for r in refs)

    obs, encounter, patient_ = read(client, obs_ref), read(client, enc_ref), read(client, pat_ref)
    assert obs["subject"]["reference"] == pat_ref
    assert obs["encounter"]["reference"] == enc_ref
    assert encounter["subject"]["reference"] == pat_ref
    assert encounter["participant"][0]["individual"]["reference"] == prac_ref
    assert patient_["generalPractitioner"][0]["reference"] == prac_ref
    read(client, prac_ref)


def test_transaction_resolves_absolute_and_relative_fullurls(client: TestClient) -> None:
    """A PUT entry keeps its id; a POST entry with an absolute fullUrl gets a new id, and both
    the absolute reference and a relative one (resolved against the referring entry's fullUrl
    base, http://hl7.org/fhir/R4/references.html#bundle-references) must follow it."""
    other = "http://example.org/fhir"
    entries = [
        entry("PUT", "Patient/p1", patient("abs-1", id="p1"), f"{BASE}/Patient/p1"),
        entry("POST", "Patient", patient("abs-2"), f"{other}/Patient/ext1"),
        entry(
            "POST",
            "Observation",
            observation(f"{BASE}/Patient/p1"),
            "urn:uuid:5b0a4e0e-8d6f-4a55-9d8c-000000000001",
        ),
        entry(
            "POST",
            "Observation",
            observation("Patient/p1"),
            "urn:uuid:5b0a4e0e-8d6f-4a55-9d8c-000000000002",
        ),
        entry(
            "POST",
            "Observation",
            observation(f"{other}/Patient/ext1"),
            "urn:uuid:5b0a4e0e-8d6f-4a55-9d8c-000000000003",
        ),
        entry("POST", "Observation", observation("Patient/ext1"), f"{other}/Observation/o4"),
    ]
    r = post_bundle(client, "transaction", entries)
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    assert status(resp[0]) == 201 and created(resp[0]) == "Patient/p1"
    new_patient = created(resp[1])
    assert new_patient != "Patient/ext1"
    subjects = [read(client, created(e))["subject"]["reference"] for e in resp[2:]]
    assert subjects[0] in ("Patient/p1", f"{BASE}/Patient/p1")
    assert subjects[1] == "Patient/p1"
    assert subjects[2] == new_patient, "absolute fullUrl of a POST entry not rewritten"
    assert subjects[3] == new_patient, "relative reference to a POST entry not rewritten"
    read(client, new_patient)
    read(client, "Patient/p1")


def test_transaction_rewrites_fullurls_in_uri_elements_and_narrative(client: TestClient) -> None:
    """http.html#trules: 'servers SHALL replace all matching links in the bundle, whether they are
    found in the resource ids, resource references, elements of type uri, url, oid, uuid, and
    <a href="" & <img src="" in the narrative'."""
    pat = "urn:uuid:0c3a4b8e-1111-4c1d-8f00-000000000001"
    div = f'<div xmlns="http://www.w3.org/1999/xhtml">See <a href="{pat}">the patient</a></div>'
    entries = [
        entry("POST", "Patient", patient("narr-1"), pat),
        entry(
            "POST",
            "Observation",
            observation(
                pat,
                text={"status": "generated", "div": div},
                extension=[{"url": "http://example.org/ext/source", "valueUri": pat}],
            ),
            "urn:uuid:0c3a4b8e-1111-4c1d-8f00-000000000002",
        ),
    ]
    r = post_bundle(client, "transaction", entries)
    assert r.status_code == 200, r.text
    pat_ref = created(r.json()["entry"][0])
    obs = read(client, created(r.json()["entry"][1]))
    assert obs["subject"]["reference"] == pat_ref
    assert obs["extension"][0]["valueUri"] == pat_ref
    assert pat not in obs["text"]["div"], "urn:uuid left in the narrative"
    assert pat_ref in obs["text"]["div"]


# --- transaction: conditional references ------------------------------------------------------


def test_transaction_resolves_conditional_reference_to_single_match(client: TestClient) -> None:
    put(client, organization("org-a", "oa"))
    put(client, organization("org-b", "ob"))
    r = post_bundle(
        client,
        "transaction",
        [
            entry(
                "POST",
                "Patient",
                patient(
                    "cond-1",
                    managingOrganization={"reference": f"Organization?identifier={SYS}|org-b"},
                ),
            )
        ],
    )
    assert r.status_code == 200, r.text
    stored = read(client, created(r.json()["entry"][0]))
    assert stored["managingOrganization"]["reference"] == "Organization/ob"


@pytest.mark.parametrize("orgs", [[], ["o1", "o2"]], ids=["no-match", "several-matches"])
def test_transaction_unresolvable_conditional_reference_stores_nothing(
    client: TestClient, orgs: list[str]
) -> None:
    for rid in orgs:
        put(client, organization("dup", rid))
    r = post_bundle(
        client,
        "transaction",
        [
            entry("POST", "Patient", patient("cond-2")),
            entry(
                "POST",
                "Patient",
                patient(
                    "cond-3",
                    managingOrganization={"reference": f"Organization?identifier={SYS}|dup"},
                ),
            ),
        ],
    )
    assert 400 <= r.status_code < 500, r.text
    assert "Bundle.entry[1]" in outcome_text(r.json())
    assert count(client, "Patient") == 0


# --- transaction: conditional create and If-Match ---------------------------------------------


def test_transaction_if_none_exist_reuses_existing_match(client: TestClient) -> None:
    put(client, patient("dupe-check", id="existing"))
    pat = "urn:uuid:1e0b8f1c-2222-4c1d-8f00-000000000001"
    r = post_bundle(
        client,
        "transaction",
        [
            entry(
                "POST",
                "Patient",
                patient("dupe-check", active=True),
                pat,
                ifNoneExist=f"identifier={SYS}|dupe-check",
            ),
            entry("POST", "Observation", observation(pat)),
        ],
    )
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    assert status(resp[0]) == 200
    assert count(client, "Patient") == 1
    current = read(client, "Patient/existing")
    assert current["meta"]["versionId"] == "1" and "active" not in current
    assert read(client, created(resp[1]))["subject"]["reference"] == "Patient/existing"


def test_transaction_if_match_current_version_updates(client: TestClient) -> None:
    put(client, patient("im-1", id="im"))
    r = post_bundle(
        client,
        "transaction",
        [
            entry("PUT", "Patient/im", patient("im-1", id="im", active=True), ifMatch='W/"1"'),
        ],
    )
    assert r.status_code == 200, r.text
    assert status(r.json()["entry"][0]) == 200
    assert read(client, "Patient/im")["meta"]["versionId"] == "2"


def test_transaction_if_match_stale_version_rolls_back_everything(client: TestClient) -> None:
    put(client, patient("im-2", id="im"))
    put(client, patient("im-2", id="im", active=True))  # now version 2
    r = post_bundle(
        client,
        "transaction",
        [
            entry("POST", "Patient", patient("im-new")),
            entry("PUT", "Patient/im", patient("im-2", id="im", active=False), ifMatch='W/"1"'),
        ],
    )
    assert r.status_code == 412, r.text
    assert "Bundle.entry[1]" in outcome_text(r.json())
    assert count(client, "Patient") == 1
    current = read(client, "Patient/im")
    assert current["meta"]["versionId"] == "2" and current["active"] is True


# --- transaction: processing order --------------------------------------------------------------


def test_transaction_processes_delete_post_put_get_in_that_order(client: TestClient) -> None:
    """Listed GET, PUT, POST, DELETE; run as DELETE, POST, PUT, GET (http.html#trules)."""
    put(client, patient("order", id="old"))
    r = post_bundle(
        client,
        "transaction",
        [
            entry("GET", f"Patient?identifier={SYS}|order"),
            entry("GET", "Patient/later"),
            entry("PUT", "Patient/later", patient("later", id="later")),
            entry("POST", "Patient", patient("order")),
            entry("DELETE", f"Patient?identifier={SYS}|order"),
        ],
    )
    assert r.status_code == 200, r.text
    search_, read_, put_, post_, delete_ = r.json()["entry"]
    assert [status(e) for e in (search_, read_, put_, post_)] == [200, 200, 201, 201]
    assert 200 <= status(delete_) < 300
    new_id = created(post_).split("/")[1]
    # the search ran after the delete (old gone) and after the create (new found)
    matches = [e["resource"]["id"] for e in search_["resource"].get("entry", [])]
    assert matches == [new_id]
    # the read ran after the PUT listed after it
    assert read_["resource"]["id"] == "later"
    assert client.get("/fhir/Patient/old").status_code == 410


# --- transaction: failure rolls back --------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        entry("POST", "Patient", patient("bad", birthDate="1970-13-45")),
        entry("POST", "NoSuchType", {"resourceType": "NoSuchType"}),
    ],
    ids=["invalid-birthDate", "unknown-resourceType"],
)
def test_transaction_failure_stores_nothing(client: TestClient, bad: dict[str, Any]) -> None:
    put(client, patient("prior", id="prior", gender="female"))
    entries = [
        entry("PUT", "Patient/prior", patient("prior", id="prior", gender="male")),
        entry("POST", "Patient", patient("rb-1"), "urn:uuid:9a8b7c6d-3333-4c1d-8f00-000000000001"),
        entry("POST", "Observation", observation("urn:uuid:9a8b7c6d-3333-4c1d-8f00-000000000001")),
        bad,
    ]
    r = post_bundle(client, "transaction", entries)
    assert 400 <= r.status_code < 500, r.text
    assert "Bundle.entry[3]" in outcome_text(r.json())
    assert count(client, "Patient") == 1
    assert count(client, "Observation") == 0
    prior = read(client, "Patient/prior")
    assert prior["gender"] == "female" and prior["meta"]["versionId"] == "1"
    assert len(client.get("/fhir/Patient/prior/_history").json()["entry"]) == 1


def test_transaction_failure_leaves_deleted_resource_in_place(client: TestClient) -> None:
    put(client, patient("keep", id="keep"))
    r = post_bundle(
        client,
        "transaction",
        [
            entry("DELETE", "Patient/keep"),
            entry("POST", "Patient", patient("x", birthDate="not-a-date")),
        ],
    )
    assert 400 <= r.status_code < 500, r.text
    assert "Bundle.entry[1]" in outcome_text(r.json())
    assert read(client, "Patient/keep")["meta"]["versionId"] == "1"


# --- batch ------------------------------------------------------------------------------------


def test_batch_failing_entry_gets_its_own_outcome_others_succeed(client: TestClient) -> None:
    entries = [
        entry("POST", "Patient", patient("b-1")),
        entry("POST", "Patient", patient("b-2", birthDate="1970-13-45")),
        entry("GET", "Patient/does-not-exist"),
        entry("PUT", "Patient/b3", patient("b-3", id="b3")),
        entry("POST", "NoSuchType", {"resourceType": "NoSuchType"}),
    ]
    r = post_bundle(client, "batch", entries)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "batch-response"
    resp = body["entry"]
    assert len(resp) == len(entries)
    assert [status(e) for e in resp] == [201, 400, 404, 201, status(resp[4])]
    assert 400 <= status(resp[4]) < 500
    for failed in (resp[1], resp[2], resp[4]):
        assert failed["response"]["outcome"]["resourceType"] == "OperationOutcome"
    read(client, created(resp[0]))
    read(client, "Patient/b3")
    assert count(client, "Patient") == 2


@pytest.mark.parametrize("kind", ["collection", "document", "searchset", "history", "message"])
def test_bundle_of_other_type_is_rejected(client: TestClient, kind: str) -> None:
    r = post_bundle(client, kind, [{"fullUrl": f"{BASE}/Patient/x", "resource": patient("x")}])
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert count(client, "Patient") == 0


def test_bulk_transaction_redone_under_the_lock_when_a_conditional_reference_moves(
    client: TestClient, monkeypatch: Any
) -> None:
    """Plain-create transactions resolve conditional references before taking the write
    lock; if a target changed meanwhile the whole transaction is redone under the lock."""
    from fhir_server.interactions import bundle as bundle_module

    for oid in ("org-a", "org-b"):
        r = client.put(
            f"/fhir/Organization/{oid}",
            json={
                "resourceType": "Organization",
                "id": oid,
                "identifier": [{"system": "urn:org", "value": oid}],
            },
        )
        assert r.status_code == 201
    calls: list[str] = []
    real = bundle_module.Rewriter.conditional

    def moving(self: Any, ref: str) -> str:
        calls.append(ref)
        # first (unlocked) resolution says org-a; afterwards the truth, org-b
        return "Organization/org-a" if len(calls) == 1 else real(self, ref)

    monkeypatch.setattr(bundle_module.Rewriter, "conditional", moving)
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": {
                    "resourceType": "Patient",
                    "managingOrganization": {"reference": "Organization?identifier=urn:org|org-b"},
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    r = client.post("/fhir", json=tx)
    assert r.status_code == 200, r.text
    location = r.json()["entry"][0]["response"]["location"]
    patient = client.get(f"/fhir/{location.split('/_history')[0]}").json()
    assert patient["managingOrganization"]["reference"] == "Organization/org-b"
    assert len(calls) >= 3  # unlocked, re-check under the lock, then the redo
