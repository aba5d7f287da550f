"""Test helpers that act as a SMART app and its browser against the real authorization server:
PKCE, the login/picker/consent forms, the code on the redirect, Backend Services assertions.
Shared by tests/test_auth_server.py and tests/test_policy_tokens.py."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient
from joserfc import jwt

BASE = "http://testserver/fhir"
TOKEN_URL = "http://testserver/auth/token"
REDIRECT = "http://app.example/callback"
PASSWORD = "correct horse"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def auth_of(c: TestClient) -> Any:
    """The authorization server feature of the app (its store registers clients and users)."""
    return c.app.state.services.features["auth"]  # type: ignore[attr-defined]


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def hidden(page: str) -> dict[str, str]:
    """The hidden inputs of a form page, as a browser would submit them."""
    return {
        html.unescape(n): html.unescape(v)
        for n, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    }


def drive(
    c: TestClient | httpx.Client, params: dict[str, str], user: str, patient: str = "Patient/p1",
    password: str = PASSWORD,
) -> Any:
    """Act as the browser: sign in, pick the patient, approve; the final response."""
    r = c.get("/auth/authorize", params=params, follow_redirects=False)
    for _ in range(4):
        if r.status_code != 200:
            return r
        form = hidden(r.text)
        if 'name="password"' in r.text:
            form.update(username=user, password=password)
        elif 'name="approve"' in r.text:
            form["approve"] = "yes"
        elif 'type="radio" name="patient"' in r.text:
            form["patient"] = patient
        r = c.post("/auth/authorize", data=form, follow_redirects=False)
    return r


def auth_code(r: Any, state: str | None = None) -> str:
    """The authorization code on the redirect back to the app (RFC 6749 §4.1.2)."""
    assert r.status_code == 302, r.text
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert "error" not in query, query
    if state:
        assert query["state"] == [state]
    return query["code"][0]


def code_flow(
    c: TestClient, client_id: str, scope: str, user: str, launch: str = "", **extra: str
) -> Any:
    """The token response of the authorization-code flow with PKCE S256 (RFC 7636), driven
    like a browser through login, picker and consent in a new browser (no sign-in session of
    an earlier flow); a public client names itself (RFC 6749 §3.2.1)."""
    browser = TestClient(c.app, raise_server_exceptions=False)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": state,
        "aud": BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **({"launch": launch} if launch else {}),
        **extra,
    }
    form = {
        "grant_type": "authorization_code",
        "code": auth_code(drive(browser, params, user), state),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": client_id,
    }
    return browser.post("/auth/token", data=form)


def assertion(key: Any, alg: str, client_id: str, **claims: Any) -> str:
    """A Backend Services client assertion (RFC 7523 §3, SMART Backend Services)."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, algorithms=[alg])
