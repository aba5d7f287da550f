"""Remote consultation beyond the transitions: concurrent decisions over real connections,
$find-experts and $consultation-stats against hand-worked expectations, the opinion PDF's
Chinese text, and message threads with read receipts."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from test_consultation import (
    CS,
    build,
    create,
    expert,
    get,
    ok,
    op,
    ref,
    request,
    text,
)

Json = dict[str, Any]


def test_concurrent_accept_and_decline_one_wins(live_server: str) -> None:
    """Twenty rounds: the invited expert's accept and decline race on real connections;
    exactly one succeeds each time and the other gets 409 (the write transactions are
    serialised; the second finds the expert has answered)."""
    with httpx.Client(base_url=live_server.removesuffix("/fhir"), timeout=30) as c:
        world = build(c)
        for _ in range(20):
            task, _ = request(c, world, expert(world))
            bodies = [
                ("$accept", [expert(world)]),
                ("$decline", [expert(world), text("reason", "没时间")]),
            ]

            def go(item: tuple[str, list[Json]], task: str = task) -> int:
                name, params = item
                with httpx.Client(base_url=live_server, timeout=30) as own:
                    body = {"resourceType": "Parameters", "parameter": params}
                    return own.post(f"/Task/{task}/{name}", json=body).status_code

            with ThreadPoolExecutor(2) as pool:
                codes = sorted(pool.map(go, bodies))
            assert codes == [200, 409], codes
            final = c.get(f"/fhir/Task/{task}").json()
            assert final["businessStatus"]["coding"][0]["code"] in ("accepted", "declined")
            provenance = c.get(f"/fhir/Provenance?target=Task/{task}").json()
            assert provenance["total"] == 2  # request + the one decision


def test_concurrent_bookings_of_one_slot_one_wins(live_server: str) -> None:
    with httpx.Client(base_url=live_server.removesuffix("/fhir"), timeout=30) as c:
        world = build(c)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        slot = create(c, {"resourceType": "Slot", "schedule": {"reference": world["schedule"]},
                          "status": "free", "start": start.isoformat(),
                          "end": (start + timedelta(minutes=30)).isoformat()})  # fmt: skip
        tasks = [request(c, world, expert(world))[0] for _ in range(4)]
        for t in tasks:
            ok(op(c, f"Task/{t}/$accept", expert(world)))

        def go(task: str) -> int:
            with httpx.Client(base_url=live_server, timeout=30) as own:
                body = {"resourceType": "Parameters",
                        "parameter": [ref("slot", f"Slot/{slot['id']}")]}  # fmt: skip
                return own.post(f"/Task/{task}/$schedule", json=body).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(go, tasks))
        assert codes == [200, 409, 409, 409], codes


def slots(client: Any, schedule: str, starts: list[datetime], status: str = "free") -> None:
    for s in starts:
        create(client, {"resourceType": "Slot", "schedule": {"reference": schedule},
                        "status": status, "start": s.isoformat(),
                        "end": (s + timedelta(minutes=30)).isoformat()})  # fmt: skip


def test_find_experts_ranks_by_free_slots_in_the_window(client: TestClient) -> None:
    """Window [T, T+2d). Expert A (cardiology, hospital 1): 3 free slots in the window, 1 busy,
    1 free after it -> 3. Expert B (cardiology, hospital 1): 3 free in the window, the first
    earlier than A's -> 3, ranked before A (tie broken by the earlier first free slot).
    Expert C (cardiology, hospital 2): 1 free -> 1. Expert D (neurology): not a match.
    Expert E (cardiology, hospital 1, inactive): not a match. So: B, A, C; and with
    organization=hospital 1: B, A."""
    t = datetime(2031, 6, 1, 0, 0, tzinfo=UTC)
    h1 = create(client, {"resourceType": "Organization", "name": "一院"})
    h2 = create(client, {"resourceType": "Organization", "name": "二院"})

    def expert_with(org: Json, specialty: str, active: bool = True) -> str:
        r = create(
            client,
            {
                "resourceType": "PractitionerRole",
                "active": active,
                "organization": {"reference": f"Organization/{org['id']}"},
                "specialty": [{"coding": [{"system": "urn:test", "code": specialty}]}],
            },
        )
        return f"PractitionerRole/{r['id']}"

    def schedule_of(role: str) -> str:
        s = create(
            client, {"resourceType": "Schedule", "active": True, "actor": [{"reference": role}]}
        )
        return f"Schedule/{s['id']}"

    a, b, c = expert_with(h1, "cardio"), expert_with(h1, "cardio"), expert_with(h2, "cardio")
    d, e = expert_with(h1, "neuro"), expert_with(h1, "cardio", active=False)
    sa, sb, sc, sd, se = (schedule_of(x) for x in (a, b, c, d, e))
    h = timedelta(hours=1)
    slots(client, sa, [t + 2 * h, t + 5 * h, t + 30 * h])
    slots(client, sa, [t + 3 * h], "busy")
    slots(client, sa, [t + 50 * h])  # after the window
    slots(client, sb, [t + 1 * h, t + 6 * h, t + 40 * h])
    slots(client, sc, [t + 4 * h])
    slots(client, sd, [t + h, t + 2 * h, t + 3 * h, t + 4 * h])
    slots(client, se, [t + h, t + 2 * h, t + 3 * h, t + 4 * h])

    def found(**params: str) -> list[tuple[str, int]]:
        r = client.get(
            "/fhir/PractitionerRole/$find-experts",
            params={
                "specialty": "urn:test|cardio",
                "start": t.isoformat(),
                "end": (t + timedelta(days=2)).isoformat(),
                **params,
            },
        )
        assert r.status_code == 200, r.text
        out = []
        for p in r.json().get("parameter", []):
            parts = {x["name"]: x for x in p["part"]}
            out.append(
                (
                    parts["practitionerRole"]["valueReference"]["reference"],
                    parts["freeSlots"]["valueInteger"],
                )
            )
        return out

    assert found() == [(b, 3), (a, 3), (c, 1)]
    assert found(organization=f"Organization/{h1['id']}") == [(b, 3), (a, 3)]
    assert found(count="1") == [(b, 3)]
    bad = client.get("/fhir/PractitionerRole/$find-experts", params={"start": "yesterday"})
    assert bad.status_code == 400


def test_stats_count_states_and_the_median_response_time(client: TestClient) -> None:
    """Five consultations: one accepted, one accepted then cancelled (counted as cancelled:
    its current state), one declined, one cancelled unanswered, one still requested. The
    response times are pinned by hand (Task.executionPeriod.start - authoredOn, stored as
    imported history): 10, 30 and 50 minutes for the three answered ones -> median 30.0;
    of the imaging ones (first two answered, 10 and 30) -> median 20.0."""
    world = build(client)
    ids = [request(client, world, expert(world), kind=k)[0]
           for k in ("imaging", "imaging", "ecg", "mdt", "imaging")]  # fmt: skip
    ok(op(client, f"Task/{ids[0]}/$accept", expert(world)))
    ok(op(client, f"Task/{ids[1]}/$accept", expert(world)))
    ok(op(client, f"Task/{ids[1]}/$cancel", text("reason", "患者拒绝")))
    ok(op(client, f"Task/{ids[2]}/$decline", expert(world), text("reason", "非本专业")))
    ok(op(client, f"Task/{ids[3]}/$cancel", text("reason", "已转院")))
    # pin the response times: authoredOn 08:00, first answers 08:10, 08:30, 08:50
    from conftest import seed

    answered = {ids[0]: "08:10", ids[1]: "08:30", ids[2]: "08:50"}
    fixed = []
    for tid in ids:
        task = get(client, f"Task/{tid}")
        task["authoredOn"] = "2031-01-15T08:00:00Z"
        task["lastModified"] = "2031-01-15T09:00:00Z"
        task["restriction"] = {"period": {"end": "2031-01-17T08:00:00Z"}}
        if tid in answered:
            task["executionPeriod"] = {
                **task["executionPeriod"],
                "start": f"2031-01-15T{answered[tid]}:00Z",
            }
        if "end" in task.get("executionPeriod", {}):
            task["executionPeriod"]["end"] = "2031-01-15T09:00:00Z"
        fixed.append(task)
    seed(client, fixed)
    r = client.get(
        "/fhir/ServiceRequest/$consultation-stats",
        params={"periodStart": "2031-01-01", "periodEnd": "2031-01-31"},
    )
    assert r.status_code == 200, r.text
    got = {p["name"]: p.get("valueInteger", p.get("valueDecimal")) for p in r.json()["parameter"]
           if p["name"] not in ("periodStart", "periodEnd")}  # fmt: skip
    assert got == {
        "total": 5,
        "requested": 1,
        "accepted": 1,
        "declined": 1,
        "cancelled": 2,
        "expired": 0,
        "completed": 0,
        "medianResponseMinutes": 30.0,
    }
    by_type = client.get(
        "/fhir/ServiceRequest/$consultation-stats",
        params={"groupBy": "type", "periodStart": "2031-01"},
    ).json()
    groups = {g["part"][0]["valueString"]: {p["name"]: p.get("valueInteger", p.get("valueDecimal"))
                                             for p in g["part"][1:]}
              for g in by_type["parameter"] if g["name"] == "group"}  # fmt: skip
    assert set(groups) == {"ecg", "imaging", "mdt"}
    assert groups["imaging"]["total"] == 3 and groups["imaging"]["medianResponseMinutes"] == 20.0
    assert groups["mdt"] == {
        "total": 1,
        "requested": 0,
        "accepted": 0,
        "declined": 0,
        "cancelled": 1,
        "expired": 0,
        "completed": 0,
    }
    outside = client.get(
        "/fhir/ServiceRequest/$consultation-stats", params={"periodEnd": "2030-12-31"}
    ).json()
    assert {p["name"]: p.get("valueInteger") for p in outside["parameter"]}["total"] == 0
    assert (
        client.get(
            "/fhir/ServiceRequest/$consultation-stats", params={"groupBy": "colour"}
        ).status_code
        == 400
    )


def test_the_opinion_pdf_holds_the_chinese_text(client: TestClient) -> None:
    from pypdf import PdfReader

    world = build(client)
    task, _ = request(client, world, expert(world))
    ok(op(client, f"Task/{task}/$accept", expert(world)))
    ok(op(client, f"Task/{task}/$start"))
    drafted = ok(op(client, f"Task/{task}/$submit-opinion", text("historySummary", "反复胸痛三月"),
                    text("findings", "心电图ST段压低"), text("opinion", "考虑不稳定型心绞痛"),
                    text("recommendations", "建议冠脉造影")))  # fmt: skip
    composition = [
        e["resource"] for e in drafted["entry"] if e["resource"]["resourceType"] == "Composition"
    ][0]
    url = f"/fhir/Composition/{composition['id']}/$consultation-opinion"
    draft = client.get(url, params={"format": "pdf"})
    assert draft.status_code == 200 and draft.headers["content-type"] == "application/pdf"
    words = "".join(page.extract_text() for page in PdfReader(io.BytesIO(draft.content)).pages)
    for phrase in (
        "远程会诊意见单",
        "草稿",
        "张三",
        "病情摘要",
        "反复胸痛三月",
        "心电图ST段压低",
        "考虑不稳定型心绞痛",
        "建议冠脉造影",
        "社区卫生服务中心",
        "市第一人民医院",
        "李",
    ):
        assert phrase in words.replace(" ", ""), phrase
    ok(op(client, f"Task/{task}/$sign"))
    signed = client.get(url, params={"format": "pdf"})
    final = "".join(p.extract_text() for p in PdfReader(io.BytesIO(signed.content)).pages)
    assert "已签署" in final and "草稿" not in final
    page = client.get(url)
    assert page.status_code == 200 and "考虑不稳定型心绞痛" in page.text
    assert client.get(url, params={"format": "docx"}).status_code == 400


def test_messages_thread_attachments_and_read_receipts(client: TestClient) -> None:
    world = build(client)
    task, answer = request(client, world, expert(world))
    sr = (
        answer["entry"][1]["resource"]
        if answer["entry"][1]["resource"]["resourceType"] == "ServiceRequest"
        else [
            e["resource"]
            for e in answer["entry"]
            if e["resource"]["resourceType"] == "ServiceRequest"
        ][0]
    )
    binary = create(client, {"resourceType": "Binary", "contentType": "image/png",
                             "data": "iVBORw0KGgo="})  # fmt: skip
    study = create(client, {"resourceType": "ImagingStudy", "status": "available",
                            "subject": {"reference": world["patient"]}})  # fmt: skip
    category = [{"coding": [{"system": f"{CS}yl-communication-category",
                             "code": "consultation-message"}]}]  # fmt: skip
    first = create(client, {
        "resourceType": "Communication", "status": "completed", "category": category,
        "partOf": [{"reference": f"Task/{task}"}],
        "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
        "subject": {"reference": world["patient"]}, "sender": {"reference": world["doctor"]},
        "recipient": [{"reference": world["experts"][0]}], "sent": "2031-01-01T08:00:00Z",
        "payload": [{"contentString": "请看今天的冠脉CT"},
                    {"contentAttachment": {"contentType": "image/png",
                                           "url": f"Binary/{binary['id']}",
                                           "title": "心电图截图"}},
                    {"contentReference": {"reference": f"ImagingStudy/{study['id']}"}}],
    })  # fmt: skip
    reply = create(client, {
        "resourceType": "Communication", "status": "completed", "category": category,
        "partOf": [{"reference": f"Task/{task}"}], "subject": {"reference": world["patient"]},
        "inResponseTo": [{"reference": f"Communication/{first['id']}"}],
        "sender": {"reference": world["experts"][0]}, "sent": "2031-01-01T08:05:00Z",
        "payload": [{"contentString": "已阅，LAD近段狭窄约70%"}],
    })  # fmt: skip
    thread = client.get("/fhir/Communication", params={
        "part-of": f"Task/{task}",
        "category": f"{CS}yl-communication-category|consultation-message",
        "_sort": "sent"}).json()  # fmt: skip
    assert [e["resource"]["id"] for e in thread["entry"]] == [first["id"], reply["id"]]
    by_sender = client.get("/fhir/Communication", params={
        "part-of": f"Task/{task}", "sender": world["experts"][0]}).json()  # fmt: skip
    assert [e["resource"]["id"] for e in by_sender["entry"]] == [reply["id"]]
    replies = client.get("/fhir/Communication", params={
        "in-response-to": f"Communication/{first['id']}",
        "category": f"{CS}yl-communication-category|consultation-message"}).json()  # fmt: skip
    assert [e["resource"]["id"] for e in replies["entry"]] == [reply["id"]]
    # read receipts: one per reader, once
    receipt = op(
        client, f"Communication/{first['id']}/$mark-read", ref("reader", world["experts"][0])
    )
    assert receipt.status_code == 201, receipt.text
    again = op(
        client, f"Communication/{first['id']}/$mark-read", ref("reader", world["experts"][0])
    )
    assert again.status_code == 200
    assert (
        again.json()["entry"][0]["resource"]["id"] == receipt.json()["entry"][0]["resource"]["id"]
    )
    op(client, f"Communication/{first['id']}/$mark-read", ref("reader", world["experts"][1]))
    receipts = client.get("/fhir/Communication", params={
        "in-response-to": f"Communication/{first['id']}",
        "category": f"{CS}yl-communication-category|read-receipt"}).json()  # fmt: skip
    readers = sorted(e["resource"]["sender"]["reference"] for e in receipts["entry"])
    assert readers == sorted(world["experts"][:2])
    assert receipts["entry"][0]["resource"]["recipient"] == [{"reference": world["doctor"]}]
    assert op(client, f"Communication/{first['id']}/$mark-read").status_code == 400
    rid = receipt.json()["entry"][0]["resource"]["id"]
    assert (
        op(client, f"Communication/{rid}/$mark-read", ref("reader", world["doctor"])).status_code
        == 422
    )


def test_demo_has_experts_with_slots_a_team_and_every_state(client: TestClient) -> None:
    from fhir_server.app import load_demo
    from fhir_server.consultation.demo import STATES

    services = client.app.state.services  # type: ignore[attr-defined]
    assert "10 consultations in 10 states" in str(load_demo(services))
    found = client.get(
        "/fhir/Task",
        params={"business-status": f"{CS}yl-consultation-business-status|", "_count": 100},
    ).json()
    states = sorted(e["resource"]["businessStatus"]["coding"][0]["code"] for e in found["entry"])
    assert states == sorted(s for s, _ in STATES)
    experts = client.get(
        "/fhir/PractitionerRole/$find-experts",
        params={"specialty": "http://snomed.info/sct|394579002"},
    ).json()
    ranked = [p["part"][0]["valueReference"]["reference"] for p in experts["parameter"]]
    # three cardiologists, each with 14 slots in 7 days less those the demo booked
    assert sorted(ranked) == [
        "PractitionerRole/role-expert-1",
        "PractitionerRole/role-expert-2",
        "PractitionerRole/role-expert-5",
    ]
    # of those, the two of the 远程会诊中心 (PractitionerRole.healthcareService)
    centre = client.get("/fhir/PractitionerRole/$find-experts", params={
        "specialty": "http://snomed.info/sct|394579002",
        "service": "HealthcareService/hs-teleconsult"}).json()  # fmt: skip
    assert sorted(p["part"][0]["valueReference"]["reference"] for p in centre["parameter"]) == [
        "PractitionerRole/role-expert-1", "PractitionerRole/role-expert-2"]
    team = client.get("/fhir/CareTeam/team-chest-pain").json()
    assert len(team["participant"]) == 4
