"""RequestContext: who is asking and from where, handed to every interaction.

Authorization (SMART scopes, consortium sharing rules) will decide on this object in one place;
until then the principal is anonymous with full access.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    base_url: str
    principal: str = "anonymous"
    scopes: frozenset[str] = frozenset({"system/*.*"})
    organization: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
