"""SMART App Launch scopes (v1 and v2, granular) parsed into Grants: what a token delegates.

scopes-and-launch-context.html: `(patient|user|system)/(Type|*).(cruds|read|write|*)[?query]`.
Pure; a scope that does not parse grants nothing (never more than the string names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

from ..spec import RESOURCE_TYPES

#: v2 permission letters, in the order the specification requires them
LETTERS = "cruds"
#: v1 permissions as their v2 letters (permission-v1: .read => rs, .write => cud, .* => cruds)
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
#: launch and identity scopes: they ask for context or tokens, not for access to resources
NON_RESOURCE = frozenset({"launch", "openid", "fhirUser", "profile", "offline_access",
                          "online_access"})
_SCOPE = re.compile(r"(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?", re.S)
_V2 = re.compile(r"c?r?u?d?s?")


@dataclass(frozen=True)
class Grant:
    """One resource scope: the context level, the type (or `*`), the permitted interaction
    letters (subset of "cruds") and granular criteria as (search parameter, value) pairs."""

    level: str
    rtype: str
    letters: frozenset[str]
    criteria: tuple[tuple[str, str], ...] = ()

    def covers(self, letter: str, rtype: str) -> bool:
        return letter in self.letters and self.rtype in ("*", rtype)


@lru_cache(maxsize=4096)
def parse_scope(scope: str) -> Grant | None:
    """One scope string as a Grant; None for launch/identity scopes and anything malformed.
    Pure, so cached: every request with a token asks again for the same few scopes."""
    if scope in NON_RESOURCE or scope.startswith("launch/"):
        return None
    match = _SCOPE.fullmatch(scope)
    if match is None:
        return None
    level, rtype, permission, query = match.groups()
    if rtype != "*" and rtype not in RESOURCE_TYPES:
        return None
    letters = V1.get(permission)
    if letters is None:
        # v2: letters in order, each at most once, at least one (".dus" is out of order)
        if not permission or not _V2.fullmatch(permission):
            return None
        letters = permission
    criteria: tuple[tuple[str, str], ...] = ()
    if query is not None:
        criteria = _criteria(query)
        if not criteria or permission in V1:  # granular criteria are a v2 feature
            return None
    return Grant(level, rtype, frozenset(letters), criteria)


def _criteria(query: str) -> tuple[tuple[str, str], ...]:
    """`param=value&...` pairs; empty when any pair is malformed (so the scope is dropped)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return ()
    if any(not name or not value for name, value in pairs):
        return ()
    return tuple(pairs)


def parse_scopes(scopes: tuple[str, ...] | list[str] | str) -> list[Grant]:
    """Every resource grant in a scope list (space-separated string or sequence)."""
    items = scopes.split() if isinstance(scopes, str) else scopes
    return [g for g in (parse_scope(s) for s in items) if g is not None]
