"""Join tokens: short-lived JWTs (RFC 7519) the server signs with its own key (RS256, the
authorization server's, kept in the database, so every worker process verifies what another
issued), bound to one Appointment and one participant. Nothing secret is stored in FHIR."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

#: the audience of a join token: the signalling room, never the FHIR API (a join token is no
#: bearer token, and a bearer token no join token)
AUDIENCE = "consult-room"


@dataclass(frozen=True)
class Grant:
    """What a valid join token says: who joins which Appointment, until when (epoch s)."""

    appointment: str
    participant: str
    expires: int


def issue(key: RSAKey, grant: Grant, issuer: str) -> str:
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": grant.participant,
        "appointment": grant.appointment,
        "iat": int(time.time()),
        "exp": grant.expires,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=["RS256"])


def verify(key: RSAKey, value: str, now: float | None = None) -> Grant | None:
    """The grant of a token this server signed for the room and that has not expired; None
    for anything else (forged, altered, expired, another audience, malformed)."""
    try:
        claims: dict[str, Any] = jwt.decode(value, key, algorithms=["RS256"]).claims
    except (JoseError, ValueError, TypeError):
        return None
    exp, appointment, participant = claims.get("exp"), claims.get("appointment"), claims.get("sub")
    if (
        claims.get("aud") != AUDIENCE
        or not isinstance(exp, int)
        or exp <= (time.time() if now is None else now)
        or not isinstance(appointment, str)
        or not isinstance(participant, str)
    ):
        return None
    return Grant(appointment, participant, exp)
