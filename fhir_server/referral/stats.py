"""ServiceRequest/$referral-stats: referral volumes, decisions and time to decision per direction
(referral-model.md §3.2, §4.2), computed in SQL over the current Task and ServiceRequest rows.

Unit counted: one referral Task (yl-referral-task) — a Task whose `focus` is a ServiceRequest,
with no `partOf` (approval sub-tasks are not referrals) and `code` task-code#fulfill (or no code).
A referral re-routed to another hospital with a new Task counts once per Task.

Which referrals: those *submitted* in [periodStart, periodEnd] — the time of the Task's earliest
`yl-milestones` entry with code `submitted`, else `Task.authoredOn` — and not in Task.status
`draft` or `entered-in-error` (never submitted / void). Period bounds are FHIR dates or dateTimes
(a date covers its whole day, UTC when no offset is given) and each may be omitted (open).
`organization` (`Organization/{id}` or `{id}`) keeps referrals whose source or target it is.

Direction: the ServiceRequest's `yl-referral-direction` extension (else the Task's copy); Tasks
with neither are left out. Source organization: `ServiceRequest.requester` (an Organization or
the organization of a PractitionerRole), else the Task's requester. Target organization: the
first `ServiceRequest.performer` that is an Organization (or a PractitionerRole's organization),
else `Task.owner` (likewise).

Each direction (`up`, `down`, `lateral`) has these parts:

* `submitted` (integer): every counted referral.
* `accepted`: Task.status accepted, in-progress, completed or failed — accepted at some point
  (business statuses booked, booked-pending-review, approved, bed-assigned, arrived,
  in-treatment, admitted, feedback-sent, down-referred, no-show, treatment-aborted). A referral
  withdrawn after acceptance (cancelled) counts as `cancelled` only.
* `rejected`: Task.status rejected (business statuses rejected and redirected).
* `cancelled`: Task.status cancelled (withdrawn by the sender, or expired).
* `completed`: Task.status completed (feedback-sent, down-referred).
* `noShow`: Task.status failed with businessStatus no-show.
* `inProgress`: Task.status in-progress (arrived, in-treatment, admitted).
* `pending`: Task.status requested or received (awaiting a decision: submitted, received,
  under-review, info-requested).
* `acceptanceRate` (decimal, 4 places): accepted ÷ (accepted + rejected); left out when no
  referral was decided.
* `medianHoursToDecision` (decimal, 2 places): median over the accepted and rejected referrals
  that have a decision milestone of (decision − submission) in hours, where the decision is the
  earliest `yl-milestones` entry coded `decided` or `booked` (direct booking at submission is an
  immediate decision); left out when there is none. Even counts average the middle two.

Shape: without `groupBy`, one parameter per direction, each with the parts above. With
`groupBy` = source | target | type | month, one parameter `group` per key with ≥1 referral,
ordered by key, whose parts are `key` (valueString: `Organization/{id}`, the referral-type code,
or `YYYY-MM` taken from the submission timestamp as recorded, i.e. local time), for organizations
also `display` (the Organization's name), then the three direction parameters as nested parts.
The input parameters are echoed first (periodStart, periodEnd, organization, groupBy).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error
from ..operations.registry import Call, Operations, Outcome
from ..search.values import date_bounds
from ..storage.contract import Session
from .codes import BUSINESS_SYSTEM, DIRECTION_URL, MILESTONES_URL, OPDEF, TYPE_SYSTEM

OPERATIONS = Operations()
operation = OPERATIONS.operation

DIRECTIONS = ("up", "down", "lateral")
GROUPS = ("source", "target", "type", "month")
COUNTS = (
    "submitted",
    "accepted",
    "rejected",
    "cancelled",
    "completed",
    "noShow",
    "inProgress",
    "pending",
)


@operation(
    "$referral-stats",
    "type",
    types=("ServiceRequest",),
    methods=("GET", "POST"),
    definition=f"{OPDEF}ServiceRequest-referral-stats",
)
def referral_stats_operation(call: Call) -> Outcome:
    """Parse the inputs, run the query, answer a Parameters resource."""
    start, end = call.value("periodStart"), call.value("periodEnd")
    organization, group_by = call.value("organization"), call.value("groupBy")
    if isinstance(organization, dict):  # valueReference
        organization = organization.get("reference")
    if group_by is not None and group_by not in GROUPS:
        raise error(400, "invalid", f"groupBy must be one of {', '.join(GROUPS)}", "groupBy")
    result = referral_stats(
        call.services.store.reader(),
        _bound(start, "periodStart", 0),
        _bound(end, "periodEnd", 1),
        _organization(organization),
        group_by,
    )
    echo: list[dict[str, Any]] = []
    for name, value in (("periodStart", start), ("periodEnd", end)):
        if value is not None:
            echo.append(
                {
                    "name": name,
                    "valueDate" if len(str(value)) <= 10 else "valueDateTime": str(value),
                }
            )
    if organization is not None:
        echo.append(
            {"name": "organization", "valueReference": {"reference": _organization(organization)}}
        )
    if group_by is not None:
        echo.append({"name": "groupBy", "valueCode": group_by})
    result["parameter"] = echo + result["parameter"]
    return Outcome(result)


def _bound(value: Any, name: str, which: int) -> str | None:
    if value is None:
        return None
    try:
        return date_bounds(str(value))[which]
    except ValueError as exc:
        raise error(400, "invalid", f"{name}: {exc}", name) from None


def _organization(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.startswith("Organization/") else f"Organization/{text}"


def referral_stats(
    session: Session,
    low: str | None = None,
    high: str | None = None,
    organization: str | None = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """The statistics as a Parameters resource (without the echoed inputs)."""
    rows = session.referral_stats_rows(
        {
            "milestones": MILESTONES_URL,
            "business": BUSINESS_SYSTEM,
            "direction": DIRECTION_URL,
            "type": TYPE_SYSTEM,
            "group_by": group_by or "",
            "low": low,
            "high": high,
            "organization": organization,
        },
    )
    groups: dict[str, dict[str, tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[0] or "", {})[row[1]] = row[2:]
    if group_by is None:
        found = groups.get("", {})
        return {"resourceType": "Parameters", "parameter": _directions(found)}
    names = _names(session, [k for k in groups if k.startswith("Organization/")])
    parameter = []
    for key in sorted(groups):
        parts: list[dict[str, Any]] = [{"name": "key", "valueString": key or "unknown"}]
        if key in names:
            parts.append({"name": "display", "valueString": names[key]})
        parts += _directions(groups[key])
        parameter.append({"name": "group", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameter}


def _directions(found: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """One parameter per direction; zeros where nothing was referred that way."""
    out = []
    for direction in DIRECTIONS:
        values = found.get(direction) or (0,) * len(COUNTS) + (None,)
        counts = dict(zip(COUNTS, (int(v or 0) for v in values[: len(COUNTS)]), strict=True))
        parts: list[dict[str, Any]] = [
            {"name": name, "valueInteger": value} for name, value in counts.items()
        ]
        decided = counts["accepted"] + counts["rejected"]
        if decided:
            rate = round(counts["accepted"] / decided, 4)
            parts.append({"name": "acceptanceRate", "valueDecimal": rate})
        median = values[len(COUNTS)]
        if median is not None:
            parts.append({"name": "medianHoursToDecision", "valueDecimal": float(median)})
        out.append({"name": direction, "part": parts})
    return out


def _names(session: Session, refs: list[str]) -> dict[str, str]:
    """Organization/{id} -> its name, for the organizations that have one."""
    out = {}
    for ref in refs:
        found = session.current("Organization", ref.split("/", 1)[1])
        if found is not None and not found[1].deleted and found[1].json is not None:
            name = orjson.loads(found[1].json).get("name")
            if name:
                out[ref] = str(name)
    return out
