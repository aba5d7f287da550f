"""The audit trail (issue 10, security.md §4): an AuditEvent after IHE BALP for every REST
interaction, written with the change it records, chained by hashes so that tampering shows
(`fhir-server audit verify`), stored and searched as ordinary AuditEvent resources, which only
the server writes. Who may read them (the auditor role) is the policy module's decision
(policy/decide.py ROLE_ONLY)."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..services import Services
from .trail import Trail


def register(services: Services) -> None:
    """Audit every REST interaction and the authorization server's security events, chain
    the events, refuse client writes of AuditEvents."""
    trail = Trail(services)
    services.features["audit"] = trail
    services.hooks.before_commit.append(trail.before_commit)
    services.hooks.before_lock["audit"] = trail.before_lock
    services.hooks.on_access.append(trail.on_access)
    services.hooks.on_security.append(trail.on_security)
    services.hooks.on_close.append(trail.close)
    services.hooks.add_on_write(refuse_client_write, ("AuditEvent",), _every)


def _every(resource: dict[str, Any]) -> bool:
    return True


def refuse_client_write(change: Change) -> Effect | None:
    """AuditEvents are written by the server only and never changed or deleted (BALP; HIPAA
    164.312(c) integrity): every create, update, patch or delete over REST is refused."""
    exc = error(
        405,
        "not-supported",
        f"AuditEvents are written by the server only; {change.method} of AuditEvent "
        "is not allowed",
    )
    exc.headers["Allow"] = "GET, HEAD"
    raise exc
