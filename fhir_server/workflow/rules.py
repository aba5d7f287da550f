"""The check plain PUT/PATCH of a referral Task must pass: its (status, businessStatus) may only
change along a row of the transition table (referral-model.md §2.5, "all others rejected")."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error
from ..storage.sqlite import Stored
from .transitions import BUSINESS_SYSTEM, CANON, find_transition

TASK_PROFILE = f"{CANON}/StructureDefinition/yl-referral-task"


def business_status(task: dict[str, Any]) -> str | None:
    """The yl-referral-business-status code of a Task, if any."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == BUSINESS_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def is_referral_task(task: dict[str, Any]) -> bool:
    """A Task with our business status system or our referral Task profile."""
    if task.get("resourceType") != "Task":
        return False
    profiles = (task.get("meta") or {}).get("profile") or []
    return TASK_PROFILE in profiles or business_status(task) is not None


def check_task_change(old: dict[str, Any], new: dict[str, Any]) -> None:
    """409 business-rule unless old -> new status pair is unchanged or a table row."""
    if not (is_referral_task(old) or is_referral_task(new)):
        return
    before = (old.get("status"), business_status(old))
    after = (new.get("status"), business_status(new))
    if before == after:
        return
    if find_transition(before, after) is None:  # type: ignore[arg-type]
        raise error(
            409,
            "business-rule",
            f"A referral Task may not move from {before[0]}/{before[1] or '-'} to "
            f"{after[0]}/{after[1] or '-'}",
            "Task.status",
        )


def check_update(rtype: str, prev: tuple[int, Stored] | None, resource: dict[str, Any]) -> None:
    """The write-layer hook: check an update of a stored, live Task against the table."""
    if rtype != "Task" or prev is None or prev[1].deleted or prev[1].json is None:
        return
    check_task_change(orjson.loads(prev[1].json), resource)
