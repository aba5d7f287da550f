"""The referral Task state machine as data (referral-model.md §2.5): business statuses, the
Task.status each pairs with, and transitions T1-T19. Nothing else decides what is allowed."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FhirError, error
from ..terminology import TERMINOLOGY

CANON = "https://yilian.health/fhir"
BUSINESS_SYSTEM = f"{CANON}/CodeSystem/yl-referral-business-status"
TRANSITION_SYSTEM = f"{CANON}/CodeSystem/yl-transition"

Pair = tuple[str, str]  # (Task.status, businessStatus code)

#: business status -> the only Task.status it may pair with: the CodeSystem's `taskStatus`
#: property (terminology/CodeSystem-yl-referral-business-status.json) is the one source
BUSINESS_STATUS: dict[str, str] = {
    code: str(TERMINOLOGY.property(BUSINESS_SYSTEM, code, "taskStatus"))
    for _, code, _ in TERMINOLOGY.expand(f"{CANON}/ValueSet/yl-referral-business-status") or ()
}

TERMINAL = frozenset({"completed", "rejected", "cancelled", "failed", "entered-in-error"})


def pairs(status: str) -> frozenset[Pair]:
    """Every (status, business) pair with this Task.status: `status/*` in the table."""
    return frozenset((s, b) for b, s in BUSINESS_STATUS.items() if s == status)


def pair(business: str) -> Pair:
    return (BUSINESS_STATUS[business], business)


@dataclass(frozen=True)
class Transition:
    """One row: T-number, yl-transition code, the pairs it may start from, the pair it ends in."""

    number: str
    code: str
    sources: frozenset[Pair]
    target: Pair


def _row(number: str, code: str, sources: frozenset[Pair] | set[Pair], to: str) -> Transition:
    return Transition(number, code, frozenset(sources), pair(to))


SUBMITTED = pair("submitted")
RECEIVED_ANY = pairs("received")
ACCEPTED_ANY = pairs("accepted")
IN_PROGRESS_ANY = pairs("in-progress")
NON_TERMINAL = frozenset(p for p in map(pair, BUSINESS_STATUS) if p[0] not in TERMINAL)
BOOKED_ANY = {pair("booked"), pair("booked-pending-review")}

#: The table. Rows sharing a number are the alternatives of one transition (e.g. T10 reject /
#: redirect); for one code, the first row whose sources match is the default.
TRANSITIONS: tuple[Transition, ...] = (
    _row("T1", "submit", {pair("drafted")}, "submitted"),
    _row("T2", "submit-booked", {pair("drafted")}, "booked"),
    _row("T2", "submit-booked", {pair("drafted")}, "booked-pending-review"),
    _row("T3", "claim", {SUBMITTED}, "received"),
    _row("T4", "review", {SUBMITTED, pair("received")}, "under-review"),
    _row("T5", "request-info", {pair("received"), pair("under-review")}, "info-requested"),
    _row("T6", "provide-info", {pair("info-requested")}, "received"),
    _row("T6", "provide-info", {pair("info-requested")}, "under-review"),
    _row("T7", "accept", {SUBMITTED, *RECEIVED_ANY}, "approved"),
    _row("T7", "accept", {SUBMITTED, *RECEIVED_ANY}, "booked"),
    _row("T8", "assign-bed", {pair("approved")}, "bed-assigned"),
    _row("T9", "confirm-booking", {pair("booked-pending-review")}, "booked"),
    _row("T10", "reject", {SUBMITTED, *RECEIVED_ANY, *BOOKED_ANY}, "rejected"),
    _row("T10", "redirect", {SUBMITTED, *RECEIVED_ANY, *BOOKED_ANY}, "redirected"),
    _row("T11", "cancel", {pair("drafted"), SUBMITTED, *RECEIVED_ANY, *ACCEPTED_ANY}, "withdrawn"),
    _row("T12", "expire", {SUBMITTED, *RECEIVED_ANY}, "expired"),
    _row("T13", "check-in", ACCEPTED_ANY, "arrived"),
    _row("T14", "start-treatment", {pair("arrived")}, "in-treatment"),
    _row("T14", "start-treatment", {pair("arrived")}, "admitted"),
    _row("T15", "no-show", ACCEPTED_ANY, "no-show"),
    _row("T16", "complete", IN_PROGRESS_ANY, "feedback-sent"),
    _row("T17", "complete-down-referred", IN_PROGRESS_ANY, "down-referred"),
    _row("T18", "fail", IN_PROGRESS_ANY, "treatment-aborted"),
    _row("T19", "enter-in-error", NON_TERMINAL, "entered-in-error"),
)

CODES = frozenset(t.code for t in TRANSITIONS)


def refusal(code: str, status: str, business: str | None) -> FhirError:
    return error(
        409,
        "business-rule",
        f"Transition '{code}' is not allowed from Task status {status}/{business or '-'}",
        "Task.status",
    )


def allowed(code: str, status: str, business: str | None, to: str | None = None) -> Transition:
    """The row for transition `code` from (status, business), ending in business status `to`
    when given (else the default row); 409 business-rule when the table has none."""
    if code not in CODES:
        raise ValueError(f"unknown transition code {code!r}")
    for t in TRANSITIONS:
        if t.code == code and (status, business) in t.sources and to in (None, t.target[1]):
            return t
    raise refusal(code, status, business)


def find_transition(old: Pair, new: Pair) -> Transition | None:
    """The row that moves a Task from `old` to `new` (for validated PUT/PATCH), or None."""
    for t in TRANSITIONS:
        if old in t.sources and t.target == new:
            return t
    return None


def is_pair(status: str | None, business: str | None) -> bool:
    """Whether the business status may pair with the Task.status (invariant yl-task-1)."""
    return business is not None and BUSINESS_STATUS.get(business) == status


#: approval sub-task (yl-referral-approval-task) decisions: operation -> (from statuses, to)
APPROVAL_DECISIONS: dict[str, tuple[frozenset[str], str]] = {
    "accept": (frozenset({"requested", "received"}), "accepted"),
    "reject": (frozenset({"requested", "received"}), "rejected"),
}
#: approval sub-task statuses that count as approved / still open
APPROVED = frozenset({"accepted", "completed"})
APPROVAL_OPEN = frozenset({"requested", "received"})

#: yl-milestone codes each transition stamps on the Task (extension yl-milestones), one code
#: per event so that SLA and metric queries can tell them apart.
MILESTONES: dict[str, tuple[str, ...]] = {
    "submit": ("submitted",),
    "submit-booked": ("submitted", "booked"),
    "claim": ("received",),
    "review": ("received",),
    "request-info": ("info-requested",),
    "provide-info": ("info-provided",),
    "accept": ("decided",),
    "assign-bed": ("bed-assigned",),
    "confirm-booking": ("booked",),
    "reject": ("decided",),
    "redirect": ("decided",),
    "cancel": ("withdrawn",),
    "expire": ("expired",),
    "check-in": ("arrived",),
    "start-treatment": ("treatment-started",),
    "no-show": ("no-show",),
    "complete": ("completed", "feedback-sent"),
    "complete-down-referred": ("completed", "down-referred"),
    "fail": ("failed",),
    "enter-in-error": ("entered-in-error",),
}
