"""SMART scopes (App Launch 2.x §scopes-and-launch-context): parsing enough to grant the
requested scopes a client is allowed, v1 (`.read`, `.write`, `.*`) and v2 (`.cruds`, granular
`?param=value`). Enforcing them on FHIR interactions is the policy module's work."""

from __future__ import annotations

import re

_RESOURCE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.*)?")
#: SMART v1 permissions as their v2 letters (SHOULD, permission-v1)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

#: what a client may ask for when registered without --scope: the app scopes, no system/
DEFAULT_APP_SCOPES = (
    "openid fhirUser profile launch launch/patient launch/encounter offline_access "
    "online_access patient/*.cruds user/*.cruds"
)
DEFAULT_BACKEND_SCOPES = "system/*.rs"


def _letters(perm: str) -> str | None:
    if perm in _V1:
        return _V1[perm]
    if perm and all(c in "cruds" for c in perm) and list(perm) == sorted(perm, key="cruds".index):
        return perm
    return None


def covers(allowed: str, requested: str) -> bool:
    """Whether an allowed scope includes a requested one: the same scope, or a resource scope
    of the same context whose type (or `*`) and permissions include the requested ones."""
    if allowed == requested:
        return True
    a, r = _RESOURCE.fullmatch(allowed), _RESOURCE.fullmatch(requested)
    if a is None or r is None or a.group(1) != r.group(1):
        return False
    a_letters, r_letters = _letters(a.group(3)), _letters(r.group(3))
    return (
        a_letters is not None
        and r_letters is not None
        and a.group(2) in ("*", r.group(2))
        and set(r_letters) <= set(a_letters)
        and (a.group(4) is None or a.group(4) == r.group(4))
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
