"""The authorization tables' part a move to another database carries (AuthTables.dump), plain
data of no backend: in a module of its own so each backend can name it without importing the
contract (which imports a backend's value types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class AuthDump:
    """What of the authorization tables outlives a move to another database (`fhir-server
    migrate`): clients, users and the id_token key (durable, registered by hand), live
    tokens (a signed-in user and a refresh grant keep working) and assertion ids not yet
    expired (no replay after the move). Codes, launch values and failed-login counts last
    minutes and are left behind: a login under way starts again."""

    clients: list[tuple[str, dict[str, Any]]]
    users: list[tuple[str, dict[str, Any]]]
    key: tuple[str, str] | None
    #: (hash, client_id, kind, data, expires_at), unexpired and not revoked
    tokens: list[tuple[str, str, str, dict[str, Any], float]]
    #: (issuer, jti, expires_at), unexpired
    jtis: list[tuple[str, str, float]]
