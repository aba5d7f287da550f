"""What an interaction hands back to the HTTP layer (or to a bundle entry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage.contract import Stored


@dataclass(frozen=True)
class Result:
    """HTTP status plus the stored version it concerns (for ETag, Location and the body)."""

    status: int
    stored: Stored | None = None
    #: OperationOutcome or other non-stored body (search/history bundles as bytes)
    body: dict[str, Any] | bytes | None = None
    #: send Location (create, update-as-create)
    location: bool = False
