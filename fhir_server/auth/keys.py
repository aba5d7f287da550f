"""The server's signing key (RS256, made on first start and kept in the database), its public
JWKS, and OpenID Connect id_tokens (SMART App Launch §OpenID Connect: RS256 SHALL)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from ..storage.contract import AuthTables

ID_TOKEN_SECONDS = 3600


class Keys:
    def __init__(self, store: AuthTables) -> None:
        self.store = store
        self._key: RSAKey | None = None

    def key(self) -> RSAKey:
        if self._key is None:
            _, private = self.store.signing_key(_make_key)
            self._key = RSAKey.import_key(json.loads(private))
        return self._key

    def jwks(self) -> dict[str, Any]:
        """Bare public JWKs (SMART: `jwks_uri` serves the id_token keys)."""
        return {"keys": [self.key().as_dict(private=False)]}

    def id_token(self, issuer: str, client_id: str, claims: dict[str, Any]) -> str:
        now = int(time.time())
        key = self.key()
        payload = {"iss": issuer, "aud": client_id, "iat": now, "exp": now + ID_TOKEN_SECONDS}
        header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
        return jwt.encode(header, {**payload, **claims}, key, algorithms=["RS256"])


def _make_key() -> tuple[str, str]:
    kid = uuid.uuid4().hex
    key = RSAKey.generate_key(2048, {"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
    return kid, json.dumps(key.as_dict(private=True))
