"""The referral Task state machine as data (referral-model.md §2.5): business statuses, the
Task.status each pairs with, and transitions T1-T19. Nothing else decides what is allowed."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FhirError, error
from ..services import Services
from ..terminology import Terminology
from .codes import BUSINESS_VALUESET

Pair = tuple[str, str]  # (Task.status, businessStatus code)

TERMINAL = frozenset({"completed", "rejected", "cancelled", "failed", "entered-in-error"})


@dataclass(frozen=True)
class Transition:
    """One row: T-number, yl-transition code, the pairs it may start from, the pair it ends in."""

    number: str
    code: str
    sources: frozenset[Pair]
    target: Pair


#: (T-number, yl-transition code, source business statuses, target business status)
Rows = tuple[tuple[str, str, tuple[str, ...], str], ...]

#: Where a row may start: business statuses, or `status/*` (every business status that pairs
#: with that Task.status), or "non-terminal". Rows sharing a number are the alternatives of
#: one transition (e.g. T10 reject / redirect); for one code, the first matching row is the
#: default.
ROWS: Rows = (
    ("T1", "submit", ("drafted",), "submitted"),
    ("T2", "submit-booked", ("drafted",), "booked"),
    ("T2", "submit-booked", ("drafted",), "booked-pending-review"),
    ("T3", "claim", ("submitted",), "received"),
    ("T4", "review", ("submitted", "received"), "under-review"),
    ("T5", "request-info", ("received", "under-review"), "info-requested"),
    ("T6", "provide-info", ("info-requested",), "received"),
    ("T6", "provide-info", ("info-requested",), "under-review"),
    ("T7", "accept", ("submitted", "received/*"), "approved"),
    ("T7", "accept", ("submitted", "received/*"), "booked"),
    ("T8", "assign-bed", ("approved",), "bed-assigned"),
    ("T9", "confirm-booking", ("booked-pending-review",), "booked"),
    ("T10", "reject", ("submitted", "received/*", "booked", "booked-pending-review"), "rejected"),
    ("T10", "redirect", ("submitted", "received/*", "booked", "booked-pending-review"),
     "redirected"),
    ("T11", "cancel", ("drafted", "submitted", "received/*", "accepted/*"), "withdrawn"),
    ("T12", "expire", ("submitted", "received/*"), "expired"),
    ("T13", "check-in", ("accepted/*",), "arrived"),
    ("T14", "start-treatment", ("arrived",), "in-treatment"),
    ("T14", "start-treatment", ("arrived",), "admitted"),
    ("T15", "no-show", ("accepted/*",), "no-show"),
    ("T16", "complete", ("in-progress/*",), "feedback-sent"),
    ("T17", "complete-down-referred", ("in-progress/*",), "down-referred"),
    ("T18", "fail", ("in-progress/*",), "treatment-aborted"),
    ("T19", "enter-in-error", ("non-terminal",), "entered-in-error"),
)  # fmt: skip


class Table:
    """The transition table with each business status paired to its Task.status: the
    CodeSystem's `taskStatus` property (terminology/CodeSystem-yl-referral-business-status.json)
    is the one source of that pairing, so the table is built from the terminology."""

    def __init__(self, business_status: dict[str, str], rows: Rows | None = None) -> None:
        #: business status -> the only Task.status it may pair with
        self.business_status = business_status
        self.transitions = tuple(
            Transition(number, code, self._sources(sources), self.pair(to))
            for number, code, sources, to in (ROWS if rows is None else rows)
        )
        self.codes = frozenset(t.code for t in self.transitions)

    @classmethod
    def load(
        cls, terminology: Terminology, valueset: str = BUSINESS_VALUESET, rows: Rows | None = None
    ) -> Table:
        """The table of `rows` (default: the referral's) over the business statuses of
        `valueset`, each paired by its CodeSystem's `taskStatus` property."""
        expansion = terminology.expand(valueset) or ()
        return cls(
            {code: str(terminology.property(system, code, "taskStatus"))
             for system, code, _ in expansion},
            rows,
        )  # fmt: skip

    def pair(self, business: str) -> Pair:
        return (self.business_status[business], business)

    def pairs(self, status: str) -> frozenset[Pair]:
        """Every (status, business) pair with this Task.status: `status/*` in the table."""
        return frozenset((s, b) for b, s in self.business_status.items() if s == status)

    def _sources(self, names: tuple[str, ...]) -> frozenset[Pair]:
        out: set[Pair] = set()
        for name in names:
            if name == "non-terminal":
                out |= {self.pair(b) for b, s in self.business_status.items() if s not in TERMINAL}
            elif name.endswith("/*"):
                out |= self.pairs(name[:-2])
            else:
                out.add(self.pair(name))
        return frozenset(out)

    def allowed(
        self, code: str, status: str, business: str | None, to: str | None = None
    ) -> Transition:
        """The row for transition `code` from (status, business), ending in business status
        `to` when given (else the default row); 409 business-rule when the table has none."""
        if code not in self.codes:
            raise ValueError(f"unknown transition code {code!r}")
        for t in self.transitions:
            if t.code == code and (status, business) in t.sources and to in (None, t.target[1]):
                return t
        raise refusal(code, status, business)

    def find(self, old: Pair, new: Pair) -> Transition | None:
        """The row that moves a Task from `old` to `new` (for PUT/PATCH), or None."""
        for t in self.transitions:
            if old in t.sources and t.target == new:
                return t
        return None

    def is_pair(self, status: str | None, business: str | None) -> bool:
        """Whether the business status may pair with the Task.status (invariant yl-task-1)."""
        return business is not None and self.business_status.get(business) == status


def table_of(services: Services) -> Table:
    """The table the referral feature registered on these services (referral.register)."""
    found: Table = services.features["referral"]
    return found


def refusal(code: str, status: str, business: str | None) -> FhirError:
    return error(
        409,
        "business-rule",
        f"Transition '{code}' is not allowed from Task status {status}/{business or '-'}",
        "Task.status",
    )


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
    "confirm-booking": ("decided",),  # the receiver's review of a booking it already has
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
