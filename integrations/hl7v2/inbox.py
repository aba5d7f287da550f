"""What the listener hands the inbox (the storage contract's `Inbox`, reached as
`services.store.inbox`: the integration never imports a backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Arrival:
    """One message as it arrived: `received` (to be mapped; it holds the idempotency key
    (channel, sender, MSH-10)) or `rejected` (refused on receipt, with the error)."""

    channel: str
    sender: str
    message_id: str | None
    received_at: str
    remote: str | None
    kind: str | None
    raw: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "received"
    error: str | None = None
