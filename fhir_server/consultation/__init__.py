"""Remote consultation (远程会诊): the Task state machine as data, the operations that apply
it, the write hooks guarding plain REST writes of its Task, ServiceRequest, Appointment and
booked Slots, the expiry sweep, finding experts, statistics, the opinion document and read
receipts (issue 14; referral-model.md §2.9). The video session (Appointment/$join,
signalling) lives in room/."""

from __future__ import annotations

from ..referral.booking_guard import is_linked
from ..search.query import CareRelationship
from ..services import Services
from . import experts, guard, messages, operations, opinion, stats, sweep, transitions
from .codes import BUSINESS_SYSTEM
from .operations import TASK_CODES
from .rules import is_consultation_request

__all__ = ["register", "sweep"]


def register(services: Services) -> None:
    """Add the consultation operations, write hook and care relationship to a Services
    (called by the app factory, after the referral feature: Task/$accept and $cancel serve
    both)."""
    operations.deadlines(services.settings.consultation_response_minutes)  # fail at start-up
    services.features["consultation"] = transitions.load(services.terminology)
    services.operations.extend(op for op in operations.OPERATIONS
                               if op.name not in operations.SHARED)  # fmt: skip
    operations.share(services.operations)
    for more in (experts.OPERATIONS, stats.OPERATIONS, opinion.OPERATIONS, messages.OPERATIONS):
        services.operations.extend(more)
    services.hooks.add_on_write(guard.on_write, ("Task",), guard.is_ours)
    services.hooks.add_on_write(guard.on_request_write, ("ServiceRequest",),
                                is_consultation_request)  # fmt: skip
    services.hooks.add_on_write(guard.on_booking_write, ("Appointment", "Slot"), is_linked)
    services.care.append(care_relationship())


def care_relationship() -> CareRelationship:
    """A consultation Task under way (requested to opinion-drafted) is a care relationship
    between the inviting organization and the invited experts' organizations for its patient:
    they read the patient's record (Patient/$everything, ImagingStudy, ...) while it is open,
    and no longer once it is completed, declined, cancelled or expired (the policy,
    policy/decide.py, narrows every search with it). Its messages (Communications partOf the
    Task) are seen by its parties only."""
    return CareRelationship(
        (TASK_CODES, "fulfill"), BUSINESS_SYSTEM, transitions.LIVE, (), 0, confines_messages=True
    )
