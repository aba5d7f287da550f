"""Hashes for what the server hands out or is given: scrypt for passwords and client secrets
(chosen by people, so slow and salted), SHA-256 for random tokens (256 bits: a fast hash is
enough, and lookups stay indexed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: scrypt cost (RFC 7914): n = 2^15, r = 8 (32 MiB, ~50 ms), as OWASP's password storage
#: cheat sheet recommends at least; stdlib, so no new dependency
_N, _R, _P = 2**15, 8, 1


def hash_secret(secret: str) -> str:
    """`scrypt$n$r$p$salt$hash`, parameters stored so they can grow later."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _N, _R, _P)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    actual = _scrypt(secret, base64.urlsafe_b64decode(salt), int(n), int(r), int(p))
    return hmac.compare_digest(_b64(actual), digest)


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()
