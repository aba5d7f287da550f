"""SMART scopes at grant time (App Launch 2.x §scopes-and-launch-context): which requested
scopes a client is allowed. Parsing (v1, v2, granular) and enforcing are the policy module's."""

from __future__ import annotations

from ..policy.scopes import parse_scope

#: what a client may ask for when registered without --scope: the app scopes, no system/
DEFAULT_APP_SCOPES = (
    "openid fhirUser profile launch launch/patient launch/encounter offline_access "
    "online_access patient/*.cruds user/*.cruds"
)
DEFAULT_BACKEND_SCOPES = "system/*.rs"


def covers(allowed: str, requested: str) -> bool:
    """Whether an allowed scope includes a requested one: the same scope, or a resource scope
    of the same context whose type (or `*`) and permissions include the requested ones (the
    scope grammar is the policy module's: one parser for granting and enforcing)."""
    if allowed == requested:
        return True
    a, r = parse_scope(allowed), parse_scope(requested)
    if a is None or r is None or a.level != r.level:
        return False
    return (
        a.rtype in ("*", r.rtype)
        and r.letters <= a.letters
        and (not a.criteria or a.criteria == r.criteria)
    )


def grant(requested: str, allowed: str) -> list[str]:
    """The requested scopes the client is allowed (RFC 6749 §3.3: the server may grant less),
    in the order asked, without duplicates."""
    permitted = allowed.split()
    out: list[str] = []
    for scope in requested.split():
        if scope not in out and any(covers(a, scope) for a in permitted):
            out.append(scope)
    return out
