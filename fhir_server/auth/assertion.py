"""private_key_jwt client authentication (RFC 7523 §3, SMART Backend Services): a client
proves itself with a JWT signed by a key of its registered JWKS. Stock authlib refuses RS384
and ES384, the two algorithms SMART names, and accepts an `exp` an hour ahead: checked here."""

from __future__ import annotations

import time
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..storage.contract import AuthTables

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART Backend Services: the server validates RS384 and/or ES384 (we take both)
ALGORITHMS = ["RS384", "ES384"]
#: SMART: `exp` no more than five minutes in the future
MAX_LIFETIME = 300
#: clock skew tolerated on exp/nbf/iat
LEEWAY = 30


class AssertionError_(Exception):
    """A client assertion that does not authenticate its client (answer `invalid_client`)."""


class Replayed(AssertionError_):
    """An assertion whose jti was used before (RFC 7523 §3: replay): a security event."""


def verify(store: AuthTables, assertion: str, token_url: str) -> dict[str, Any]:
    """The client the assertion authenticates, or AssertionError_ saying why not."""
    try:
        compact = jws.extract_compact(assertion.encode())
        unverified = orjson.loads(compact.payload)
        header = compact.headers()
    except (JoseError, ValueError) as exc:
        raise AssertionError_(f"malformed client assertion: {exc}") from None
    issuer = unverified.get("iss") if isinstance(unverified, dict) else None
    client = store.client(issuer) if isinstance(issuer, str) else None
    if client is None or "jwks" not in client:
        raise AssertionError_("iss is not a client registered with a JWKS")
    if header.get("alg") not in ALGORITHMS:
        raise AssertionError_(f"alg must be one of {', '.join(ALGORITHMS)}")
    if "kid" not in header:
        raise AssertionError_("the assertion header needs a kid")
    if "jku" in header:  # keys only from the registered JWKS; no URL fetched on demand
        raise AssertionError_("jku is not accepted: keys come from the registered JWKS")
    try:
        keys = KeySet.import_key_set(client["jwks"])
        claims = jwt.decode(assertion, keys, algorithms=ALGORITHMS).claims
    except (JoseError, ValueError) as exc:
        raise AssertionError_(f"signature not verified by a registered key: {exc}") from None
    _check_claims(claims, client["client_id"], token_url)
    if not store.use_jti(
        client["client_id"], claims["jti"], float(claims["exp"]) + LEEWAY, time.time()
    ):
        raise Replayed("jti already used (replayed assertion)")
    return client


def claimed_issuer(assertion: str) -> str | None:
    """The `iss` an assertion claims, unverified (to name a failed client in the audit)."""
    try:
        claims = orjson.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def _check_claims(claims: dict[str, Any], client_id: str, token_url: str) -> None:
    now = time.time()
    if claims.get("sub") != client_id:
        raise AssertionError_("iss and sub must both be the client_id")
    audience = claims.get("aud")
    if token_url not in (audience if isinstance(audience, list) else [audience]):
        raise AssertionError_(f"aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionError_("exp is required")
    if exp <= now - LEEWAY:
        raise AssertionError_("the assertion has expired")
    if exp > now + MAX_LIFETIME + LEEWAY:
        raise AssertionError_(f"exp may be at most {MAX_LIFETIME} s ahead")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise AssertionError_("jti is required")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + LEEWAY:
        raise AssertionError_("the assertion is not valid yet (nbf)")
