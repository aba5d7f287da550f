"""The apps in a real browser (issue 16): headless Chromium driven by playwright-core
(tests/browser/apps.mjs) through the referral journey on the demo consortium, served by uvicorn
with authorization on: an EHR launch of the workbench opens on the patient; the community doctor
writes an up-referral from that patient and submits it with a reserved slot (a network failure
and a slot taken meanwhile first: both said in Chinese, nothing typed lost); the tertiary
hospital's referral office sees it arrive without reloading and accepts it; check-in by the
slip's code; completion with a down-referral; the statistics change by exactly that; an expired
session goes back through the launch; the patient app shows the patient's own referral and slip
and another patient none of it. Screenshots of the main screens at 1366x768 and 390x844 are
kept in SCREENSHOTS and each is checked not blank.

Runs when Chromium and tests/browser/node_modules are present (CI: FHIR_SERVER_BROWSER_REQUIRED)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apps_harness import assert_screens, journey, journey_config
from test_browser_smart import REQUIRED, _missing

pytestmark = [
    pytest.mark.slow,  # a real browser: `make test-slow`
    pytest.mark.skipif(
        _missing() is not None and not REQUIRED, reason=f"BROWSER TEST NOT RUN: {_missing()}"
    ),
]


def test_the_referral_journey_through_the_apps_in_chromium(demo: str, tmp_path: Path) -> None:
    config = {**journey_config(demo, tmp_path, "*"), "department": "心血管内科",
              "hiddenPatient": "pat-no-such"}  # fmt: skip
    out = journey("apps.mjs", config, timeout=240)

    # the EHR launch opened the workbench on the EMR's patient (the demo's 彭静, pat-001)
    assert out["ehr"]["patient"] == "pat-001" and "彭静" in out["ehr"]["banner"]
    assert out["ehr"]["url"].endswith("#/record/pat-001")
    # a network failure and a slot taken meanwhile: said in Chinese, the form kept
    reason = "血压控制不佳，联合三种降压药无效"
    assert "网络连接失败" in out["network"]["notice"] and out["network"]["reason"] == reason
    assert "该号源已被他人预约" in out["slotTaken"]["notice"]
    assert out["slotTaken"]["reason"] == reason
    # submitted with a slot the tertiary hospital reviews; the slip's QR code names the Task
    submitted = out["submitted"]
    assert submitted["qr"] == f"Task/{submitted['task']}"
    assert submitted["number"].startswith("ZZ")
    # the office's worklist showed it without a page load, and said so
    assert out["arrival"]["navigations"] == 0 and "新的转入申请" in out["arrival"]["notice"]
    # the timeline: submitted, booked (pending review), decided (the review confirmed it),
    # arrived, completed, down-referred: the milestones of T2, T9, T13 and T17
    # (transitions.MILESTONES)
    timeline = out["completed"]["timeline"]
    for step in ("已提交", "已预约", "已决定", "已报到", "已完成", "已下转"):
        assert step in timeline, timeline
    # statistics of 杭州市第一人民医院: one more up-referral submitted and completed, one more
    # down-referral submitted (the one of the completion); nothing else moved meanwhile
    before, after = out["statsBefore"], out["statsAfter"]
    assert after["up"] == {"submitted": before["up"]["submitted"] + 1,
                           "completed": before["up"]["completed"] + 1}  # fmt: skip
    assert after["down"]["submitted"] == before["down"]["submitted"] + 1
    assert after["lateral"] == before["lateral"]
    # English from the CodeSystem's display ("Down-referred"), and back
    assert out["english"] == {"status": "Down-referred", "lang": "en"}
    # the expired session went through the launch and came back to the same screen
    assert out["relaunch"]["hash"] == "#/stats"
    # the doctor app: the same pages with a phone's bottom navigation
    assert out["phone"] == {"bottomNav": True, "sideNav": False}
    # a record the user may not see: an empty state saying why, not a broken page
    assert out["hidden"] == "无权查看（医联体共享规则）"
    # the patient app: the patient's own referral and its slip; another patient sees none of it
    assert submitted["number"] in out["patient"]["referrals"] and "彭静" in out["patient"]["me"]
    assert out["patient"]["slipQr"] == submitted["qr"]
    assert "彭静" not in out["other"]["body"] and submitted["number"] not in out["other"]["body"]
    assert "暂无数据" in out["other"]["referrals"]
    assert all(not logs for logs in out["logs"].values()), out["logs"]

    names = {Path(p).name for p in out["shots"]}
    for screen in ("workbench-worklist", "workbench-record", "workbench-form",
                   "workbench-referral", "workbench-checkin", "workbench-stats", "patient-home"):
        assert f"{screen}-1366.png" in names  # fmt: skip
    for screen in ("doctor-worklist", "doctor-referral", "doctor-record", "doctor-form",
                   "doctor-checkin", "doctor-stats", "patient-home", "patient-slip"):
        assert f"{screen}-390.png" in names  # fmt: skip
    assert_screens(out["shots"])
