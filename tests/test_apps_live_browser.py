"""The apps' live screens in a real browser (issue 16: "the tertiary coordinator sees it arrive
without reloading"; the doctor app's notifications, messages, accept/reject and joining a
consultation; the patient's consultation times): headless Chromium driven by playwright-core
(tests/browser/apps-live.mjs) on the demo consortium served by uvicorn with authorization on.
New work reaches the open screens by R4 websocket Subscriptions (lib/live.js), which the
journey records frame by frame. Screenshots (live-*.png) at 1366x768 and 390x844 are kept in
SCREENSHOTS and each is checked not blank."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps_harness import ROOT, assert_screens, journey, journey_config
from test_browser_smart import REQUIRED, _missing

pytestmark = [
    pytest.mark.slow,  # a real browser: `make test-slow`
    pytest.mark.skipif(
        _missing() is not None and not REQUIRED, reason=f"BROWSER TEST NOT RUN: {_missing()}"
    ),
]


def test_new_work_reaches_the_open_screens_by_websocket_in_chromium(
    demo: str, tmp_path: Path
) -> None:
    config = {**journey_config(demo, tmp_path, "*live-*.png"), "department": "心血管内科"}
    out = journey("apps-live.mjs", config, timeout=300)

    # the office's worklist and its phone's 通知 showed the new referral without a page load,
    # told by a ping on the websocket each had bound (the token in the URL, as browsers must)
    arrival = out["arrival"]
    assert arrival["navigations"] == {"office": 0, "phone": 0}
    assert "新的转入申请" in arrival["notice"]
    assert arrival["after"] == arrival["before"] + 1
    assert out["submitted"]["number"] in arrival["card"]
    for side in ("office", "phone"):
        sockets = out["sockets"][side]
        assert sockets["urls"] and all("access_token=" in u for u in sockets["urls"]), sockets
        assert sockets["pings"] >= 1, sockets
    # accepted from the notification: the booking the community doctor chose is confirmed
    # (README state table: T7, received/booked-pending-review -> accepted/booked)
    assert out["accepted"] == {"status": "accepted", "business": "booked"}
    # a dropped socket: the worklist opened another (back-off), bound again, and followed the
    # acceptance on it without a page load
    assert out["reconnected"] == {"new": 1, "navigations": 0}, out["reconnected"]
    # rejected from another notification with a reason (the CodeSystem's first, offered first)
    # and a note: T10, rejected (Task.status rejected)
    rejected = out["rejected"]
    assert rejected["status"] == "rejected" and rejected["business"] == "rejected"
    assert rejected["reason"]["code"] == "no-capacity", rejected
    assert any("本院心内科床位已满" in n for n in rejected["note"]), rejected
    # leaving the worklist deleted its Subscriptions: a read of each answers 410 Gone (R4
    # http.html#read: a deleted resource)
    assert out["sockets"]["office"]["bound"] >= 1
    assert set(out["leftBehind"]) == {410}, out["leftBehind"]
    # and so did closing the phone's page (its 通知: two searches, two Subscriptions)
    assert out["closedBehind"] == [410, 410], out["closedBehind"]
    # 消息: the expert's message arrived in the doctor's open thread list, unread
    assert "会诊前请上传最近一次心电图" in out["messages"]["thread"]
    assert out["messages"]["unread"] == "1"
    # 进入会诊室 from 通知: the room page of the consultation's Appointment, with a join token
    assert "/apps/consult-room?appointment=" in out["room"]["url"], out["room"]
    # the patient app: pat-001's scheduled consultation (the demo books it in expert-1's slot
    # of day 5 at 09:00 China Standard Time, consultation/demo.py), shown in that time zone
    day = (datetime.now(UTC) + timedelta(hours=8)).date() + timedelta(days=5)
    assert f"{day.isoformat()} 09:00" in out["patient"]["times"], out["patient"]
    # the referral's 操作记录: its Provenance, read by the receiving office: submitted with a
    # booking (T2 submit-booked), the booking confirmed (T9 confirm-booking), README state table
    assert out["activity"] == ["submit-booked", "confirm-booking"]
    # a choice list offers a CodeSystem's codes in its order (terminology/, read here)
    cancel = ROOT / "terminology/CodeSystem-yl-referral-cancel-reason.json"
    system = json.loads(cancel.read_text(encoding="utf-8"))
    assert out["cancelChoices"] == [c["code"] for c in system["concept"]]
    assert all(not logs for logs in out["logs"].values()), out["logs"]

    names = {Path(p).name for p in out["shots"]}
    for screen in ("worklist", "consultation", "activity", "patient"):
        assert f"live-{screen}-1366.png" in names
    for screen in ("notifications", "reject", "doctor-notifications", "messages", "room",
                   "patient-consult"):
        assert f"live-{screen}-390.png" in names
    assert_screens(out["shots"])
