"""The demo consortium's sign-ins: a public sample app and users with one fixed password, so
that a token can be had on a fresh demo server (README, Security). Never for real data."""

from __future__ import annotations

from ..storage.contract import AuthTables
from .admin import add_client, add_user

#: the one password of every demo user: printed on the console and in the README
DEMO_PASSWORD = "demo-password"
DEMO_APP = "demo-app"
DEMO_REDIRECT = "http://127.0.0.1:9000/callback"
DEMO_SCOPES = "openid fhirUser launch launch/patient patient/*.rs user/*.rs offline_access"


def register_demo(auth: AuthTables, users: list[tuple[str, str]]) -> str:
    """Register (or reset) the sample app and the users given as (username, fhirUser); one
    line for the console saying how to sign in."""
    add_client(
        auth, DEMO_APP, [DEMO_REDIRECT], public=True, scope=DEMO_SCOPES,
        origins=["http://127.0.0.1:9000"],
    )
    for username, fhir_user in users:
        add_user(auth, username, DEMO_PASSWORD, fhir_user)
    names = ", ".join(u for u, _ in users)
    return (
        f"demo sign-ins (password {DEMO_PASSWORD!r}, a demo only): {names}; "
        f"public app {DEMO_APP} (redirect URI {DEMO_REDIRECT})"
    )
