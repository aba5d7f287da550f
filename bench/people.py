"""A synthetic population of Chinese patients for the $match benchmark: names from common
surnames (polyphonic ones among them) and given-name characters, birth dates, valid national
IDs (GB 11643), mobile numbers, addresses and a hospital record number; deterministic."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from fhir_server.model.resident_id import check_character

NATIONAL = "https://yilian.health/fhir/sid/resident-id"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤单解仇"  # noqa: E501
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国立新宇浩然子轩梓涵一诺欣怡雨桐"  # noqa: E501
DISTRICTS = ["上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区", "临平区", "钱塘区"]


def person(rng: random.Random, n: int) -> dict[str, Any]:
    family = rng.choice(SURNAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(90 * 365))
    gender = rng.choice(("male", "female"))
    sequence = rng.randrange(500) * 2 + (1 if gender == "male" else 0)
    first17 = f"330106{born:%Y%m%d}{sequence:03d}"
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": NATIONAL, "value": first17 + check_character(first17)},
            {"system": "urn:oid:1.2.156.0.1", "value": f"MRN{n:08d}"},
        ],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": born.isoformat(),
        "telecom": [{"system": "phone", "value": f"13{rng.randrange(10**9):09d}"}],
        "address": [{"city": "杭州市", "district": rng.choice(DISTRICTS),
                     "line": [f"文三路{rng.randrange(1, 500)}号"]}],  # fmt: skip
    }


def population(count: int, seed: int = 15) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [person(rng, n) for n in range(count)]


def queries(people: list[dict[str, Any]], count: int, seed: int = 16) -> list[dict[str, Any]]:
    """What a registration desk asks: a known person typed with characters or pinyin, with or
    without the national ID, sometimes with day and month swapped, and strangers."""
    from fhir_server.search.pinyin import given_readings, surname_readings

    rng = random.Random(seed)
    out = []
    for i in range(count):
        p = rng.choice(people)
        name = p["name"][0]
        q: dict[str, Any] = {"resourceType": "Patient", "gender": p["gender"],
                             "birthDate": p["birthDate"]}  # fmt: skip
        kind = i % 4
        if kind == 0:  # characters and the national ID
            q["name"] = [name]
            q["identifier"] = [p["identifier"][0]]
        elif kind == 1:  # pinyin and the phone
            family = "".join(surname_readings(name["family"])[0])
            given = "".join(given_readings(name["given"][0])[0])
            q["name"] = [{"family": family.title(), "given": [given.title()]}]
            q["telecom"] = p["telecom"]
        elif kind == 2:  # characters, day and month swapped
            q["name"] = [name]
            y, m, d = p["birthDate"].split("-")
            q["birthDate"] = f"{y}-{d}-{m}" if int(d) <= 12 else p["birthDate"]
        else:  # a stranger with a common name
            q["name"] = [{"family": "王", "given": ["伟"]}]
            q["birthDate"] = "1901-01-01"
        out.append(q)
    return out
