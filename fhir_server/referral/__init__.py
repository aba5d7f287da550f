"""Two-way referral (双向转诊): the transition table (data), the pure rules over it, the
operations that apply it, the write hook that guards plain REST writes, the sweep, statistics,
the printed slip and the demo consortium (referral-model.md §2.5, §3.2)."""

from __future__ import annotations

from ..services import Services
from . import guard, operations, slip, stats
from .transitions import Table


def register(services: Services) -> None:
    """Add the referral operations and write hook to a Services (called by the app factory)."""
    services.features["referral"] = Table.load(services.terminology)
    services.operations.extend(operations.OPERATIONS)
    services.operations.extend(slip.OPERATIONS)
    services.operations.extend(stats.OPERATIONS)
    services.hooks.add_on_write(guard.on_write, ("Task", "ServiceRequest"), guard.is_ours)

