"""The referral timers (referral-model.md §2.5 T12 expire, T15 no-show), applied by a sweep the
server runs every `sweep_minutes` and `fhir-server sweep` runs once. Deterministic given `now`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..context import RequestContext
from ..interactions.hooks import transaction
from ..interactions.search import find
from ..services import Services
from .codes import MILESTONES_URL
from .operations import expire, no_show
from .rules import is_referral_task
from .work import SYSTEM_AGENT, Work, instant, linked, parse_instant

log = logging.getLogger("fhir_server.sweep")


def sweep(services: Services, now: datetime | str | None = None) -> list[str]:
    """Expire requested/received referral Tasks past their response deadline or validity, and
    mark accepted ones no-show when Appointment.start + grace has passed. Each Task changes in
    its own write transaction; answers '<transition> Task/<id>' for every change, in id order."""
    at = when(now)
    ctx = RequestContext(base_url=services.settings.public_base_url or "http://localhost/fhir")
    candidates = find(
        services.store.reader(),
        services,
        ctx,
        "Task",
        "status=requested,received,accepted",
        limit=None,
    )
    done = []
    for rtype, rid in sorted(candidates):
        with transaction(services) as session:
            work = Work(session, services, ctx, instant(at))
            task = work.load(rtype, rid)
            if task is None or not is_referral_task(task):
                continue
            code = _due(work, task, at)
            if code is None:
                continue
            work.commit()
        done.append(f"{code} Task/{rid}")
    return done


def when(now: datetime | str | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    parsed = parse_instant(now) if isinstance(now, str) else now
    if parsed is None:
        raise ValueError(f"not a FHIR instant: {now!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _due(work: Work, task: dict[str, Any], at: datetime) -> str | None:
    """Apply the transition the clock calls for (in `work`), if any; its code."""
    settings = work.services.settings
    status = task.get("status")
    if status in ("requested", "received"):
        submitted = _milestone(task, "submitted") or parse_instant(task.get("authoredOn"))
        hours = settings.referral_response_hours
        if submitted is not None and at > submitted + timedelta(hours=hours):
            expire(work, task, f"Not handled within {hours} hours")
            return "expire"
        period = (task.get("restriction") or {}).get("period") or {}
        valid_until = parse_instant(period.get("end"))
        if valid_until is not None and at > valid_until:
            expire(work, task, "The referral's validity period ended")
            return "expire"
    elif status == "accepted":
        appointment = linked(work, task, "appointment", "Appointment")
        if appointment is None or appointment.get("status") not in ("booked", "pending"):
            return None
        start = parse_instant(appointment.get("start"))
        grace = timedelta(hours=settings.no_show_grace_hours)
        if start is not None and at > start + grace:
            no_show(work, task, SYSTEM_AGENT, {"text": "Not checked in by the grace deadline"})
            return "no-show"
    return None


def _milestone(task: dict[str, Any], code: str) -> datetime | None:
    for ext in task.get("extension") or []:
        if ext.get("url") != MILESTONES_URL:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or []}
        if (parts.get("code") or {}).get("valueCoding", {}).get("code") == code:
            return parse_instant((parts.get("dateTime") or {}).get("valueDateTime"))
    return None


Sweep = Callable[[Services], list[str]]


async def run_periodically(services: Services, sweeps: tuple[Sweep, ...] = ()) -> None:
    """The server's timer: run the referral sweep, then `sweeps` (other workflows' timers),
    every settings.sweep_minutes (0 or less: never)."""
    minutes = services.settings.sweep_minutes
    if minutes <= 0:
        return
    while True:
        await asyncio.sleep(minutes * 60)
        for each in (sweep, *sweeps):
            try:
                changed = await run_in_threadpool(each, services)
                if changed:
                    log.info("sweep: %s", ", ".join(changed))
            except Exception:
                log.exception("sweep failed")
