"""$expand, $subsumes and $translate over R4 and THO, and the token search modifiers :in,
:not-in, :below and :above, over HTTP. Every expectation is read off the published R4/THO
content (quoted in the comments), not from our own output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

H = {"Content-Type": "application/fhir+json"}
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
OBS_CAT_VS = "http://hl7.org/fhir/ValueSet/observation-category"
ENTITY = "http://terminology.hl7.org/CodeSystem/v3-EntityClass"
GENDER = "http://hl7.org/fhir/administrative-gender"
V2_SEX = "http://terminology.hl7.org/CodeSystem/v2-0001"


def parameter(body: dict[str, Any], name: str) -> list[Any]:
    """Values (or parts as {name: value}) of the output parameters called `name`."""
    found = []
    for p in body["parameter"]:
        if p["name"] != name:
            continue
        if "part" in p:
            found.append({q["name"]: next(v for k, v in q.items() if k.startswith("value"))
                          for q in p["part"]})  # fmt: skip
        else:
            found.append(next(v for k, v in p.items() if k.startswith("value")))
    return found


# --- $expand --------------------------------------------------------------------------------
# R4 ValueSet observation-category includes all of CodeSystem observation-category, whose
# concepts are, in order: social-history, vital-signs, imaging, laboratory, procedure, survey,
# exam, therapy, activity (9 codes).


def test_expand_pages_in_definition_order(client: TestClient) -> None:
    r = client.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS, "offset": 3, "count": 3})
    assert r.status_code == 200, r.text
    expansion = r.json()["expansion"]
    assert expansion["total"] == 9 and expansion["offset"] == 3
    assert [c["code"] for c in expansion["contains"]] == ["laboratory", "procedure", "survey"]
    assert {"name": "count", "valueInteger": 3} in expansion["parameter"]
    assert {"name": "offset", "valueInteger": 3} in expansion["parameter"]


def test_expand_filter_matches_display_or_code(client: TestClient) -> None:
    # "sign" occurs only in vital-signs / "Vital Signs"; "EX" (any case) in exam / "Exam"
    r = client.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS, "filter": "sign"})
    assert [c["code"] for c in r.json()["expansion"]["contains"]] == ["vital-signs"]
    r = client.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS, "filter": "EX"})
    body = r.json()["expansion"]
    assert body["total"] == 1 and body["contains"][0] == {
        "system": OBS_CAT, "code": "exam", "display": "Exam"
    }  # fmt: skip


def test_expand_display_language(client: TestClient) -> None:
    # terminology/CodeSystem-yl-practitioner-role.json: referral-coordinator has the zh-CN
    # designation 转诊专员 and the display "Referral coordinator"
    url = "https://yilian.health/fhir/ValueSet/yl-practitioner-role"
    for language, expected in (("zh-CN", "转诊专员"), ("en", "Referral coordinator")):
        r = client.get("/fhir/ValueSet/$expand", params={"url": url, "displayLanguage": language})
        assert r.status_code == 200, r.text
        by_code = {c["code"]: c.get("display") for c in r.json()["expansion"]["contains"]}
        assert by_code["referral-coordinator"] == expected


def test_expand_instance_filters_the_chosen_language(client: TestClient) -> None:
    # terminology/CodeSystem-yl-practitioner-role.json: of the zh-CN designations 转诊专员,
    # 会诊协调员, 家庭医生, 审核人 only 会诊协调员 holds 协调; "coordinator" is in the English
    # displays of referral-coordinator and consultation-coordinator, in that order
    path = "/fhir/ValueSet/yl-practitioner-role/$expand"
    r = client.get(path, params={"filter": "协调", "displayLanguage": "zh-CN"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "yl-practitioner-role"
    assert [c["code"] for c in r.json()["expansion"]["contains"]] == ["consultation-coordinator"]
    r = client.get(path, params={"filter": "coordinator"})
    assert [c["code"] for c in r.json()["expansion"]["contains"]] == [
        "referral-coordinator", "consultation-coordinator"
    ]  # fmt: skip


def test_expand_refuses_what_it_cannot_bound(client_with: Callable[..., TestClient]) -> None:
    c = client_with(max_count=5)
    r = c.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS})  # 9 codes > 5, no count
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "too-costly"
    r = c.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS, "count": 5})
    assert r.status_code == 200 and len(r.json()["expansion"]["contains"]) == 5
    # condition-code includes all of SNOMED CT, which is not held here
    r = c.get("/fhir/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/condition-code"})
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "too-costly"
    r = c.get("/fhir/ValueSet/$expand", params={"url": OBS_CAT_VS, "count": "-1"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["count"]
    r = c.get("/fhir/ValueSet/$expand", params={"url": "http://example.org/no-such-vs"})
    assert r.status_code == 404


# --- $subsumes ------------------------------------------------------------------------------
# THO/R4 v3-EntityClass (hierarchyMeaning is-a) nests: ENT > LIV (living subject) > PSN
# (person), and ENT > ORG (organization). So LIV subsumes PSN, PSN is subsumed by ENT (two
# levels up), PSN and ORG are siblings' descendants with no is-a link, PSN ≡ PSN.


def test_subsumes_in_a_tho_hierarchy(client: TestClient) -> None:
    cases = [("LIV", "PSN", "subsumes"), ("PSN", "ENT", "subsumed-by"),
             ("PSN", "ORG", "not-subsumed"), ("PSN", "PSN", "equivalent")]  # fmt: skip
    for a, b, expected in cases:
        query = {"system": ENTITY, "codeA": a, "codeB": b}
        r = client.get("/fhir/CodeSystem/$subsumes", params=query)
        assert r.status_code == 200, r.text
        assert parameter(r.json(), "outcome") == [expected], (a, b)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": ENTITY, "code": "ENT"}},
        {"name": "codingB", "valueCoding": {"system": ENTITY, "code": "CITY"}},
    ]}  # fmt: skip
    r = client.post("/fhir/CodeSystem/$subsumes", json=body, headers=H)  # ENT > PLC > CITY
    assert parameter(r.json(), "outcome") == ["subsumes"]


def test_subsumes_bad_input(client: TestClient) -> None:
    r = client.get("/fhir/CodeSystem/$subsumes", params={"system": ENTITY, "codeA": "PSN",
                                                   "codeB": "NOPE"})  # fmt: skip
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["codeB"]
    r = client.get("/fhir/CodeSystem/$subsumes", params={"system": "http://snomed.info/sct",
                                                   "codeA": "1", "codeB": "2"})  # fmt: skip
    assert r.status_code == 404


# --- $translate -----------------------------------------------------------------------------
# R4 ConceptMap cm-administrative-gender-v2 maps administrative-gender to v2 table 0001:
# male → M (equal), female → F (equal), other → A and O (both wider), unknown → U (equal).


def test_translate_with_an_r4_conceptmap(client: TestClient) -> None:
    url = "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2"
    r = client.get("/fhir/ConceptMap/$translate",
                   params={"url": url, "system": GENDER, "code": "other"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert parameter(r.json(), "result") == [True]
    matches = parameter(r.json(), "match")
    assert sorted((m["concept"]["code"], m["equivalence"]) for m in matches) == [
        ("A", "wider"), ("O", "wider")
    ]  # fmt: skip
    assert {m["concept"]["system"] for m in matches} == {V2_SEX}
    assert {m["source"] for m in matches} == {url}
    # without a map: every map is searched; targetsystem keeps v2's answer only
    r = client.get("/fhir/ConceptMap/$translate", params={"system": GENDER, "code": "male",
                                                    "targetsystem": V2_SEX})  # fmt: skip
    assert [(m["concept"]["code"], m["equivalence"]) for m in parameter(r.json(), "match")] == [
        ("M", "equal")
    ]  # fmt: skip
    r = client.get("/fhir/ConceptMap/$translate",
                   params={"url": url, "system": V2_SEX, "code": "F", "reverse": "true"})
    assert [m["concept"]["code"] for m in parameter(r.json(), "match")] == ["female"]
    query = {"url": url, "system": GENDER, "code": "x"}
    r = client.get("/fhir/ConceptMap/$translate", params=query)
    assert parameter(r.json(), "result") == [False] and parameter(r.json(), "match") == []
    r = client.get("/fhir/ConceptMap/$translate", params={"url": url})
    assert r.status_code == 400


# --- token modifiers ------------------------------------------------------------------------


def _observation(client: TestClient, oid: str, **codings: tuple[str, str]) -> None:
    body: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final",
                            "code": {"text": oid}}  # fmt: skip
    if "code" in codings:
        system, code = codings["code"]
        body["code"] = {"coding": [{"system": system, "code": code}]}
    if "category" in codings:
        system, code = codings["category"]
        body["category"] = [{"coding": [{"system": system, "code": code}]}]
    r = client.put(f"/fhir/Observation/{oid}", json=body, headers=H)
    assert r.status_code in (200, 201), r.text


def _ids(client: TestClient, query: str) -> set[str]:
    r = client.get(f"/fhir/Observation?{query}")
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


def test_category_in_and_not_in(client: TestClient) -> None:
    # vital-signs and laboratory are members of observation-category; the same code under
    # another system is not; "none" has no category at all
    _observation(client, "vitals", category=(OBS_CAT, "vital-signs"))
    _observation(client, "lab", category=(OBS_CAT, "laboratory"))
    _observation(client, "other", category=("http://example.org/cat", "vital-signs"))
    _observation(client, "none")
    assert _ids(client, f"category:in={OBS_CAT_VS}") == {"vitals", "lab"}
    # :not-in, like :not, also matches resources with no category (search.html#token)
    assert _ids(client, f"category:not-in={OBS_CAT_VS}") == {"other", "none"}
    r = client.get("/fhir/Observation?category:in=http://example.org/no-such-vs")
    assert r.status_code == 400
    r = client.get("/fhir/Observation?code:in=http://hl7.org/fhir/ValueSet/observation-codes")
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "too-costly"  # all LOINC


def test_code_below_and_above(client: TestClient) -> None:
    # v3-EntityClass: ENT > LIV > {PSN, NLIV}; ENT > ORG; ENT > MAT > CHEM
    for code in ("PSN", "NLIV", "LIV", "ORG", "CHEM"):
        _observation(client, code.lower(), code=(ENTITY, code))
    assert _ids(client, f"code:below={ENTITY}|LIV") == {"liv", "psn", "nliv"}
    assert _ids(client, f"code:below={ENTITY}|ENT") == {"liv", "psn", "nliv", "org", "chem"}
    assert _ids(client, f"code:above={ENTITY}|PSN") == {"psn", "liv"}  # ENT itself not stored
    r = client.get("/fhir/Observation?code:below=LIV")
    assert r.status_code == 400
    r = client.get("/fhir/Observation?code:below=http://loinc.org|1234-5")
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "not-supported"


def test_capability_lists_the_token_modifiers(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    obs = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Observation")
    doc = next(p.get("documentation", "") for p in obs["searchParam"] if p["name"] == "code")
    for mod in (":in", ":not-in", ":below", ":above"):
        assert mod in doc
