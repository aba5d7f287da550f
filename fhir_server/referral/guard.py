"""The referral feature's write hook: plain REST writes of referral resources must keep to the
rules (rules.py, over the transition table), and a legal Task move made by PUT/PATCH gets the
milestones and Provenance an operation would have given it. The operations themselves write
through the unit of work (work.py), not through this hook."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..interactions.search import find
from ..model.resource import now
from .rules import (
    check_request_change,
    check_task_change,
    check_task_create,
    check_task_delete,
    is_referral_request,
    is_referral_task,
    pair_of,
    provenance,
    record_plain_update,
)
from .transitions import TERMINAL, table_of


def is_ours(resource: dict[str, Any]) -> bool:
    """The resources this hook guards: referral Tasks and referral ServiceRequests."""
    return is_referral_task(resource) or is_referral_request(resource)


def on_write(change: Change) -> Effect | None:
    if change.rtype == "ServiceRequest":
        check_request_change(change.before, change.resource)
        return None
    before, after = change.before, change.resource
    if after is None:
        if before is not None:
            check_task_delete(before)
        return None
    table = table_of(change.services)
    if before is None:
        transition = check_task_create(table, after)
        _check_one_active(change)
    else:
        transition = check_task_change(table, before, after)
    if transition is None:
        return None
    stamp, agent = now(), {"display": change.ctx.principal.label}
    stamped = record_plain_update(after, transition, stamp, agent, created=before is None)
    trail = provenance(change.rid, transition.code, stamp, agent, label=transition.number)
    return Effect(stamped, [trail])


def _check_one_active(change: Change) -> None:
    """409 when a new referral Task's ServiceRequest already has a referral Task that is not
    finished: one referral, one Task."""
    task = change.resource
    assert task is not None
    focus = (task.get("focus") or {}).get("reference")
    if not is_referral_task(task) or not isinstance(focus, str) or "?" in focus:
        return
    for rtype, rid in find(change.session, change.services, change.ctx, "Task",
                           f"focus={focus}", limit=None):  # fmt: skip
        found = change.session.current(rtype, rid)
        if rid == change.rid or found is None or found[1].json is None:
            continue
        other = orjson.loads(found[1].json)
        if is_referral_task(other) and pair_of(other)[0] not in TERMINAL:
            raise error(
                409,
                "business-rule",
                f"{focus} already has an open referral Task (Task/{rid}); one referral, one Task",
                "Task.focus",
            )
