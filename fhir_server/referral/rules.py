"""The checks plain REST writes of referral resources must pass (referral-model.md §2.5, "all
others rejected"): a Task's (status, businessStatus) changes only along a row of the transition
table, starts as a draft and is deleted only as a draft or entered in error; a referral
ServiceRequest's status moves only through the operations, except that a draft may be revoked
or entered in error. Pure functions: guard.py applies them to writes."""

from __future__ import annotations

from typing import Any

from ..errors import error
from .codes import (
    BUSINESS_SYSTEM,
    DIRECTION_URL,
    MILESTONE_SYSTEM,
    MILESTONES_URL,
    REQUEST_PROFILE,
    TASK_PROFILE,
    TRANSITION_SYSTEM,
)
from .transitions import MILESTONES, TERMINAL, Table, Transition


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


#: where every referral Task starts; a Task created by plain REST starts there or one row of
#: the table further on (T1: a client that submits by creating the Task) and not finished
DRAFTED = ("draft", "drafted")
#: what a referral Task may be deleted in by plain REST: a draft, or once entered in error
#: (its links are closed then); otherwise its Appointment and Slot would dangle
DELETE_PAIRS = frozenset({DRAFTED, ("entered-in-error", "entered-in-error")})
#: status changes of a referral ServiceRequest allowed by plain REST (a client submitting its
#: draft, or withdrawing a draft); all others follow the operations ($cancel: revoked,
#: $complete: completed, ...), so a completed or revoked referral never becomes a draft again
REQUEST_MOVES = frozenset(
    {("draft", "active"), ("draft", "revoked"), ("draft", "entered-in-error")}
)
REQUEST_CREATE = frozenset({"draft", "active"})


def is_referral_request(sr: dict[str, Any]) -> bool:
    """A ServiceRequest with our referral profile or direction extension."""
    if sr.get("resourceType") != "ServiceRequest":
        return False
    profiles = (sr.get("meta") or {}).get("profile") or []
    return REQUEST_PROFILE in profiles or any(
        isinstance(e, dict) and e.get("url") == DIRECTION_URL for e in sr.get("extension") or []
    )


def pair_of(task: dict[str, Any]) -> tuple[str | None, str | None]:
    return (task.get("status"), business_status(task))


def _shown(pair: tuple[str | None, str | None]) -> str:
    return f"{pair[0]}/{pair[1] or '-'}"


def check_task_create(table: Table, task: dict[str, Any]) -> Transition | None:
    """409 unless a new (or re-created) referral Task starts as a draft or one row of the
    table after it, unfinished; returns that row, if any, to be recorded like an update."""
    if not is_referral_task(task) or pair_of(task) == DRAFTED:
        return None
    found = table.find(DRAFTED, pair_of(task))  # type: ignore[arg-type]
    if found is None or found.target[0] in TERMINAL:
        raise error(
            409,
            "business-rule",
            f"A referral Task may not be created in {_shown(pair_of(task))}: it starts as "
            "draft/drafted (or is submitted as it is created) and the operations move it on",
            "Task.status",
        )
    return found


def check_task_delete(task: dict[str, Any]) -> None:
    """409 unless the referral Task is a draft or entered in error (else its ServiceRequest,
    Appointment and Slot would be left pointing at nothing)."""
    if is_referral_task(task) and pair_of(task) not in DELETE_PAIRS:
        raise error(
            409,
            "business-rule",
            f"A referral Task in {_shown(pair_of(task))} cannot be deleted; "
            "use $cancel or $enter-in-error",
            "Task",
        )


def check_request_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    """409 when plain REST would change a referral ServiceRequest's status other than as
    REQUEST_MOVES allow (a completed or revoked referral cannot become a draft again), create
    one that is not a draft, or delete one that is not a draft."""
    ours = (old is not None and is_referral_request(old)) or (
        new is not None and is_referral_request(new)
    )
    if not ours:
        return
    before = old.get("status") if old is not None else None
    after = new.get("status") if new is not None else None
    if before == after or (before, after) in REQUEST_MOVES:
        return
    if before is None and after in REQUEST_CREATE:
        return
    if after is None and before == "draft":  # a draft deleted
        return
    what = (
        f"created as {after}" if before is None
        else "deleted" if after is None
        else f"moved from {before} to {after}"
    )  # fmt: skip
    raise error(
        409,
        "business-rule",
        f"A referral ServiceRequest may not be {what} by a plain write; "
        "its status follows the referral operations ($submit, $cancel, $complete, ...)",
        "ServiceRequest.status",
    )


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
    system: str = TRANSITION_SYSTEM,
) -> dict[str, Any]:
    """The Provenance of one transition of Task/task_id (activity: its code in `system`,
    yl-transition for a referral, labelled with the T-number)."""
    coding: dict[str, Any] = {"system": system, "code": activity}
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
    task: dict[str, Any], t: Transition, at: str, agent: dict[str, Any], created: bool = False
) -> dict[str, Any]:
    """A legal transition made by PUT/PATCH (or by creating the Task submitted) gets what the
    operations give it: its milestones and lastModified on the Task (returned), and a
    Provenance (see guard.py); a created Task keeps the milestones its client already gave.
    Linked resources (Appointment, Encounter, ...) are changed only by the operations."""
    given = _milestone_codes(task) if created else set()
    stamped = {**task, "lastModified": at}
    stamped["extension"] = [
        *(task.get("extension") or []),
        *(milestone(c, at, agent) for c in MILESTONES[t.code] if c not in given),
    ]
    return stamped


def _milestone_codes(task: dict[str, Any]) -> set[str]:
    return {
        part["valueCoding"].get("code")
        for e in task.get("extension") or []
        if isinstance(e, dict) and e.get("url") == MILESTONES_URL
        for part in e.get("extension") or []
        if isinstance(part, dict) and isinstance(part.get("valueCoding"), dict)
    }
