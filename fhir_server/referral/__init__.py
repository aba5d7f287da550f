"""Two-way referral (双向转诊): the transition table (data), the pure rules over it, the
operations that apply it, the write hook that guards plain REST writes, the sweep, statistics,
the printed slip and the demo consortium (referral-model.md §2.5, §3.2)."""

from __future__ import annotations

from ..search.query import CareRelationship
from ..services import Services
from . import guard, operations, slip, stats
from .booking_guard import is_linked
from .codes import BUSINESS_SYSTEM
from .transitions import TERMINAL, Table
from .work import TASK_CODES

#: Task statuses (R4 task-status) of a referral that is under way: the receiving organization
#: sees the patient's record. A draft has not been sent; one entered in error never was a referral
LIVE = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")


def register(services: Services) -> None:
    """Add the referral operations and write hooks to a Services (called by the app factory)."""
    services.features["referral"] = Table.load(services.terminology)
    services.operations.extend(operations.OPERATIONS)
    services.operations.extend(slip.OPERATIONS)
    services.operations.extend(stats.OPERATIONS)
    services.hooks.add_on_write(guard.on_write, ("Task", "ServiceRequest"), guard.is_ours)
    services.hooks.add_on_write(guard.on_booking_write, ("Appointment", "Slot"), is_linked)
    services.care.append(care_relationship(services.settings.referral_access_days))


def care_relationship(days: int) -> CareRelationship:
    """A referral Task (Task.code fulfill, our business status) is a care relationship between
    the referring and receiving organizations for its patient (the consortium rule of the
    policy): while under way, and for `days` after it ended (referral_access_days)."""
    ended = tuple(sorted(TERMINAL - {"entered-in-error"}))
    return CareRelationship((TASK_CODES, "fulfill"), BUSINESS_SYSTEM, LIVE, ended, days)

