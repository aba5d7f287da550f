"""What makes a resource part of a consultation, and the checks plain REST writes of a
consultation Task must pass (its status pair moves only along a row of the table). Pure."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..referral.transitions import Table, Transition
from .codes import BUSINESS_SYSTEM, CONSULTATION, REQUEST_PROFILE, SNOMED, TASK_PROFILE
from .transitions import START

Json = dict[str, Any]


def business_status(task: Json) -> str | None:
    """The yl-consultation-business-status code of a Task, if any."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == BUSINESS_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def is_consultation_task(task: Json) -> bool:
    """A Task with our consultation business status system or profile."""
    if task.get("resourceType") != "Task":
        return False
    profiles = (task.get("meta") or {}).get("profile") or []
    return TASK_PROFILE in profiles or business_status(task) is not None


def is_consultation_request(sr: Json) -> bool:
    """A ServiceRequest with our consultation profile or the SNOMED Consultation category."""
    if sr.get("resourceType") != "ServiceRequest":
        return False
    if REQUEST_PROFILE in ((sr.get("meta") or {}).get("profile") or []):
        return True
    return any(
        c.get("system") == SNOMED and c.get("code") == CONSULTATION
        for cat in sr.get("category") or []
        if isinstance(cat, dict)
        for c in cat.get("coding") or []
        if isinstance(c, dict)
    )


def pair_of(task: Json) -> tuple[str | None, str | None]:
    return (task.get("status"), business_status(task))


def check_task_write(table: Table, old: Json | None, new: Json | None) -> Transition | None:
    """409 business-rule unless a plain write of a consultation Task keeps to the table: it is
    created as requested/requested, changes its status pair only along a row, and is never
    deleted (its ServiceRequest, Appointment and Slot would dangle: use $cancel). Returns the
    row a change follows, to be recorded like the operation's."""
    if new is None:
        raise error(409, "business-rule", "A consultation Task is not deleted; use $cancel", "Task")
    if old is None or not is_consultation_task(old):
        if pair_of(new) != START:
            raise error(
                409, "business-rule",
                f"A consultation Task is created as requested/requested, not "
                f"{pair_of(new)[0]}/{pair_of(new)[1] or '-'}: the operations move it on",
                "Task.status",
            )  # fmt: skip
        return None
    before, after = pair_of(old), pair_of(new)
    if before == after:
        return None
    found = table.find(before, after)  # type: ignore[arg-type]
    if found is None:
        raise error(
            409, "business-rule",
            f"A consultation Task may not move from {before[0]}/{before[1] or '-'} to "
            f"{after[0]}/{after[1] or '-'}",
            "Task.status",
        )  # fmt: skip
    return found
