"""The consultation Task state machine as data (issue 14; referral-model.md §2.9): rows of
(number, yl-consultation-transition code, from business statuses, to business status). The
Task.status each business status pairs with is the CodeSystem's `taskStatus` property
(terminology/CodeSystem-yl-consultation-business-status.json); the referral's Table applies it.

    requested ─accept→ accepted ─schedule→ scheduled ─start→ in-progress ─submit-opinion→
    opinion-drafted ─sign→ completed; requested ─decline→ declined, ─redirect→ redirected
    (answered like requested); scheduled ─propose-time→ accepted; requested/redirected/
    accepted/scheduled ─cancel→ cancelled; requested/redirected ─expire (sweep)→ expired.
"""

from __future__ import annotations

from ..referral.transitions import Rows, Table
from ..services import Services
from ..terminology import Terminology
from .codes import BUSINESS_VALUESET

OPEN = ("requested", "redirected")

ROWS: Rows = (
    ("C2", "accept", OPEN, "accepted"),
    ("C3", "decline", OPEN, "declined"),
    ("C4", "redirect", OPEN, "redirected"),
    ("C5", "propose-time", ("scheduled",), "accepted"),
    ("C6", "schedule", ("accepted",), "scheduled"),
    ("C7", "start", ("accepted", "scheduled"), "in-progress"),
    ("C8", "submit-opinion", ("in-progress", "opinion-drafted"), "opinion-drafted"),
    ("C9", "sign", ("opinion-drafted",), "completed"),
    ("C10", "cancel", (*OPEN, "accepted", "scheduled"), "cancelled"),
    ("C11", "expire", OPEN, "expired"),
)  # fmt: skip

#: where a consultation Task starts (C1, $request-consultation or a plain create)
START = ("requested", "requested")
#: Task.status values of a consultation under way: its invited experts' organizations see the
#: patient's record (policy: the care relationship registered in __init__.py); none after
LIVE = ("requested", "accepted", "ready", "in-progress")
#: business statuses whose Task has been answered by an expert (stats: response time)
ANSWERED = frozenset({"accepted", "declined", "redirected"})


def load(terminology: Terminology) -> Table:
    return Table.load(terminology, BUSINESS_VALUESET, ROWS)


def table_of(services: Services) -> Table:
    """The table the consultation feature registered on these services."""
    found: Table = services.features["consultation"]
    return found
