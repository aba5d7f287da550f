"""The printable referral slip ($referral-slip), referral statistics ($referral-stats) and the
demo consortium (fhir_server/referral/demo/), over the real app (slip, statistics: all backends)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services, seed
from fastapi.testclient import TestClient
from test_storage_contract import BACKENDS, open_backend

from fhir_server.app import build_app, open_services
from fhir_server.referral.demo import STATES, load_demo, load_if_empty
from fhir_server.services import Parts
from fhir_server.settings import Settings

CANON = "https://yilian.health/fhir"
SD = f"{CANON}/StructureDefinition"
CS = f"{CANON}/CodeSystem"

UP_TITLES = (
    "初步印象",
    "主要现病史（转出原因）",
    "主要既往史",
    "治疗经过",
    "主要检查结果",
    "下一步治疗方案及康复建议",
)


def org(oid: str, name: str, level: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": oid,
        "name": name,
        "extension": [
            {
                "url": f"{SD}/yl-org-level",
                "valueCoding": {"system": f"{CS}/yl-org-level", "code": level},
            }
        ],
    }


def role(rid: str, practitioner: str, organization: str, dept: str) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Practitioner",
            "id": f"p-{rid}",
            "name": [{"family": practitioner[0], "given": [practitioner[1:]]}],
        },
        {
            "resourceType": "PractitionerRole",
            "id": rid,
            "practitioner": {"reference": f"Practitioner/p-{rid}"},
            "organization": {"reference": f"Organization/{organization}"},
            "specialty": [{"text": dept}],
            "telecom": [{"system": "phone", "value": "0571-12345678"}],
        },
    ]


def referral(
    n: int,
    direction: str,
    target: str,
    requester: str,
    status: str,
    business: str,
    submitted: str | None,
    decided: str | None = None,
    authored: str | None = None,
    rtype: str = "outpatient",
) -> list[dict[str, Any]]:
    """A ServiceRequest and its referral Task in a given state with given milestones."""
    direction_ext = {
        "url": f"{SD}/yl-referral-direction",
        "valueCoding": {"system": f"{CS}/yl-referral-direction", "code": direction},
    }
    milestones = []
    for code, at in (("submitted", submitted), ("decided", decided)):
        if at:
            milestones.append(
                {
                    "url": f"{SD}/yl-milestones",
                    "extension": [
                        {
                            "url": "code",
                            "valueCoding": {"system": f"{CS}/yl-milestone", "code": code},
                        },
                        {"url": "dateTime", "valueDateTime": at},
                    ],
                }
            )
    sr = {
        "resourceType": "ServiceRequest",
        "id": f"sr-{n}",
        "extension": [direction_ext],
        "identifier": [{"system": f"{CANON}/sid/referral-number", "value": f"ZZ-TEST-{n:04d}"}],
        "status": "draft" if status == "draft" else "active",
        "intent": "order",
        "category": [{"coding": [{"system": f"{CS}/yl-referral-type", "code": rtype}]}],
        "subject": {"reference": "Patient/zhang"},
        "requester": {"reference": f"PractitionerRole/{requester}"},
        "performer": [{"reference": f"Organization/{target}"}],
        "authoredOn": authored or submitted or "2025-03-01T08:00:00+08:00",
    }
    task = {
        "resourceType": "Task",
        "id": f"task-{n}",
        "extension": [direction_ext, *milestones],
        "status": status,
        "businessStatus": {
            "coding": [{"system": f"{CS}/yl-referral-business-status", "code": business}]
        },
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": f"ServiceRequest/sr-{n}"},
        "for": {"reference": "Patient/zhang"},
        "authoredOn": authored or submitted or "2025-03-01T08:00:00+08:00",
        "owner": {"reference": f"Organization/{target}"},
    }
    return [sr, task]


def fixture_resources() -> list[dict[str, Any]]:
    """Three organizations, a patient, and ten referrals whose statistics are worked out by hand
    in the tests below (period 2025-03-01 .. 2025-04-30)."""
    out = [
        org("org-a", "湖滨街道社区卫生服务中心", "chc"),
        org("org-b", "杭州市第一人民医院", "3A"),
        org("org-c", "杭州市西湖区人民医院", "2A"),
        *role("role-a", "李建国", "org-a", "全科"),
        *role("role-b", "王晓东", "org-b", "心血管内科"),
        {
            "resourceType": "Patient",
            "id": "zhang",
            "identifier": [
                {"system": f"{CANON}/sid/health-record-number", "value": "330102000012345"}
            ],
            "name": [{"family": "张", "given": ["三丰"]}],
            "gender": "male",
            "birthDate": "1950-06-01",
            "address": [{"text": "浙江省杭州市上城区解放路100号"}],
            "telecom": [{"system": "phone", "value": "13800001111"}],
        },
    ]
    t = "2025-{}T{}:00+08:00".format
    out += referral(
        1,
        "up",
        "org-b",
        "role-a",
        "completed",
        "feedback-sent",
        t("03-03", "09:00"),
        t("03-03", "11:00"),
    )  # 2 h
    out += referral(
        2,
        "up",
        "org-b",
        "role-a",
        "rejected",
        "rejected",
        t("03-05", "08:00"),
        t("03-05", "18:00"),
        rtype="inpatient",
    )  # 10 h
    out += referral(
        3, "up", "org-c", "role-a", "accepted", "booked", t("03-10", "10:00"), t("03-10", "14:00")
    )  # 4 h
    out += referral(4, "up", "org-c", "role-a", "cancelled", "withdrawn", t("03-12", "09:00"))
    out += referral(
        5, "up", "org-b", "role-a", "failed", "no-show", t("04-02", "09:00"), t("04-02", "17:00")
    )  # 8 h, April
    out += referral(
        6, "up", "org-b", "role-a", "requested", "submitted", None, authored=t("03-20", "09:00")
    )  # counted by Task.authoredOn
    out += referral(
        7,
        "up",
        "org-b",
        "role-a",
        "in-progress",
        "arrived",
        t("03-21", "09:00"),
        t("03-21", "10:00"),
    )  # 1 h
    out += referral(
        8,
        "down",
        "org-a",
        "role-b",
        "accepted",
        "approved",
        t("03-15", "14:00"),
        t("03-15", "17:00"),
        rtype="rehabilitation",
    )  # 3 h
    out += referral(
        9,
        "down",
        "org-a",
        "role-b",
        "completed",
        "feedback-sent",
        t("02-20", "09:00"),
        t("02-20", "10:00"),
    )  # before the period
    out += referral(
        10, "up", "org-b", "role-a", "draft", "drafted", None, authored=t("03-02", "09:00")
    )  # never submitted
    return out


@pytest.fixture(params=BACKENDS)
def consortium(
    request: pytest.FixtureRequest, tmp_path: Path, parts: Parts
) -> Iterator[TestClient]:
    """Referrals in many states, with their milestones as given (history, so seeded: REST
    creates referral Tasks only as drafts), on every storage backend (test_storage_contract)."""
    client, close = open_backend(request.param, parts, tmp_path)
    try:
        seed(client, fixture_resources())
        yield client
    finally:
        close()


def parts(parameter: dict[str, Any]) -> dict[str, Any]:
    """{part name: value} of one direction parameter."""
    out = {}
    for p in parameter["part"]:
        out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out


def directions(parameters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: parts(p) for p in parameters if p["name"] in ("up", "down", "lateral")}


def stats(client: TestClient, query: str) -> dict[str, Any]:
    response = client.get(f"/fhir/ServiceRequest/$referral-stats?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Parameters"
    return body


# --- $referral-slip ---------------------------------------------------------------------------


def test_slip_html_has_sections_patient_number_organizations_and_qr(consortium: TestClient):
    response = consortium.get("/fhir/ServiceRequest/sr-1/$referral-slip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    for title in (
        *UP_TITLES,
        "姓名",
        "性别",
        "年龄",
        "档案编号",
        "转出机构",
        "转入机构",
        "接诊医生",
        "存根",
    ):
        assert title in page
    assert "双向转诊单（上转单）" in page and "转出单" in page
    assert "张三丰" in page and "ZZ-TEST-0001" in page and "330102000012345" in page
    assert "湖滨街道社区卫生服务中心" in page and "杭州市第一人民医院" in page
    assert "74岁" in page  # born 1950-06-01, referred 2025-03-03
    assert "<svg" in page and 'data-qr="Task/task-1"' in page


def test_slip_qr_carries_the_service_request_before_a_task_exists(consortium: TestClient):
    assert consortium.delete("/fhir/Task/task-10").status_code == 200  # a draft may go
    page = consortium.get("/fhir/ServiceRequest/sr-10/$referral-slip?format=html").text
    assert 'data-qr="ServiceRequest/sr-10"' in page


def test_slip_is_a_downward_slip_for_a_downward_referral(consortium: TestClient):
    page = consortium.get("/fhir/ServiceRequest/sr-8/$referral-slip").text
    assert "双向转诊单（下转单）" in page and "回转单" in page
    assert "上转单" not in page


def test_slip_shows_validity_and_sections_from_notes(consortium: TestClient):
    sr = consortium.get("/fhir/ServiceRequest/sr-1").json()
    sr["note"] = [{"text": "反复头晕2月"}, {"text": "主要既往史：高血压10年"}]
    sr["patientInstruction"] = "社区随访，监测血压"
    sr["reasonCode"] = [{"text": "高血压3级"}]
    assert consortium.put("/fhir/ServiceRequest/sr-1", json=sr).status_code == 200
    task = consortium.get("/fhir/Task/task-1").json()
    task["restriction"] = {"period": {"end": "2025-03-17T23:59:59+08:00"}}
    assert consortium.put("/fhir/Task/task-1", json=task).status_code == 200
    page = consortium.get("/fhir/ServiceRequest/sr-1/$referral-slip").text
    assert "2025-03-17" in page
    for text in ("反复头晕2月", "高血压10年", "社区随访，监测血压", "高血压3级"):
        assert text in page


def test_slip_pdf_embeds_the_font_and_its_text_is_chinese(consortium: TestClient):
    from pypdf import PdfReader

    response = consortium.get("/fhir/ServiceRequest/sr-1/$referral-slip?format=pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(response.content))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "张三丰" in text and "双向转诊单（上转单）" in text and "ZZ-TEST-0001" in text
    for title in UP_TITLES:
        assert title in text
    embedded = []
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            descriptor = font.get_object().get("/FontDescriptor")
            if descriptor is not None and "/FontFile2" in descriptor.get_object():
                embedded.append(str(font.get_object()["/BaseFont"]))
    assert any("WenQuanYi" in name for name in embedded)


def test_slip_of_an_unknown_request_or_format_is_an_error(consortium: TestClient):
    assert consortium.get("/fhir/ServiceRequest/nope/$referral-slip").status_code == 404
    bad = consortium.get("/fhir/ServiceRequest/sr-1/$referral-slip?format=docx")
    assert bad.status_code == 400


# --- $referral-stats --------------------------------------------------------------------------


def test_stats_count_each_status_rate_and_median_by_hand(consortium: TestClient):
    body = stats(consortium, "periodStart=2025-03-01&periodEnd=2025-04-30")
    by = directions(body["parameter"])
    # up: 1-7 (10 is a draft); accepted = 1, 3, 5, 7; decisions 1, 2, 4, 8, 10 h -> median 4
    assert by["up"] == {
        "submitted": 7,
        "accepted": 4,
        "rejected": 1,
        "cancelled": 1,
        "completed": 1,
        "noShow": 1,
        "inProgress": 1,
        "pending": 1,
        "acceptanceRate": 0.8,
        "medianHoursToDecision": 4.0,
    }
    # down: 8 only (9 is before the period)
    assert by["down"]["submitted"] == 1 and by["down"]["accepted"] == 1
    assert by["down"]["acceptanceRate"] == 1.0 and by["down"]["medianHoursToDecision"] == 3.0
    # lateral: nothing, so no rate and no median
    assert by["lateral"]["submitted"] == 0
    assert "acceptanceRate" not in by["lateral"] and "medianHoursToDecision" not in by["lateral"]


def test_stats_without_a_period_count_everything_submitted(consortium: TestClient):
    by = directions(stats(consortium, "")["parameter"])
    assert by["up"]["submitted"] == 7 and by["down"]["submitted"] == 2
    assert by["down"]["completed"] == 1 and by["down"]["medianHoursToDecision"] == 2.0


def test_stats_grouped_by_target(consortium: TestClient):
    body = stats(consortium, "periodStart=2025-03-01&periodEnd=2025-04-30&groupBy=target")
    groups = [p for p in body["parameter"] if p["name"] == "group"]
    keys = [g["part"][0]["valueString"] for g in groups]
    assert keys == ["Organization/org-a", "Organization/org-b", "Organization/org-c"]
    found = {g["part"][0]["valueString"]: g for g in groups}
    b = found["Organization/org-b"]
    assert b["part"][1] == {"name": "display", "valueString": "杭州市第一人民医院"}
    up_b = directions(b["part"])["up"]
    # 1, 2, 5, 6, 7; decisions 1, 2, 8, 10 h -> (2 + 8) / 2
    assert (up_b["submitted"], up_b["accepted"], up_b["rejected"], up_b["pending"]) == (5, 3, 1, 1)
    assert up_b["acceptanceRate"] == 0.75 and up_b["medianHoursToDecision"] == 5.0
    up_c = directions(found["Organization/org-c"]["part"])["up"]
    assert (up_c["submitted"], up_c["accepted"], up_c["cancelled"]) == (2, 1, 1)
    assert up_c["medianHoursToDecision"] == 4.0
    down_a = directions(found["Organization/org-a"]["part"])["down"]
    assert (
        down_a["submitted"] == 1
        and directions(found["Organization/org-a"]["part"])["up"]["submitted"] == 0
    )


def test_stats_grouped_by_month(consortium: TestClient):
    body = stats(consortium, "periodStart=2025-03-01&periodEnd=2025-04-30&groupBy=month")
    groups = {
        g["part"][0]["valueString"]: directions(g["part"])
        for g in body["parameter"]
        if g["name"] == "group"
    }
    assert list(groups) == ["2025-03", "2025-04"]
    march, april = groups["2025-03"]["up"], groups["2025-04"]["up"]
    # March up: 1, 2, 3, 4, 6, 7; decisions 1, 2, 4, 10 h -> (2 + 4) / 2
    assert (march["submitted"], march["accepted"], march["rejected"]) == (6, 3, 1)
    assert march["acceptanceRate"] == 0.75 and march["medianHoursToDecision"] == 3.0
    assert groups["2025-03"]["down"]["submitted"] == 1
    assert (april["submitted"], april["noShow"], april["medianHoursToDecision"]) == (1, 1, 8.0)


def test_stats_filtered_by_organization_and_grouped_by_type(consortium: TestClient):
    by = directions(stats(consortium, "organization=Organization/org-c")["parameter"])
    assert by["up"]["submitted"] == 2 and by["down"]["submitted"] == 0
    body = stats(consortium, "periodStart=2025-03-01&periodEnd=2025-04-30&groupBy=type")
    groups = {
        g["part"][0]["valueString"]: directions(g["part"])
        for g in body["parameter"]
        if g["name"] == "group"
    }
    assert groups["inpatient"]["up"]["rejected"] == 1
    assert groups["rehabilitation"]["down"]["submitted"] == 1
    assert groups["outpatient"]["up"]["submitted"] == 6


def test_stats_reject_an_unknown_grouping(consortium: TestClient):
    response = consortium.get("/fhir/ServiceRequest/$referral-stats?groupBy=colour")
    assert response.status_code == 400


# --- the demo consortium ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, parts: Parts
) -> Iterator[tuple[TestClient, Any]]:
    """The demo loaded once (as on 2025-03-10) for the tests that read it."""
    services = make_services(tmp_path_factory.mktemp("demo") / "fhir.db", parts)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c, load_demo(services, today=date(2025, 3, 10))


def test_demo_loads_hospitals_patients_and_every_business_state(demo: tuple[TestClient, Any]):
    client, demo = demo
    services = client.app.state.services  # type: ignore[attr-defined]
    session = services.store.reader()

    def count(sql: str) -> int:
        return int(session.query(sql)[0][0])

    hospitals = count(
        "SELECT count(*) FROM resource WHERE type = 'Organization' AND deleted = 0 "
        f"AND json_extract(json, '$.extension[0].url') = '{SD}/yl-org-level'"
    )
    assert hospitals == 7 and demo.organizations == 8
    assert count("SELECT count(*) FROM resource WHERE type = 'Patient'") == 50
    assert count("SELECT count(*) FROM resource WHERE type = 'OrganizationAffiliation'") == 7
    assert count("SELECT count(*) FROM resource WHERE type = 'Slot'") >= 100
    rows = session.query(
        "SELECT DISTINCT json_extract(json, '$.businessStatus.coding[0].code') FROM resource "
        "WHERE type = 'Task' AND deleted = 0"
    )
    assert set(STATES) <= {r[0] for r in rows}
    names = client.get("/fhir/Patient?_count=1").json()["entry"][0]["resource"]["name"][0]
    assert names["text"] == names["family"] + names["given"][0]
    # the demo's referrals print, in both formats
    page = client.get("/fhir/ServiceRequest/ref-001/$referral-slip").text
    assert "双向转诊单" in page and "<svg" in page
    pdf = client.get("/fhir/ServiceRequest/ref-001/$referral-slip?format=pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    up = directions(stats(client, "")["parameter"])["up"]
    assert up["submitted"] >= 17 and up["rejected"] >= 2


def test_demo_resident_ids_are_valid_gb11643_numbers(demo: tuple[TestClient, Any]):
    """`$match` ignores a 居民身份证号 whose check character is wrong, so the demo's must be right:
    ISO 7064 MOD 11-2 (weights 2^(17-i) mod 11, check = "10X98765432"[sum mod 11]), the birth
    date in digits 7-14 and the sequence code odd for men, even for women (GB 11643-1999)."""
    client = demo[0]
    patients = client.get("/fhir/Patient?_count=100").json()["entry"]
    assert len(patients) == 50
    for entry in patients:
        patient = entry["resource"]
        ids = patient["identifier"]
        (number,) = [i["value"] for i in ids if i["system"].endswith("resident-id")]
        total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(number[:17]))
        assert number[17] == "10X98765432"[total % 11], number
        assert number[6:14] == patient["birthDate"].replace("-", ""), number
        assert int(number[16]) % 2 == (patient["gender"] == "male"), number


def test_demo_is_deterministic_and_loads_only_into_an_empty_database(tmp_path: Path, parts: Parts):
    def load(settings: Settings, only_if_empty: bool) -> Any:
        services = open_services(settings, parts)
        try:
            return load_if_empty(services) if only_if_empty else load_demo(services)
        finally:
            services.close()

    first = Settings(database=tmp_path / "a.db")
    loaded = load(first, only_if_empty=True)
    assert loaded is not None and loaded.patients == 50
    assert load(first, only_if_empty=True) is None  # Patients present: left alone
    second = Settings(database=tmp_path / "b.db")
    assert load(second, only_if_empty=False) is not None

    from fhir_server.storage.sqlite import SqliteStore

    def patients(settings: Settings) -> list[Any]:
        store = SqliteStore(settings.database)
        try:
            return store.reader().query(
                "SELECT id, json_extract(json, '$.name'), json_extract(json, '$.identifier') "
                "FROM resource WHERE type = 'Patient' ORDER BY id"
            )
        finally:
            store.close()

    assert patients(first) == patients(second)
