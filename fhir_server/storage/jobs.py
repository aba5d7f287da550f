"""The plain data of the background jobs' tables (contract.py: ExportTables, Inbox), named
by the contract and kept here, apart from any backend, so each backend can build them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..search.query import Clause


@dataclass
class Job:
    """One Bulk Data export job as stored."""

    id: str
    owner: str
    principal: dict[str, Any]
    spec: dict[str, Any]
    status: str  # queued | running | complete | failed
    transaction_time: str
    created: float
    worker: str | None = None
    lease: float | None = None
    progress: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    error: str | None = None
    expires: float | None = None


@dataclass(frozen=True)
class Selection:
    """What an export takes of one type: the access narrowing (clauses ANDed), the
    _typeFilter alternatives (each a list of clauses ANDed; ORed; none: no filter), the
    patient compartment membership (the reference parameters into it, and the patients, None
    for all), resources changed after `since`."""

    rtype: str
    clauses: tuple[Clause, ...] = ()
    filters: tuple[tuple[Clause, ...], ...] = ()
    compartment: tuple[str, ...] | None = None
    patients: tuple[str, ...] | None = None
    since: str | None = None


#: received: waiting to be mapped; mapped: done; error: mapping failed (kept for replay);
#: rejected: refused on receipt (never mapped)
INBOX_STATUSES = ("received", "mapped", "error", "rejected")


class Arrival(Protocol):
    """A message as it arrived (the integration's own class). A `received` one with a
    message_id holds the idempotency key (channel, sender, message_id); a `rejected` one
    never does."""

    channel: str
    sender: str
    message_id: str | None
    received_at: str
    remote: str | None
    kind: str | None
    raw: bytes
    meta: dict[str, Any]
    status: str
    error: str | None


@dataclass(frozen=True)
class Message:
    """One inbox message as stored."""

    seq: int
    channel: str
    sender: str
    message_id: str | None
    received_at: str
    remote: str | None
    kind: str | None
    status: str
    error: str | None
    attempts: int
    updated_at: str | None
    duplicates: int
    meta: dict[str, Any]
    raw: bytes
