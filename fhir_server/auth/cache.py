"""The Principals of access tokens checked a moment ago, per worker process: a request whose
token was seen within `seconds` skips the token table (and the PractitionerRole read), so a
bearer token costs a hash and a dict lookup on the event loop instead of a threadpool hop and
two queries.

The price is a bound, not a hole: a token revoked (RFC 7009), or whose client is removed, or a
user moved to another organization, is still taken as it was for at most `seconds` by the
worker processes that did not handle the change (RFC 7009 §2.2 allows such a propagation delay
and asks to keep it small). The worker that revokes forgets every entry at once. An entry never
outlives its token's `exp`, and only live tokens are kept: refusals are looked up every time.
"""

from __future__ import annotations

import time

from ..context import Principal


class PrincipalCache:
    """token hash -> (Principal, the FHIR base it was issued for, until when the entry is
    fresh on the monotonic clock, the token's `exp` on the wall clock). The freshness bound is
    kept on the monotonic clock so that a step of the system clock cannot stretch it."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self._entries: dict[str, tuple[Principal, str, float, float]] = {}

    def get(self, key: str, base: str) -> Principal | None:
        """The Principal of a token seen live within `seconds`, for this base; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        who, aud, fresh_until, expires_at = entry
        if time.monotonic() >= fresh_until or time.time() >= expires_at:
            self._entries.pop(key, None)
            return None
        return who if aud == base else None

    def put(self, key: str, base: str, who: Principal, expires_at: float) -> None:
        """Keep a live token's Principal for `seconds`, and never past the token's expiry."""
        if self.seconds <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= self.size:
            self._entries = {k: e for k, e in self._entries.items() if e[2] > now}
            while len(self._entries) >= self.size:  # all fresh: the oldest go first
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (who, base, now + self.seconds, expires_at)

    def clear(self) -> None:
        """Forget everything: a token was revoked in this process."""
        self._entries = {}
