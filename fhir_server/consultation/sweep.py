"""The consultation timer: requests nobody answered within the deadline of their urgency
(Task.restriction.period.end, set from settings.consultation_response_minutes) expire (C11).
Run with the referral sweep (`fhir-server sweep`, and every sweep_minutes in the server)."""

from __future__ import annotations

from datetime import datetime

from ..context import RequestContext
from ..interactions.hooks import transaction
from ..interactions.search import find
from ..referral.sweep import when
from ..referral.work import instant, parse_instant
from ..services import Services
from .operations import expire
from .rules import business_status, is_consultation_task
from .work import ConsultWork


def sweep(services: Services, now: datetime | str | None = None) -> list[str]:
    """Expire the open consultation Tasks past their deadline, each in its own transaction;
    answers 'expire Task/<id>' for each, in id order."""
    at = when(now)
    ctx = RequestContext(base_url=services.settings.public_base_url or "http://localhost/fhir")
    candidates = find(services.store.reader(), services, ctx, "Task", "status=requested",
                      limit=None)  # fmt: skip
    done = []
    for rtype, rid in sorted(candidates):
        with transaction(services) as session:
            work = ConsultWork(session, services, ctx, instant(at))
            task = work.load(rtype, rid)
            if task is None or not is_consultation_task(task):
                continue
            if business_status(task) not in ("requested", "redirected"):
                continue
            due = parse_instant(((task.get("restriction") or {}).get("period") or {}).get("end"))
            if due is None or at <= due:
                continue
            expire(work, task, f"Not answered by {due.isoformat()} (deadline of its urgency)")
            work.commit()
        done.append(f"expire Task/{rid}")
    return done
