"""Search as the REST core needs it (http://hl7.org/fhir/R4/search.html): _id, _lastUpdated,
token, reference, string, date, paging, and lenient/strict handling of unknown parameters."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def put(client: TestClient, resource: dict[str, Any]) -> None:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def seed(client: TestClient) -> None:
    put(client, {"resourceType": "Organization", "id": "tertiary", "name": "省人民医院"})
    for i, (family, born) in enumerate(
        [("王", "1950-01-02"), ("Wang", "1980-06-15"), ("Müller", "2001-12-31")]
    ):
        put(
            client,
            {
                "resourceType": "Patient",
                "id": f"p{i}",
                "identifier": [{"system": "urn:mrn", "value": f"M{i}"}],
                "name": [{"family": family, "given": ["Li"]}],
                "birthDate": born,
                "gender": "female" if i % 2 else "male",
                "managingOrganization": {"reference": "Organization/tertiary"},
            },
        )
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/p0"},
            "effectiveDateTime": "2024-03-01T08:00:00+08:00",
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        },
    )


def test_token_search_by_system_and_code(client: TestClient) -> None:
    seed(client)
    assert ids(client.get("/fhir/Patient?identifier=urn:mrn|M1").json()) == ["p1"]
    assert ids(client.get("/fhir/Patient?identifier=M2").json()) == ["p2"]
    assert ids(client.get("/fhir/Patient?identifier=other|M2").json()) == []
    assert sorted(ids(client.get("/fhir/Patient?identifier=urn:mrn|").json())) == ["p0", "p1", "p2"]
    assert ids(client.get("/fhir/Patient?gender=female").json()) == ["p1"]
    assert sorted(ids(client.get("/fhir/Patient?gender:not=female").json())) == ["p0", "p2"]
    assert sorted(ids(client.get("/fhir/Patient?identifier=M0,M2").json())) == ["p0", "p2"]


def test_id_and_last_updated(client: TestClient) -> None:
    seed(client)
    assert sorted(ids(client.get("/fhir/Patient?_id=p0,p2").json())) == ["p0", "p2"]
    assert client.get("/fhir/Patient?_lastUpdated=gt2000-01-01").json()["total"] == 3
    assert client.get("/fhir/Patient?_lastUpdated=lt2000-01-01").json()["total"] == 0


def test_reference_search_forms(client: TestClient) -> None:
    seed(client)
    for value in ("Patient/p0", "p0", "http://testserver/fhir/Patient/p0"):
        assert ids(client.get(f"/fhir/Observation?subject={value}").json()) == ["o1"], value
    assert ids(client.get("/fhir/Observation?subject:Patient=p0").json()) == ["o1"]
    assert ids(client.get("/fhir/Observation?patient=p1").json()) == []
    got = client.get("/fhir/Patient?organization=Organization/tertiary").json()
    assert got["total"] == 3


def test_string_search_is_prefix_case_and_accent_insensitive(client: TestClient) -> None:
    seed(client)
    # p1 is Wang, and p0 王, whose pinyin is wang (issue 15: names are found by pinyin too)
    assert sorted(ids(client.get("/fhir/Patient?family=wan").json())) == ["p0", "p1"]
    assert ids(client.get("/fhir/Patient?family=muller").json()) == ["p2"]
    assert ids(client.get("/fhir/Patient?family=王").json()) == ["p0"]
    assert ids(client.get("/fhir/Patient?family:exact=Wan").json()) == []
    assert ids(client.get("/fhir/Patient?family:exact=Wang").json()) == ["p1"]
    assert ids(client.get("/fhir/Patient?family:contains=ll").json()) == ["p2"]


def test_date_prefixes(client: TestClient) -> None:
    seed(client)
    assert ids(client.get("/fhir/Patient?birthdate=1980").json()) == ["p1"]
    assert ids(client.get("/fhir/Patient?birthdate=1980-06").json()) == ["p1"]
    assert sorted(ids(client.get("/fhir/Patient?birthdate=ge1980-06-15").json())) == ["p1", "p2"]
    assert ids(client.get("/fhir/Patient?birthdate=lt1980-06-15").json()) == ["p0"]
    assert ids(client.get("/fhir/Patient?birthdate=ge1960&birthdate=le1990").json()) == ["p1"]
    # 08:00+08:00 is 00:00 UTC on 1 March
    assert ids(client.get("/fhir/Observation?date=2024-03-01").json()) == ["o1"]
    assert client.get("/fhir/Patient?birthdate=notadate").status_code == 400


def test_quantity_search(client: TestClient) -> None:
    seed(client)
    assert ids(client.get("/fhir/Observation?value-quantity=72").json()) == ["o1"]
    q = "gt70|http://unitsofmeasure.org|/min"
    assert ids(client.get(f"/fhir/Observation?value-quantity={q}").json()) == ["o1"]
    assert ids(client.get("/fhir/Observation?value-quantity=lt70").json()) == []


def follow(client: TestClient, url: str, relation: str) -> tuple[list[str], list[str]]:
    """Walk `relation` links from url; returns the ids per page (flattened) and the page urls."""
    seen: list[str] = []
    urls = []
    while url:
        urls.append(url)
        page = client.get(url).json()
        assert page["resourceType"] == "Bundle", page
        seen += ids(page)
        nxt = [lk["url"] for lk in page["link"] if lk["relation"] == relation]
        url = nxt[0].replace("http://testserver", "") if nxt else ""
    return seen, urls


def test_paging_links_cover_all_results_once(client: TestClient) -> None:
    for i in range(7):
        put(client, {"resourceType": "Patient", "id": f"x{i}", "active": True})
    seen, urls = follow(client, "/fhir/Patient?active=true&_count=3", "next")
    assert seen == [f"x{i}" for i in range(7)] and len(urls) == 3
    # and back again from the last page
    back, _ = follow(client, urls[-1], "previous")
    assert back == ["x6", "x3", "x4", "x5", "x0", "x1", "x2"]


def test_sorted_paging_stays_correct_while_writing(client: TestClient) -> None:
    dates = ["1990-01-01", "1980-01-01", "1980-01-01", "2000-01-01", "1970-01-01", None]
    for i, born in enumerate(dates):
        put(
            client,
            {
                "resourceType": "Patient",
                "id": f"s{i}",
                "active": True,
                **({"birthDate": born} if born else {}),
            },
        )
    page1 = client.get("/fhir/Patient?active=true&_sort=-birthdate&_count=2").json()
    assert ids(page1) == ["s3", "s0"]
    # a write before the cursor does not shift the next page
    put(client, {"resourceType": "Patient", "id": "s9", "active": True, "birthDate": "2010-01-01"})
    nxt = next(lk["url"] for lk in page1["link"] if lk["relation"] == "next")
    rest, _ = follow(client, nxt.replace("http://testserver", ""), "next")
    assert rest == ["s1", "s2", "s4", "s5"]


def test_bad_page_cursor_is_400(client: TestClient) -> None:
    assert client.get("/fhir/Patient?_page=garbage").status_code == 400


def test_sort_descending(client: TestClient) -> None:
    seed(client)
    got = ids(client.get("/fhir/Patient?_sort=-birthdate").json())
    assert got == ["p2", "p1", "p0"]


def test_summary_count_and_total_none(client: TestClient) -> None:
    seed(client)
    body = client.get("/fhir/Patient?_summary=count").json()
    assert body["total"] == 3 and body["entry"] == []
    assert "total" not in client.get("/fhir/Patient?_total=none").json()


def test_unknown_parameter_lenient_warns_and_strict_fails(client: TestClient) -> None:
    seed(client)
    body = client.get("/fhir/Patient?nonsense=1").json()
    assert body["total"] == 3
    outcome = body["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["issue"][0]["expression"] == ["nonsense"]
    self_link = next(lk["url"] for lk in body["link"] if lk["relation"] == "self")
    assert "nonsense" not in self_link
    r = client.get("/fhir/Patient?nonsense=1", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


def test_include_and_revinclude(client: TestClient) -> None:
    seed(client)
    body = client.get("/fhir/Observation?_include=Observation:subject").json()
    assert ids(body) == ["o1"] and ids(body, "include") == ["p0"]
    body = client.get("/fhir/Patient?_id=p0&_revinclude=Observation:subject").json()
    assert ids(body, "include") == ["o1"]


def test_chain_and_has(client: TestClient) -> None:
    seed(client)
    assert ids(client.get("/fhir/Observation?subject:Patient.family=王").json()) == ["o1"]
    # 王 reads wang (pinyin search, issue 15); Müller (p2) has no Observation
    assert ids(client.get("/fhir/Observation?subject:Patient.family=wang").json()) == ["o1"]
    assert ids(client.get("/fhir/Observation?subject:Patient.family=muller").json()) == []
    got = client.get("/fhir/Patient?_has:Observation:subject:code=8867-4").json()
    assert ids(got) == ["p0"]


def test_post_search_equals_get(client: TestClient) -> None:
    seed(client)
    r = client.post("/fhir/Patient/_search", data={"gender": "male"})
    assert sorted(ids(r.json())) == ["p0", "p2"]


def test_system_search_with_type(client: TestClient) -> None:
    seed(client)
    body = client.get("/fhir?_type=Organization,Observation").json()
    assert sorted(ids(body)) == ["o1", "tertiary"]


def test_compartment_search(client: TestClient) -> None:
    seed(client)
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "o2",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
        },
    )
    assert ids(client.get("/fhir/Patient/p0/Observation").json()) == ["o1"]
    assert ids(client.get("/fhir/Patient/p1/Observation?code=8867-4").json()) == []
    assert ids(client.get("/fhir/Patient/p1/Patient").json()) == ["p1"]
    assert client.get("/fhir/Patient/p1/_history").status_code == 200
    assert client.get("/fhir/Patient/p1/Organization").status_code == 400


def test_chinese_names_found_as_typed(client: TestClient) -> None:
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "zh",
            "name": [{"family": "欧阳", "given": ["娜娜"]}],
            "address": [{"city": "杭州市", "district": "西湖区", "line": ["文三路 100 号"]}],
        },
    )
    for typed in ("欧", "欧阳", "欧阳娜", "欧阳娜娜"):
        assert ids(client.get(f"/fhir/Patient?name={typed}").json()) == ["zh"], typed
    assert ids(client.get("/fhir/Patient?given=娜").json()) == ["zh"]
    assert ids(client.get("/fhir/Patient?address=杭州").json()) == ["zh"]
    assert ids(client.get("/fhir/Patient?address-city=杭州市").json()) == ["zh"]
    assert ids(client.get("/fhir/Patient?name=阳娜").json()) == []


def test_text_and_content_full_text(client: TestClient) -> None:
    put(
        client,
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": "Patient/x"},
            "code": {"text": "2型糖尿病 (Type 2 diabetes)"},
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">高血压 &amp; Diabetes</div>',
            },
        },
    )
    put(
        client,
        {
            "resourceType": "Condition",
            "id": "c2",
            "subject": {"reference": "Patient/x"},
            "code": {"text": "Asthma"},
        },
    )
    assert ids(client.get("/fhir/Condition?_text=高血压").json()) == ["c1"]
    assert ids(client.get("/fhir/Condition?_text=diabetes").json()) == ["c1"]
    assert ids(client.get("/fhir/Condition?_content=糖尿").json()) == ["c1"]
    assert ids(client.get("/fhir/Condition?_content=asth").json()) == ["c2"]
    assert sorted(ids(client.get("/fhir/Condition?_content=asthma,type 2").json())) == ["c1", "c2"]
    client.put(
        "/fhir/Condition/c2",
        json={
            "resourceType": "Condition",
            "id": "c2",
            "subject": {"reference": "Patient/x"},
            "code": {"text": "Eczema"},
        },
    )
    assert ids(client.get("/fhir/Condition?_content=asthma").json()) == []


def test_content_leaves_out_base64_data(client: TestClient) -> None:
    """An attachment's `data` is base64 (datatypes.html#base64Binary), not text a user types:
    `_content` finds the title, not the encoded bytes ("Hello world" in base64, RFC 4648)."""
    put(
        client,
        {
            "resourceType": "DocumentReference",
            "id": "d1",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "title": "Discharge note",
                                        "data": "SGVsbG8gd29ybGQ="}}],
        },
    )  # fmt: skip
    assert ids(client.get("/fhir/DocumentReference?_content=discharge").json()) == ["d1"]
    assert ids(client.get("/fhir/DocumentReference?_content=SGVsbG8g").json()) == []


def test_list_identifier_and_of_type_modifiers(client: TestClient) -> None:
    seed(client)
    put(
        client,
        {
            "resourceType": "List",
            "id": "ward",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/p1"}}, {"item": {"reference": "Patient/p2"}}],
        },
    )
    assert sorted(ids(client.get("/fhir/Patient?_list=ward").json())) == ["p1", "p2"]
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "typed",
            "identifier": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                    "system": "urn:h",
                    "value": "77",
                }
            ],
        },
    )
    of_type = "http://terminology.hl7.org/CodeSystem/v2-0203|MR|77"
    assert ids(client.get(f"/fhir/Patient?identifier:of-type={of_type}").json()) == ["typed"]
    assert ids(client.get("/fhir/Patient?identifier:of-type=x|MR|77").json()) == []
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "by-ident",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"identifier": {"system": "urn:mrn", "value": "M9"}},
        },
    )
    assert ids(client.get("/fhir/Observation?subject:identifier=urn:mrn|M9").json()) == ["by-ident"]


def test_quantity_compared_in_canonical_ucum_units(client: TestClient) -> None:
    ucum = "http://unitsofmeasure.org"
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "glu",
            "status": "final",
            "code": {"text": "glucose"},
            "valueQuantity": {"value": 90, "unit": "mg/dL", "system": ucum, "code": "mg/dL"},
        },
    )
    # 90 mg/dL = 0.9 g/L = 900 mg/L
    assert ids(client.get(f"/fhir/Observation?value-quantity=0.9|{ucum}|g/L").json()) == ["glu"]
    assert ids(client.get(f"/fhir/Observation?value-quantity=900|{ucum}|mg/L").json()) == ["glu"]
    assert ids(client.get(f"/fhir/Observation?value-quantity=gt1|{ucum}|g/L").json()) == []
    assert ids(client.get(f"/fhir/Observation?value-quantity=90|{ucum}|mg/dL").json()) == ["glu"]
    assert ids(client.get("/fhir/Observation?value-quantity=90||mg/dL").json()) == ["glu"]


def test_sort_on_multi_valued_parameter_uses_first_value_in_sort_order(
    client: TestClient,
) -> None:
    for rid, given in [
        ("g1", ["b", "y"]),
        ("g2", ["c"]),
        ("g3", ["a", "d"]),
        ("g4", []),
        ("g5", ["x"]),
    ]:
        name = [{"family": "F", "given": given}] if given else [{"family": "F"}]
        put(client, {"resourceType": "Patient", "id": rid, "active": True, "name": name})
    # ascending by each patient's smallest given name, descending by its largest; none last
    asc, _ = follow(client, "/fhir/Patient?active=true&_sort=given&_count=2", "next")
    assert asc == ["g3", "g1", "g2", "g5", "g4"]
    desc, urls = follow(client, "/fhir/Patient?active=true&_sort=-given&_count=2", "next")
    assert desc == ["g1", "g5", "g3", "g2", "g4"]
    # previous links walk the same order back
    back, _ = follow(client, urls[-1], "previous")
    assert back == ["g4", "g3", "g2", "g1", "g5"]


def test_sorted_pages_are_the_same_when_rows_are_checked_one_by_one(
    client: TestClient, monkeypatch: Any
) -> None:
    from fhir_server.storage.sqlite import search as search_module

    for i, born in enumerate(["1990", "1980", "2000", "1970", "1985", "1995", "1975"]):
        put(client, {"resourceType": "Patient", "id": f"w{i}", "gender": "male" if i % 3 else
                     "female", "active": True, "birthDate": f"{born}-01-01"})
    url = "/fhir/Patient?active=true&gender=male&_sort=-birthdate&_count=2"
    listed, _ = follow(client, url, "next")
    monkeypatch.setattr(search_module, "WALK_BY_ROW", 0)
    checked, _ = follow(client, url, "next")
    assert listed == checked == ["w2", "w5", "w4", "w1"]
