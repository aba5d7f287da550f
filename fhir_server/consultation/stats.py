"""ServiceRequest/$consultation-stats: consultations counted by state, with the median time
to the first answer, overall or grouped by type, invited hospital, inviting hospital or month.

Unit: one consultation Task (yl-consultation-task) requested (Task.authoredOn) in
[periodStart, periodEnd] (dates or dateTimes; a date covers its day; either may be left out).
Parts: `total`; `requested` (still waiting: requested, redirected), `accepted` (answered yes
at some point: accepted, scheduled, in-progress, opinion-drafted, completed), `declined`,
`cancelled`, `expired`, `completed`; `medianResponseMinutes` (decimal, 1 place): the median of
(Task.executionPeriod.start − Task.authoredOn), the first answer of an expert (accept,
decline, redirect), over the Tasks answered; left out when none was. Even counts average the
middle two. Groups (`groupBy` = type | hospital | requester | month): one `group` per key,
ordered by key, with `key` and the parts above; hospital is the invited (lead expert's)
organization, requester the inviting one, month `YYYY-MM` of authoredOn as recorded."""

from __future__ import annotations

from statistics import median
from typing import Any

from ..errors import error
from ..interactions.search import find
from ..operations.registry import Call, Operations, Outcome
from ..referral.work import Work, organization_of, parse_instant
from ..search.values import date_bounds
from .codes import OPDEF, TYPE_SYSTEM
from .rules import business_status, is_consultation_task

OPERATIONS = Operations()
Json = dict[str, Any]

ACCEPTED = frozenset({"accepted", "scheduled", "in-progress", "opinion-drafted", "completed"})
GROUPS = ("type", "hospital", "requester", "month")


@OPERATIONS.operation("$consultation-stats", "type", types=("ServiceRequest",),
                      methods=("GET", "POST"),
                      definition=f"{OPDEF}ServiceRequest-consultation-stats")  # fmt: skip
def consultation_stats(call: Call) -> Outcome:
    group_by = call.value("groupBy")
    if group_by is not None and group_by not in GROUPS:
        raise error(400, "invalid", f"groupBy is one of {', '.join(GROUPS)}", "groupBy")
    low = _bound(call, "periodStart", 0)
    high = _bound(call, "periodEnd", 1)
    session = call.services.store.reader()
    work = Work(session, call.services, call.ctx, "")
    groups: dict[str, list[Json]] = {}
    for rtype, rid in find(session, call.services, call.ctx, "Task", "code=fulfill",
                           limit=None):  # fmt: skip
        task = work.load(rtype, rid)
        if task is None or not is_consultation_task(task):
            continue
        authored = str(task.get("authoredOn") or "")
        at = parse_instant(authored)
        if at is None or (low and at.isoformat() < low) or (high and at.isoformat() > high):
            continue
        groups.setdefault(_key(work, task, group_by, authored), []).append(task)
    echo = [
        {"name": n, "valueString": str(call.value(n))}
        for n in ("periodStart", "periodEnd", "groupBy")
        if call.value(n) is not None
    ]
    if group_by is None:
        tasks = [t for ts in groups.values() for t in ts]
        return Outcome({"resourceType": "Parameters", "parameter": echo + _parts(tasks)})
    out = [{"name": "group", "part": [{"name": "key", "valueString": k}, *_parts(groups[k])]}
           for k in sorted(groups)]  # fmt: skip
    return Outcome({"resourceType": "Parameters", "parameter": echo + out})


def _bound(call: Call, name: str, end: int) -> str | None:
    value = call.value(name)
    if value is None:
        return None
    try:
        bound = date_bounds(str(value))[end]
    except Exception as e:
        raise error(400, "invalid", f"'{name}' must be a date or dateTime", name) from e
    found = parse_instant(bound)
    if found is None:
        raise error(400, "invalid", f"'{name}' must be a date or dateTime", name)
    return found.isoformat()


def _key(work: Work, task: Json, group_by: str | None, authored: str) -> str:
    if group_by == "month":
        return authored[:7]
    if group_by == "hospital":
        return organization_of(work, task.get("owner")) or "-"
    if group_by == "requester":
        return organization_of(work, task.get("requester")) or "-"
    if group_by == "type":
        sr = work.load(*str((task.get("focus") or {}).get("reference", "/")).split("/", 1))
        for cat in (sr or {}).get("category") or []:
            for c in cat.get("coding") or []:
                if c.get("system") == TYPE_SYSTEM:
                    return str(c.get("code"))
        return "-"
    return ""


def _parts(tasks: list[Json]) -> list[Json]:
    states = [business_status(t) for t in tasks]
    counts = {
        "total": len(tasks),
        "requested": sum(s in ("requested", "redirected") for s in states),
        "accepted": sum(s in ACCEPTED for s in states),
        "declined": states.count("declined"),
        "cancelled": states.count("cancelled"),
        "expired": states.count("expired"),
        "completed": states.count("completed"),
    }
    out: list[Json] = [{"name": k, "valueInteger": v} for k, v in counts.items()]
    minutes = []
    for t in tasks:
        start = parse_instant((t.get("executionPeriod") or {}).get("start"))
        authored = parse_instant(t.get("authoredOn"))
        if start is not None and authored is not None:
            minutes.append((start - authored).total_seconds() / 60)
    if minutes:
        out.append({"name": "medianResponseMinutes", "valueDecimal": round(median(minutes), 1)})
    return out
