"""The referral statistics (ServiceRequest/$referral-stats, referral/stats.py) on MongoDB: the
same rows as the SQL of sqlite/stats.py, which is the reference and whose steps the functions
here follow (task, milestone/times, referral, counted, totals, median). The fulfilment Tasks
are found on the `focus` reference index; the rest reads their JSON and the JSON of the
ServiceRequests they focus on, as the SQL does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .store import MongoSession

Json = dict[str, Any]
_ACCEPTED = ("accepted", "in-progress", "completed", "failed")


def julianday(text: Any) -> float | None:
    """SQLite's julianday() of an ISO 8601 date or date-time (UTC when no offset), None for
    anything else (as SQLite's NULL)."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp() / 86400.0 + 2440587.5


def _list(node: Any, key: str) -> list[Any]:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


def _get(node: Any, *path: str) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _current(session: MongoSession, rtype: str, rid: str) -> Json | None:
    doc = session.db[rtype].find_one({"_id": rid, "del": False}, {"json": 1}, session=session.s)
    return orjson.loads(bytes(doc["json"])) if doc else None


def _org_of(session: MongoSession, ref: Any) -> str | None:
    """An Organization reference as is; a PractitionerRole's organization."""
    if not isinstance(ref, str):
        return None
    if ref.startswith("Organization/"):
        return ref
    if ref.startswith("PractitionerRole/"):
        role = _current(session, "PractitionerRole", ref[len("PractitionerRole/") :])
        org = _get(role, "organization", "reference")
        return org if isinstance(org, str) else None
    return None


def _tasks(session: MongoSession) -> Iterator[tuple[Json, Json]]:
    """(Task, ServiceRequest) of the fulfilment Tasks counted (the SQL's `task`)."""
    focus = {"x.reference": {"$elemMatch": {"p": "focus", "target_type": "ServiceRequest"}}}
    for doc in session.db["Task"].find({"del": False, **focus}, {"json": 1}, session=session.s):
        task = orjson.loads(bytes(doc["json"]))
        ref = _get(task, "focus", "reference")
        if not isinstance(ref, str) or not ref.startswith("ServiceRequest/"):
            continue
        if task.get("partOf") is not None or task.get("status") in ("draft", "entered-in-error"):
            continue
        code = task.get("code")
        if code is not None and not any(
            _get(c, "code") == "fulfill" for c in _list(code, "coding")
        ):
            continue
        sr = _current(session, "ServiceRequest", ref[len("ServiceRequest/") :])
        if sr is not None:
            yield task, sr


def _times(task: Json, milestones: str) -> tuple[str | None, float | None]:
    """The first `submitted` milestone's instant and the earliest decided/booked julian day."""
    submitted: list[tuple[bool, float, str]] = []
    decided: list[float] = []
    for e in _list(task, "extension"):
        if _get(e, "url") != milestones:
            continue
        subs = _list(e, "extension")
        codes = [_get(c, "valueCoding", "code") for c in subs if _get(c, "url") == "code"]
        ats = [_get(d, "valueDateTime") for d in subs if _get(d, "url") == "dateTime"]
        for code in codes:
            for at in ats:
                jd = julianday(at)
                if code == "submitted" and isinstance(at, str):
                    # ORDER BY julianday(at): NULLs first, as SQLite sorts them
                    submitted.append((jd is not None, jd or 0.0, at))
                elif code in ("decided", "booked") and jd is not None:
                    decided.append(jd)
    first = min(submitted)[2] if submitted else None
    return first, min(decided) if decided else None


def _extension_code(resource: Json, url: str) -> Any:
    for e in _list(resource, "extension"):
        if _get(e, "url") == url:
            return _get(e, "valueCoding", "code")
    return None


def _referral(session: MongoSession, task: Json, sr: Json, p: Json) -> Json:
    """One row of the SQL's `referral`."""
    submitted, decided = _times(task, p["milestones"])
    business = next(
        (
            _get(c, "code")
            for c in _list(task.get("businessStatus"), "coding")
            if _get(c, "system") == p["business"]
        ),
        None,
    )
    direction = _extension_code(sr, p["direction"])
    if direction is None:
        direction = _extension_code(task, p["direction"])
    source = _org_of(session, _get(sr, "requester", "reference")) or _org_of(
        session, _get(task, "requester", "reference")
    )
    refs = [_get(x, "reference") for x in _list(sr, "performer")]
    refs = [r for r in refs if isinstance(r, str)]
    target = next((r for r in refs if r.startswith("Organization/")), None)
    if target is None:
        role = next((r for r in refs if r.startswith("PractitionerRole/")), None)
        target = _org_of(session, role) if role else None
    if target is None:
        target = _org_of(session, _get(task, "owner", "reference"))
    rtype = next(
        (
            _get(c, "code")
            for k in _list(sr, "category")
            for c in _list(k, "coding")
            if _get(c, "system") == p["type"]
        ),
        None,
    )
    return {
        "status": task.get("status"),
        "business": business,
        "direction": direction,
        "submitted_at": submitted if submitted is not None else task.get("authoredOn"),
        "decided_jd": decided,
        "source": source,
        "target": target,
        "type": rtype,
    }


def referral_stats_rows(session: MongoSession, p: Json) -> list[tuple[Any, ...]]:
    low = julianday(p["low"]) if p["low"] is not None else None
    high = julianday(p["high"]) if p["high"] is not None else None
    groups: dict[tuple[Any, str], list[Json]] = {}
    for task, sr in _tasks(session):
        r = _referral(session, task, sr, p)
        at = r["submitted_at"]
        if r["direction"] not in ("up", "down", "lateral") or at is None:
            continue
        r["submitted_jd"] = julianday(at)
        if p["low"] is not None and (r["submitted_jd"] is None or low is None
                                     or r["submitted_jd"] < low):  # fmt: skip
            continue
        if p["high"] is not None and (r["submitted_jd"] is None or high is None
                                      or r["submitted_jd"] > high):  # fmt: skip
            continue
        org = p["organization"]
        if org is not None and org not in (r["source"], r["target"]):
            continue
        by = p["group_by"]
        key = r[by] if by in ("source", "target", "type") else ""
        if by == "month":
            key = str(at)[:7]
        groups.setdefault((key, r["direction"]), []).append(r)
    out = []
    for (key, direction), rows in sorted(groups.items(), key=lambda g: (g[0][0] is not None, g[0])):
        status = [r["status"] for r in rows]
        out.append(
            (
                key,
                direction,
                len(rows),
                sum(s in _ACCEPTED for s in status),
                status.count("rejected"),
                status.count("cancelled"),
                status.count("completed"),
                sum(r["status"] == "failed" and r["business"] == "no-show" for r in rows),
                status.count("in-progress"),
                sum(s in ("requested", "received") for s in status),
                _median_hours(rows),
            )
        )
    return out


def _median_hours(rows: list[Json]) -> float | None:
    """The SQL's `median`: hours from submission to the first decision over the decided rows,
    the middle one (or the mean of the middle two); None when no row was decided."""
    spans: list[tuple[bool, float]] = []
    for r in rows:
        if r["decided_jd"] is None or not (r["status"] in _ACCEPTED or r["status"] == "rejected"):
            continue
        start = r["submitted_jd"]
        span = None if start is None else r["decided_jd"] - start
        spans.append((span is not None, span or 0.0))  # NULLs first, as SQLite orders them
    if not spans:
        return None
    spans.sort()
    n = len(spans)
    middle = {(n + 1) // 2, (n + 2) // 2}
    hours = [s * 24.0 for i, (known, s) in enumerate(spans, 1) if i in middle and known]
    return round(sum(hours) / len(hours), 2) if hours else None
