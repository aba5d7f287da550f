"""The referral feature's write hook: plain REST writes of referral resources must keep to the
transition table (referral-model.md §2.5, "all others rejected"), and a legal move gets the
milestones and Provenance an operation would have given it."""

from __future__ import annotations

from ..interactions.hooks import Change, Effect
from ..model.resource import now
from .rules import check_task_change, provenance, record_plain_update
from .transitions import table_of


def on_write(change: Change) -> Effect | None:
    """Check a Task write against the table; stamp a legal transition made by PUT/PATCH."""
    table = table_of(change.services)
    before, after = change.before, change.resource
    if before is None or after is None:
        return None
    transition = check_task_change(table, before, after)
    if transition is None:
        return None
    stamp, agent = now(), {"display": change.ctx.principal}
    stamped = record_plain_update(after, transition, stamp, agent)
    trail = provenance(change.rid, transition.code, stamp, agent, label=transition.number)
    return Effect(stamped, [trail])
