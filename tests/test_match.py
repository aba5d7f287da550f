"""Patient/$match (patient-operation-match.html) over a hand-built set of people with the traps
of a registration desk: the same name for two people, a name typed in pinyin, day and month
swapped, a national ID with a wrong check character, two hospitals' records of one person.

Every expected score is added up by hand from the weight table in the README ("Patient
index"): national ID ±0.80, other identifier +0.60, name +0.25 (pinyin only +0.20, family
only +0.05), birth date +0.20/−0.25 (day and month swapped +0.05), gender +0.05/−0.25, phone
+0.20, address +0.05; clipped to [0, 1]; certain ≥ 0.95, probable ≥ 0.70, possible ≥ 0.45."""

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

NATIONAL = "https://yilian.health/fhir/sid/resident-id"
MRN_A, MRN_B = "urn:oid:1.2.3.1", "urn:oid:1.2.3.2"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def resident_id(first17: str) -> str:
    """GB 11643-1999 §5.3, written out from the standard's table: weights 7 9 10 5 8 4 2 1 6 3
    7 9 10 5 8 4 2, check character for sum mod 11 = 0..10: 1 0 X 9 8 7 6 5 4 3 2."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


ID_ZHANG = resident_id("33010619800305001")  # 1980-03-05, sequence 001 (odd: male)
ID_OTHER = resident_id("33010219751120003")
ID_LI = resident_id("33010619900101002")
# the standard's own example (GB 11643-1999 annex): 11010519491231002X is valid
assert resident_id("11010519491231002") == "11010519491231002X"


def patient(pid: str, family: str, given: str, birth: str, gender: str, org: str,
            ids: list[tuple[str, str]] = (), phone: str | None = None,
            **more: Any) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {
        "resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
        "name": [{"family": family, "given": [given]}],
        "managingOrganization": {"reference": f"Organization/{org}"},
        "address": [{"city": "杭州市", "district": "西湖区", "line": ["文三路1号"]}],
        **more,
    }  # fmt: skip
    if ids:  # FHIR JSON has no empty arrays
        out["identifier"] = [{"system": s, "value": v} for s, v in ids]
    if phone:
        out["telecom"] = [{"system": "phone", "value": phone}]
    return out


PEOPLE = [
    {"resourceType": "Organization", "id": "ha", "name": "HA"},
    {"resourceType": "Organization", "id": "hb", "name": "HB"},
    {"resourceType": "PractitionerRole", "id": "drb",
     "organization": {"reference": "Organization/hb"}},
    # one person, known to hospital A and to hospital B
    patient("zhang-a", "张", "三", "1980-03-05", "male", "ha",
            [(NATIONAL, ID_ZHANG), (MRN_A, "A-001")], "13800001111"),
    patient("zhang-b", "张", "三", "1980-03-05", "male", "hb",
            [(NATIONAL, ID_ZHANG), (MRN_B, "B-777")], "+86 138-0000-1111"),
    # the same name, another person
    patient("zhang-other", "张", "三", "1975-11-20", "male", "ha",
            [(NATIONAL, ID_OTHER)], "13911112222"),
    # born 1980-05-03: day and month of zhang-a's birth date swapped
    patient("zhang-swapped", "张", "三", "1980-05-03", "male", "ha"),
    # 章三 sounds like 张三 (zhāng sān) but is written otherwise
    patient("chang", "章", "三", "1980-03-05", "male", "ha"),
    patient("li", "李", "四", "1990-01-01", "female", "ha", [(NATIONAL, ID_LI)]),
    # merged away into zhang-a (replaced-by): never offered
    patient("zhang-old", "张", "三", "1980-03-05", "male", "ha", [(NATIONAL, ID_ZHANG)],
            link=[{"other": {"reference": "Patient/zhang-a"}, "type": "replaced-by"}],
            active=False),
]  # fmt: skip


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    services = make_services(tmp_path_factory.mktemp("match") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in PEOPLE:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201, r
        store = auth_of(c).store
        admin.add_client(store, "desk-app", [REDIRECT], public=True, trusted=True)
        admin.add_user(store, "drb", PASSWORD, "PractitionerRole/drb")
        yield c


def ask(c: TestClient, resource: dict[str, Any], **params: Any) -> dict[str, Any]:
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource},
            *({"name": k, **v} for k, v in params.items())]}  # fmt: skip
    r = c.post("/fhir/Patient/$match", json=body)
    assert r.status_code == 200, r.text
    bundle: dict[str, Any] = r.json()
    assert bundle["type"] == "searchset"
    return bundle


def graded(bundle: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(id, score, match grade) of the matches, in the order returned."""
    out = []
    for e in bundle.get("entry", []):
        if e["search"]["mode"] != "match":
            continue
        grades = e["search"]["extension"]
        (grade,) = [x["valueCode"] for x in grades if x["url"] == MATCH_GRADE]
        out.append((e["resource"]["id"], e["search"]["score"], grade))
    return out


def outcome(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]  # fmt: skip


def query(family: str, given: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **more}


def test_the_same_person_at_two_hospitals_is_certain_and_namesakes_are_not(
    desk: TestClient,
) -> None:
    q = query("张", "三", birthDate="1980-03-05", gender="male",
              identifier=[{"system": NATIONAL, "value": ID_ZHANG}])  # fmt: skip
    # zhang-a, zhang-b: ID 0.80 + name 0.25 + birth 0.20 + gender 0.05 = 1.30 -> 1.0 certain
    # zhang-other: name 0.25 − ID 0.80 − birth 0.25 + gender 0.05 < 0: not returned
    # zhang-swapped: name 0.25 + swapped 0.05 + gender 0.05 = 0.35: not returned
    # chang (章三): pinyin 0.20 + birth 0.20 + gender 0.05 = 0.45: possible
    # zhang-old would be certain too, but it was merged into zhang-a
    assert graded(ask(desk, q)) == [
        ("zhang-a", 1.0, "certain"), ("zhang-b", 1.0, "certain"), ("chang", 0.45, "possible"),
    ]  # fmt: skip


def test_a_name_typed_in_pinyin_finds_the_characters(desk: TestClient) -> None:
    q = query("Zhang", "San", birthDate="1980-03-05", gender="male",
              telecom=[{"system": "phone", "value": "138 0000 1111"}])  # fmt: skip
    # zhang-a and zhang-b (whose +86 138-0000-1111 is the same number): pinyin 0.20 + birth
    # 0.20 + gender 0.05 + phone 0.20 = 0.65 possible; chang: 0.20 + 0.20 + 0.05 = 0.45
    assert graded(ask(desk, q)) == [
        ("zhang-a", 0.65, "possible"), ("zhang-b", 0.65, "possible"),
        ("chang", 0.45, "possible"),
    ]  # fmt: skip


def test_day_and_month_swapped_counts_for_little(desk: TestClient) -> None:
    q = query("张", "三", birthDate="1980-05-03", gender="male")
    # zhang-swapped: name 0.25 + birth 0.20 + gender 0.05 = 0.50 possible
    # zhang-a, zhang-b: name 0.25 + swapped 0.05 + gender 0.05 = 0.35: not returned
    assert graded(ask(desk, q)) == [("zhang-swapped", 0.5, "possible")]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (ID_ZHANG[:-1] + ("1" if ID_ZHANG[-1] != "1" else "2"), "check character"),
        (ID_ZHANG[:-2], "16 characters"),
        (ID_ZHANG[:6] + "19801305" + ID_ZHANG[14:], "birth date"),
    ],
)
def test_a_malformed_national_id_is_warned_about_and_not_used(
    desk: TestClient, bad: str, reason: str
) -> None:
    q = query("张", "三", birthDate="1980-03-05", gender="male",
              identifier=[{"system": NATIONAL, "value": bad}])  # fmt: skip
    bundle = ask(desk, q)
    # without the ID: name 0.25 + birth 0.20 + gender 0.05 = 0.50 for zhang-a and zhang-b
    # (with it they would be certain; zhang-other is not penalised by a number not used)
    assert graded(bundle) == [
        ("zhang-a", 0.5, "possible"), ("zhang-b", 0.5, "possible"), ("chang", 0.45, "possible"),
    ]  # fmt: skip
    (issue,) = outcome(bundle)
    assert issue["severity"] == "warning" and issue["code"] == "value"
    assert reason in issue["diagnostics"] and bad in issue["diagnostics"]
    assert issue["expression"] == ["Parameters.parameter[0].resource.identifier[0].value"]


def test_only_certain_matches(desk: TestClient) -> None:
    by_id = query("张", "三", identifier=[{"system": NATIONAL, "value": ID_ZHANG}])
    flag = {"onlyCertainMatches": {"valueBoolean": True}}
    # two records are certain (ID 0.80 + name 0.25): ambiguous, so none is returned
    bundle = ask(desk, by_id, **flag)
    assert graded(bundle) == []
    assert [i["code"] for i in outcome(bundle)] == ["multiple-matches"]
    # hospital B's record number singles out zhang-b: MRN 0.60 + name 0.25 + birth 0.20 = 1.0;
    # zhang-a gets 0.45 (possible), left out under onlyCertainMatches; chang 0.20 + 0.20
    by_mrn = query("张", "三", birthDate="1980-03-05",
                   identifier=[{"system": MRN_B, "value": "B-777"}])  # fmt: skip
    assert graded(ask(desk, by_mrn, **flag)) == [("zhang-b", 1.0, "certain")]
    assert [m[0] for m in graded(ask(desk, by_mrn))] == ["zhang-b", "zhang-a"]


def test_count_limits_the_matches(desk: TestClient) -> None:
    q = query("张", "三", birthDate="1980-03-05", gender="male")
    bundle = ask(desk, q, count={"valueInteger": 1})
    assert [m[0] for m in graded(bundle)] == ["zhang-a"] and bundle["total"] == 1


def test_nobody_matching_gives_an_empty_searchset(desk: TestClient) -> None:
    bundle = ask(desk, query("王", "五", birthDate="2001-01-01"))
    assert bundle.get("entry", []) == [] and bundle["total"] == 0


def test_matches_are_confined_to_what_the_caller_may_see(desk: TestClient) -> None:
    """A practitioner of hospital B sees B's patients only (the consortium rule)."""
    token = code_flow(desk, "desk-app", "openid fhirUser user/Patient.rs", "drb")
    assert token.status_code == 200, token.text
    b = TestClient(desk.app, raise_server_exceptions=False)
    b.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    q = query("张", "三", birthDate="1980-03-05", gender="male",
              identifier=[{"system": NATIONAL, "value": ID_ZHANG}])  # fmt: skip
    assert graded(ask(b, q)) == [("zhang-b", 1.0, "certain")]


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({"resourceType": "Parameters"}, 400, "resource"),
        ({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": {"resourceType": "Observation"}}]}, 400, None),
        ({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient"}},
            {"name": "count", "valueInteger": 0}]}, 400, "count"),
        ({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient",
                                              "birthDate": "1980-13-45"}}]}, 400, None),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_400(
    desk: TestClient, body: dict[str, Any], status: int, expression: str | None
) -> None:
    r = desk.post("/fhir/Patient/$match", json=body)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["severity"] == "error"
    if expression:
        assert issue["expression"] == [expression]


def test_match_is_post_only_and_listed(desk: TestClient) -> None:
    assert desk.get("/fhir/Patient/$match").status_code == 405
    statement = desk.get("/fhir/metadata").json()
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    definition = "http://hl7.org/fhir/OperationDefinition/Patient-match"
    assert {"name": "match", "definition": definition} in patient["operation"]


def test_lookups_are_those_that_can_reach_the_possible_grade() -> None:
    """A candidate sharing none of the looked-up attributes scores at most the others'
    weights: name 0.25 + gender 0.05 + address 0.05 = 0.35 < 0.45, so a name needs no lookup
    of its own when the grade is 0.45; at 0.30 it does."""
    from fhir_server.operations import match_rules as rules

    def person(**more: Any) -> rules.Person:
        return rules.person({"resourceType": "Patient", **query("张", "三", **more)}, [NATIONAL])

    assert rules.lookups(person(), 0.45) == set()
    assert rules.lookups(person(), 0.20) == {"name"}
    # birth date 0.20 + name 0.25 = 0.45 without its lookup: needed; swapped 0.05 + 0.25 not
    assert rules.lookups(person(birthDate="1980-03-05"), 0.45) == {"birth-date"}
    # at 0.35: name 0.25 + gender 0.05 = 0.30 stays below, so no name lookup; with a swapped
    # birth date (0.05) it reaches 0.35, so the swapped date is looked up
    assert rules.lookups(person(birthDate="1980-03-05", gender="male"), 0.35) == {
        "birth-date", "birth-date-swapped"}  # fmt: skip


def test_lower_grades_bring_namesakes(client_with: Any) -> None:
    """match_possible = 0.25: the name alone makes a possible match (setting, README)."""
    c = client_with(match_possible=0.25)
    for r in PEOPLE[3:7]:
        assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
    found = graded(ask(c, query("张", "三")))
    assert found == [("zhang-a", 0.25, "possible"), ("zhang-b", 0.25, "possible"),
                     ("zhang-other", 0.25, "possible"), ("zhang-swapped", 0.25, "possible")]
