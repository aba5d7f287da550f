"""Pinyin search (issue 15): Chinese names are found by their pinyin, spaced or not, and by
its initials, as a registration desk types them; surnames are read as surnames.

Expectations are the readings a Chinese speaker gives these names (《百家姓》 for surnames:
单 shàn, 曾 zēng, 解 xiè, 仇 qiú as surnames, though dān, céng, jiě, chóu as words)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def _person(rtype: str, rid: str, family: str, given: list[str]) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, "name": [{"family": family, "given": given}]}


PEOPLE = [
    _person("Patient", "zhangsan", "张", ["三"]),
    _person("Patient", "zhangsanfeng", "张", ["三丰"]),
    _person("Patient", "shan", "单", ["田芳"]),  # shàn tián fāng, never dān
    _person("Patient", "zeng", "曾", ["国藩"]),  # zēng guó fān, never céng
    _person("Patient", "xie", "解", ["缙"]),  # xiè jìn, never jiě
    _person("Patient", "qiu", "仇", ["英"]),  # qiú yīng, never chóu
    _person("Patient", "ouyang", "欧阳", ["娜娜"]),  # compound surname ōu yáng
    _person("Patient", "smith", "Smith", ["John"]),
    {"resourceType": "Patient", "id": "textonly", "name": [{"text": "李四"}]},
    _person("Practitioner", "drwang", "王", ["医生"]),
    {**_person("RelatedPerson", "mother", "刘", ["芳"]),
     "patient": {"reference": "Patient/zhangsan"}},
]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, parts: Any) -> Any:
    from conftest import make_services

    from fhir_server.app import build_app

    services = make_services(tmp_path_factory.mktemp("pinyin") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        for r in PEOPLE:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        yield c


def found(c: TestClient, url: str, **params: str) -> set[str]:
    r = c.get(url, params=params)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])
            if e["search"]["mode"] == "match"}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zhangsan", {"zhangsan", "zhangsanfeng"}),  # a prefix, as every string search
        ("zhang san", {"zhangsan", "zhangsanfeng"}),
        ("Zhang San", {"zhangsan", "zhangsanfeng"}),
        ("zhangsanfeng", {"zhangsanfeng"}),
        ("zhang san feng", {"zhangsanfeng"}),
        ("zhang sanfeng", {"zhangsanfeng"}),
        ("zs", {"zhangsan", "zhangsanfeng"}),
        ("zsf", {"zhangsanfeng"}),
        ("zhang", {"zhangsan", "zhangsanfeng"}),
        ("san", {"zhangsan", "zhangsanfeng"}),  # the given name alone, as name=三 finds it
        ("shantianfang", {"shan"}),
        ("stf", {"shan"}),
        ("dantianfang", set()),
        ("zengguofan", {"zeng"}),
        ("cengguofan", set()),
        ("xiejin", {"xie"}),
        ("jiejin", set()),
        ("qiuying", {"qiu"}),
        ("chouying", set()),
        ("ouyang nana", {"ouyang"}),
        ("oynn", {"ouyang"}),
        ("lisi", {"textonly"}),  # HumanName.text alone: first character is the surname
        ("john", {"smith"}),  # Latin names as before
        ("张三", {"zhangsan", "zhangsanfeng"}),
    ],
)
def test_patient_name_by_pinyin(desk: TestClient, value: str, expected: set[str]) -> None:
    assert found(desk, "/fhir/Patient", name=value) == expected


def test_family_and_given_read_their_own_part(desk: TestClient) -> None:
    assert found(desk, "/fhir/Patient", family="shan") == {"shan"}
    assert found(desk, "/fhir/Patient", family="dan") == set()
    assert found(desk, "/fhir/Patient", family="zeng") == {"zeng"}
    assert found(desk, "/fhir/Patient", family="ouyang") == {"ouyang"}
    assert found(desk, "/fhir/Patient", given="guofan") == {"zeng"}
    assert found(desk, "/fhir/Patient", given="sf") == {"zhangsanfeng"}
    # a family name is not found by the given name's pinyin, nor the reverse
    assert found(desk, "/fhir/Patient", family="san") == set()
    assert found(desk, "/fhir/Patient", given="zhang") == set()


def test_practitioner_and_related_person_names(desk: TestClient) -> None:
    assert found(desk, "/fhir/Practitioner", name="wangyisheng") == {"drwang"}
    assert found(desk, "/fhir/Practitioner", family="wang") == {"drwang"}
    assert found(desk, "/fhir/Practitioner", given="ys") == {"drwang"}
    assert found(desk, "/fhir/RelatedPerson", name="liu fang") == {"mother"}
    assert found(desk, "/fhir/RelatedPerson", name="lf") == {"mother"}


def test_exact_and_contains_do_not_read_pinyin(desk: TestClient) -> None:
    """:exact compares the stored string (search.html#string): zhangsan is not 张三."""
    assert found(desk, "/fhir/Patient", **{"name:exact": "zhangsan"}) == set()
    assert found(desk, "/fhir/Patient", **{"name:exact": "张"}) == {"zhangsan", "zhangsanfeng"}
    assert found(desk, "/fhir/Patient", **{"name:contains": "ngsa"}) == set()


def test_chained_and_sorted_searches(desk: TestClient) -> None:
    assert found(desk, "/fhir/RelatedPerson", **{"patient.name": "zs"}) == {"mother"}
    # sorting by family sorts the names as written, pinyin rows never taking part
    r = desk.get("/fhir/Patient", params={"_sort": "family", "_count": "100"})
    families = [e["resource"]["name"][0].get("family") for e in r.json()["entry"]]
    written = [f for f in families if f]
    assert written == sorted(written)


def test_pinyin_rows_follow_updates(desk: TestClient) -> None:
    renamed = _person("Patient", "renamed", "单", ["雄信"])
    assert desk.put("/fhir/Patient/renamed", json=renamed).status_code == 201
    assert found(desk, "/fhir/Patient", name="shanxiongxin") == {"renamed"}
    renamed["name"] = [{"family": "曾", "given": ["雄信"]}]
    assert desk.put("/fhir/Patient/renamed", json=renamed).status_code == 200
    assert found(desk, "/fhir/Patient", name="shanxiongxin") == set()
    assert found(desk, "/fhir/Patient", name="zengxiongxin") == {"renamed"}
    assert desk.delete("/fhir/Patient/renamed").status_code == 200
    assert found(desk, "/fhir/Patient", name="zengxiongxin") == set()
