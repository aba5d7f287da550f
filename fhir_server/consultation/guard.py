"""The consultation feature's write hook: a plain PUT/PATCH (or create, delete) of a
consultation Task keeps to the transition table (rules.py; 409 otherwise) and to the sides
(work.py), and a legal move gets its Provenance and lastModified as by its operation. Linked
resources (Appointment, Slot, Encounter, Composition) change only through the operations."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..model.resource import now
from ..referral.rules import provenance
from ..referral.work import Work, split
from .codes import TRANSITION_SYSTEM
from .rules import check_task_write, is_consultation_task
from .transitions import table_of
from .work import EITHER, TRANSITION_SIDES, side_organizations


def is_ours(resource: dict[str, Any]) -> bool:
    return is_consultation_task(resource)


def on_write(change: Change) -> Effect | None:
    before, after = change.before, change.resource
    if before is not None and not is_consultation_task(before) and after is not None \
            and not is_consultation_task(after):  # fmt: skip
        return None
    table = table_of(change.services)
    transition = check_task_write(table, before, after)
    if before is not None and after is not None:
        for name in ("for", "focus", "requester"):
            if before.get(name) != after.get(name):
                raise error(409, "business-rule", f"A consultation Task keeps its {name}: a new "
                            "consultation is a new request", f"Task.{name}")  # fmt: skip
        side = EITHER if transition is None else TRANSITION_SIDES[transition.code]
        _check_side(change, side, before)
    if transition is None or after is None:
        return None
    stamp, agent = now(), {"display": change.ctx.principal.label}
    trail = provenance(change.rid, transition.code, stamp, agent, label=transition.number,
                       system=TRANSITION_SYSTEM)  # fmt: skip
    return Effect({**after, "lastModified": stamp}, [trail])


def _check_side(change: Change, side: str | None, task: dict[str, Any]) -> None:
    principal = change.ctx.principal
    if principal.kind == "anonymous":
        return
    if side is None:
        raise error(403, "forbidden", "Only the server's sweep expires a consultation")
    work = Work(change.session, change.services, change.ctx, "", table_of(change.services))
    key = split(task.get("focus"))
    focus = work.load(*key) if key else None
    mine = principal.organization if principal.kind in ("user", "system") else None
    if focus is None or mine not in side_organizations(work, side, focus):
        raise error(403, "forbidden", "Only a party to this consultation may change its Task")
