"""Our terminology (terminology/ folder) over HTTP: served CodeSystems/ValueSets, $lookup and
$validate-code; plus the business-status ↔ Task.status pairing the state machine relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.terminology import Terminology

CANON = "https://yilian.health/fhir"
TERMINOLOGY = Terminology.load([Path(__file__).resolve().parent.parent / "terminology"])
BS = f"{CANON}/CodeSystem/yl-referral-business-status"
TASK_STATUS_VS = f"{CANON}/ValueSet/yl-referral-task-status"
TASK_STATUS = "http://hl7.org/fhir/task-status"
#: every code of http://hl7.org/fhir/task-status in R4
R4_TASK_STATUS = {
    "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
    "in-progress", "on-hold", "failed", "completed", "entered-in-error",
}  # fmt: skip
CODE_SYSTEMS = [
    "yl-referral-direction", "yl-referral-type", "yl-org-level", "yl-referral-business-status",
    "yl-referral-rejection-reason", "yl-referral-cancel-reason", "yl-referral-reason-category",
    "yl-priority-handling", "yl-milestone", "yl-transition", "yl-task-type",
    "yl-follow-up-method", "yl-follow-up-outcome", "yl-reserved-pool", "yl-affiliation-role",
    "yl-practitioner-role", "yl-collaboration-role", "yl-referral-slip-section",
]  # fmt: skip
H = {"Content-Type": "application/fhir+json"}


def params(*items: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": n, key: v} for n, key, v in items],
    }


def out(body: dict[str, Any], name: str) -> list[Any]:
    """Values (or parts, as {name: value}) of the output parameters called `name`."""
    found = []
    for p in body["parameter"]:
        if p["name"] != name:
            continue
        if "part" in p:
            found.append(
                {
                    q["name"]: next(v for k, v in q.items() if k.startswith("value"))
                    for q in p["part"]
                }
            )
        else:
            found.append(next(v for k, v in p.items() if k.startswith("value")))
    return found


def vset(url: str, *include: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "url": url, "compose": {"include": list(include)}}


# --- served resources -----------------------------------------------------------------------


@pytest.mark.parametrize("cs_id", CODE_SYSTEMS)
def test_code_system_served_by_url(client: TestClient, cs_id: str) -> None:
    url = f"{CANON}/CodeSystem/{cs_id}"
    bundle = client.get("/fhir/CodeSystem", params={"url": url}).json()
    assert bundle["total"] == 1 if "total" in bundle else len(bundle["entry"]) == 1
    cs = bundle["entry"][0]["resource"]
    assert (cs["id"], cs["status"], cs["content"], cs["caseSensitive"]) == (
        cs_id, "active", "complete", True,
    )  # fmt: skip
    assert cs["version"] == "0.1.0" and cs["count"] == len(cs["concept"])
    for concept in cs["concept"]:
        assert concept["display"]
        zh = [d["value"] for d in concept["designation"] if d["language"] == "zh-CN"]
        assert len(zh) == 1 and zh[0]
    vs = client.get("/fhir/ValueSet", params={"url": f"{CANON}/ValueSet/{cs_id}"}).json()
    assert vs["entry"][0]["resource"]["compose"]["include"][0]["system"] == url
    codes = [c for _, c, _ in TERMINOLOGY.expand(f"{CANON}/ValueSet/{cs_id}") or []]
    assert codes == [c["code"] for c in cs["concept"]]


def test_value_sets_served(client: TestClient) -> None:
    bundle = client.get(f"/fhir/ValueSet?url={TASK_STATUS_VS}").json()
    include = bundle["entry"][0]["resource"]["compose"]["include"]
    assert include[0]["system"] == TASK_STATUS
    assert client.get("/fhir/ValueSet/yl-referral-category").status_code == 200
    assert client.get("/fhir/CodeSystem/yl-transition").json()["count"] == 20


# --- the state machine pairing --------------------------------------------------------------


def test_business_status_task_status_pairing() -> None:
    expansion = TERMINOLOGY.expand(f"{CANON}/ValueSet/yl-referral-business-status")
    assert expansion is not None and len(expansion) == 21
    paired: dict[str, list[str]] = {}
    for system, code, _ in expansion:
        task_status = TERMINOLOGY.property(system, code, "taskStatus")
        assert task_status in R4_TASK_STATUS, code
        answer = TERMINOLOGY.validate_code(TASK_STATUS_VS, TASK_STATUS, task_status)
        assert answer is not None and answer[0] is True, (code, task_status)
        paired.setdefault(task_status, []).append(code)
    allowed = TERMINOLOGY.expand(TASK_STATUS_VS)
    assert allowed is not None and len(allowed) == 10
    assert {code for _, code, _ in allowed} == set(paired), "each task status has a sub-state"
    assert paired["accepted"] == ["booked", "booked-pending-review", "approved", "bed-assigned"]


def test_property_and_tier() -> None:
    assert TERMINOLOGY.property(BS, "booked", "taskStatus") == "accepted"
    assert TERMINOLOGY.property(f"{CANON}/CodeSystem/yl-org-level", "chc", "tier") == "primary"
    assert TERMINOLOGY.property(BS, "nope", "taskStatus") is None
    assert TERMINOLOGY.lookup(BS, "booked", "9.9") is None


def test_validate_code_compose_features() -> None:
    """Explicit concept lists, `|version`, excludes, imported value sets, filters."""
    cs = {
        "resourceType": "CodeSystem",
        "url": "urn:cs",
        "version": "2",
        "content": "complete",
        "concept": [{"code": "a", "display": "A", "concept": [{"code": "a1"}]}, {"code": "b"}],
    }
    vs_all = vset("urn:all", {"system": "urn:cs"})
    vs_minus = {
        "resourceType": "ValueSet",
        "url": "urn:minus",
        "version": "1",
        "compose": {
            "include": [{"valueSet": ["urn:all|"]}, {"system": "urn:cs|2"}],
            "exclude": [{"system": "urn:cs", "concept": [{"code": "b"}]}],
        },
    }
    is_a = {"property": "concept", "op": "is-a", "value": "a"}
    vs_isa = vset("urn:isa", {"system": "urn:cs", "filter": [is_a]})
    vs_snomed = vset("urn:sct", {"system": "http://snomed.info/sct"})
    t = Terminology([cs, vs_all, vs_minus, vs_isa, vs_snomed])
    assert t.validate_code("urn:all", "urn:cs", "b") == (True, "b")
    assert t.validate_code("urn:minus|1", "urn:cs", "a", "A") == (True, "A")
    assert t.validate_code("urn:minus", None, "a1") == (True, "a1")
    assert t.validate_code("urn:minus", "urn:cs", "b")[0] is False  # type: ignore[index]
    assert t.validate_code("urn:minus", "urn:cs", "a", "Wrong")[0] is False  # type: ignore[index]
    assert t.validate_code("urn:minus|7", "urn:cs", "a") is None
    assert [c for _, c, _ in t.expand("urn:isa") or []] == ["a", "a1"]
    assert t.validate_code("urn:sct", "http://snomed.info/sct", "3457005") is None
    assert t.validate_code("urn:unknown", None, "a") is None
    assert t.lookup("urn:cs|2", "a1")["parent"] == "a"  # type: ignore[index]


# --- $lookup --------------------------------------------------------------------------------


def test_lookup_get(client: TestClient) -> None:
    r = client.get("/fhir/CodeSystem/$lookup", params={"system": BS, "code": "booked"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters"
    assert out(body, "name") == ["YlReferralBusinessStatus"]
    assert out(body, "version") == ["0.1.0"]
    assert out(body, "display") == ["Booked"]
    assert out(body, "designation") == [{"language": "zh-CN", "value": "已预约"}]
    assert {"code": "taskStatus", "value": "accepted"} in out(body, "property")


def test_lookup_post_coding_and_language(client: TestClient) -> None:
    coding = {"system": f"{CANON}/CodeSystem/yl-referral-direction", "code": "up"}
    body = params(("coding", "valueCoding", coding), ("displayLanguage", "valueCode", "zh-CN"))
    r = client.post("/fhir/CodeSystem/$lookup", json=body, headers=H)
    assert r.status_code == 200, r.text
    assert out(r.json(), "display") == ["上转"]
    body = params(("system", "valueUri", BS), ("code", "valueCode", "no-show"))
    r = client.post("/fhir/CodeSystem/$lookup", json=body, headers=H)
    assert out(r.json(), "designation") == [{"language": "zh-CN", "value": "未报到/爽约"}]
    assert {"code": "taskStatus", "value": "failed"} in out(r.json(), "property")


def test_lookup_instance_level(client: TestClient) -> None:
    r = client.get("/fhir/CodeSystem/yl-org-level/$lookup?code=3A&property=tier")
    assert r.status_code == 200, r.text
    assert out(r.json(), "property") == [{"code": "tier", "value": "tertiary"}]
    body = params(("code", "valueCode", "check-in"))
    r = client.post("/fhir/CodeSystem/yl-transition/$lookup", json=body, headers=H)
    assert out(r.json(), "designation") == [{"language": "zh-CN", "value": "报到"}]
    assert client.get("/fhir/CodeSystem/nope/$lookup?code=x").status_code == 404


@pytest.mark.parametrize(
    "query, status",
    [
        ({"system": BS, "code": "nope"}, 404),
        ({"system": BS, "code": "booked", "version": "9.9"}, 404),
        ({"system": "http://snomed.info/sct", "code": "3457005"}, 404),
        ({"system": BS}, 400),
        ({"code": "booked"}, 400),
    ],
)
def test_lookup_errors(client: TestClient, query: dict[str, str], status: int) -> None:
    r = client.get("/fhir/CodeSystem/$lookup", params=query)
    assert r.status_code == status
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    if "snomed" in query.get("system", ""):
        assert "terminology/" in outcome["issue"][0]["diagnostics"]


def test_lookup_not_on_other_types(client: TestClient) -> None:
    assert client.get("/fhir/ValueSet/$lookup?code=x").status_code == 404


# --- $validate-code -------------------------------------------------------------------------


def test_validate_code_valueset_get(client: TestClient) -> None:
    r = client.get(
        "/fhir/ValueSet/$validate-code",
        params={"url": TASK_STATUS_VS, "system": TASK_STATUS, "code": "accepted"},
    )
    assert r.status_code == 200, r.text
    assert out(r.json(), "result") == [True]
    assert out(r.json(), "display") == ["Accepted"]
    for code in ("ready", "on-hold", "bogus"):
        r = client.get(
            "/fhir/ValueSet/$validate-code",
            params={"url": TASK_STATUS_VS, "system": TASK_STATUS, "code": code},
        )
        assert out(r.json(), "result") == [False]
        assert out(r.json(), "message")


def test_validate_code_valueset_post_and_instance(client: TestClient) -> None:
    vs = f"{CANON}/ValueSet/yl-referral-business-status"
    coding = {"system": BS, "code": "booked", "display": "已预约"}
    body = params(("url", "valueUri", vs), ("coding", "valueCoding", coding))
    r = client.post("/fhir/ValueSet/$validate-code", json=body, headers=H)
    assert out(r.json(), "result") == [True]
    body = params(("url", "valueUri", f"{vs}|0.1.0"), ("code", "valueCode", "booked"),
                  ("system", "valueUri", BS), ("display", "valueString", "Wrong"))  # fmt: skip
    r = client.post("/fhir/ValueSet/$validate-code", json=body, headers=H)
    assert out(r.json(), "result") == [False]
    assert "Wrong display" in out(r.json(), "message")[0]
    assert out(r.json(), "display") == ["Booked"]
    cc = {"coding": [{"system": "urn:x", "code": "q"}, {"system": BS, "code": "withdrawn"}]}
    body = params(("codeableConcept", "valueCodeableConcept", cc))
    r = client.post(
        "/fhir/ValueSet/yl-referral-business-status/$validate-code", json=body, headers=H
    )
    assert out(r.json(), "result") == [True]
    r = client.get(
        "/fhir/ValueSet/yl-referral-category/$validate-code",
        params={"system": "http://snomed.info/sct", "code": "3457005"},
    )
    assert out(r.json(), "result") == [True]
    r = client.get("/fhir/ValueSet/yl-referral-direction/$validate-code?code=sideways")
    assert out(r.json(), "result") == [False]


def test_validate_code_valueset_errors(client: TestClient) -> None:
    r = client.get("/fhir/ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/x&code=a")
    assert r.status_code == 404 and "terminology/" in r.json()["issue"][0]["diagnostics"]
    r = client.get(f"/fhir/ValueSet/$validate-code?url={TASK_STATUS_VS}")
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/ValueSet/$validate-code?code=a").status_code == 400


def test_validate_code_codesystem(client: TestClient) -> None:
    url = f"{CANON}/CodeSystem/yl-referral-type"
    r = client.get("/fhir/CodeSystem/$validate-code", params={"url": url, "code": "inpatient"})
    assert out(r.json(), "result") == [True] and out(r.json(), "display") == ["Inpatient referral"]
    r = client.get("/fhir/CodeSystem/yl-referral-type/$validate-code?code=Inpatient")
    assert out(r.json(), "result") == [False], "caseSensitive"
    coding = {"system": url, "code": "emergency", "display": "急诊转诊"}
    body = params(("coding", "valueCoding", coding))
    r = client.post("/fhir/CodeSystem/$validate-code", json=body, headers=H)
    assert out(r.json(), "result") == [True]
    r = client.get("/fhir/CodeSystem/$validate-code?url=http://loinc.org&code=1-8")
    assert r.status_code == 404
