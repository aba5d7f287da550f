"""The check plain PUT/PATCH of a referral Task must pass: its (status, businessStatus) may only
change along a row of the transition table (referral-model.md §2.5, "all others rejected")."""

from __future__ import annotations

from typing import Any

from ..errors import error
from .codes import (
    BUSINESS_SYSTEM,
    MILESTONE_SYSTEM,
    MILESTONES_URL,
    TASK_PROFILE,
    TRANSITION_SYSTEM,
)
from .transitions import MILESTONES, Table, Transition


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


def check_task_change(
    table: Table, old: dict[str, Any], new: dict[str, Any]
) -> Transition | None:
    """409 business-rule unless old -> new status pair is unchanged or a table row; returns
    the row when the pair changes."""
    if not (is_referral_task(old) or is_referral_task(new)):
        return None
    before = (old.get("status"), business_status(old))
    after = (new.get("status"), business_status(new))
    if before == after:
        return None
    found = table.find(before, after)  # type: ignore[arg-type]
    if found is None:
        raise error(
            409,
            "business-rule",
            f"A referral Task may not move from {before[0]}/{before[1] or '-'} to "
            f"{after[0]}/{after[1] or '-'}",
            "Task.status",
        )
    return found


def milestone(code: str, at: str, agent: dict[str, Any]) -> dict[str, Any]:
    """One yl-milestones extension entry: which milestone, when, and by whom."""
    parts: list[dict[str, Any]] = [
        {
            "url": "code",
            "valueCoding": {"system": MILESTONE_SYSTEM, "code": code},
        },
        {"url": "dateTime", "valueDateTime": at},
    ]
    if "reference" in agent:
        parts.append({"url": "actor", "valueReference": agent})
    return {"url": MILESTONES_URL, "extension": parts}


def provenance(
    task_id: str,
    activity: str,
    at: str,
    agent: dict[str, Any],
    others: tuple[str, ...] = (),
    reason: dict[str, Any] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """The Provenance of one transition of Task/task_id (activity: its yl-transition code,
    labelled with the T-number)."""
    coding: dict[str, Any] = {"system": TRANSITION_SYSTEM, "code": activity}
    if label:
        coding["display"] = label
    out: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Task/{task_id}"}, *({"reference": o} for o in others)],
        "occurredDateTime": at,
        "recorded": at,
        "activity": {"coding": [coding]},
        "agent": [{"who": agent}],
    }
    if reason:
        out["reason"] = [reason]
    return out


def record_plain_update(
    task: dict[str, Any], t: Transition, at: str, agent: dict[str, Any]
) -> dict[str, Any]:
    """A legal transition made by PUT/PATCH gets what the operations give it: its milestones
    and lastModified on the Task (returned), and a Provenance (see guard.py). Linked
    resources (Appointment, Encounter, ...) are changed only by the operations."""
    stamped = {**task, "lastModified": at}
    stamped["extension"] = [
        *(task.get("extension") or []),
        *(milestone(c, at, agent) for c in MILESTONES[t.code]),
    ]
    return stamped
