"""RequestContext: who is asking and from where, handed to every interaction.

The principal comes from the bearer token when authorization is on (auth/); policy decisions
are made on it in one place. Without a token (or with `auth` off) the principal is anonymous.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """The caller as a token describes it (SMART App Launch 2.x: scopes and launch context)."""

    #: "anonymous" | "user" (a practitioner) | "patient" | "system" (backend services client)
    kind: str = "anonymous"
    client_id: str | None = None
    #: the login name of a user or patient
    user: str | None = None
    #: the FHIR resource the user is (PractitionerRole/x or Patient/y): the `fhirUser` claim
    fhir_user: str | None = None
    #: the user's or system client's organization, as `Organization/id`
    organization: str | None = None
    #: launch context (token response `patient`, `encounter`)
    patient: str | None = None
    encounter: str | None = None
    #: granted scopes, as strings (SMART v1 or v2 syntax)
    scopes: tuple[str, ...] = ()
    #: server roles beyond scopes, e.g. "auditor"
    roles: frozenset[str] = frozenset()
    #: the token's id (jti) or a short digest of an opaque token, for the audit trail
    token_id: str | None = None

    @property
    def label(self) -> str:
        """How this principal is named in Provenance and audit records."""
        return self.fhir_user or self.user or self.client_id or self.kind


ANONYMOUS = Principal()


@dataclass(frozen=True)
class RequestContext:
    base_url: str
    principal: Principal = ANONYMOUS
    #: the caller's network address, when known (audit)
    client_address: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: the reason given to break the glass (X-Break-Glass-Reason), None when none was: the
    #: policy decides whether it is honoured (policy/enforce.py), the audit records it
    break_glass: str | None = None
