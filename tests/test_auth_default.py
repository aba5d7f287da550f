"""Authorization is on unless switched off, and switching it off is said out loud (issue 10:
"`auth`, `on` by default; FHIR_SERVER_AUTH=off ... loudly (log line and a warning in the
CapabilityStatement)")."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings


def test_authorization_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FHIR_SERVER_AUTH", raising=False)
    assert Settings().auth == "on" and Settings.from_env().auth == "on"


def test_with_auth_on_a_request_without_a_token_is_401_but_discovery_stays_open(
    client_with: Callable[..., TestClient],
) -> None:
    c = client_with(auth="on")
    refused = c.get("/fhir/Patient")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert c.get("/fhir/metadata").status_code == 200
    assert c.get("/fhir/.well-known/smart-configuration").status_code == 200
    assert c.get("/health").status_code == 200
    security = c.get("/fhir/metadata").json()["rest"][0]["security"]
    assert "WARNING" not in security.get("description", "")


def test_with_auth_off_the_log_and_the_capability_statement_say_so(
    client_with: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        c = client_with(auth="off")
    assert any("auth is off" in r.getMessage() for r in caplog.records)
    security = c.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["description"].startswith("WARNING: authorization is off")
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert c.get("/fhir/Patient").status_code == 200
