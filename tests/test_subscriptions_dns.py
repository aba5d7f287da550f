"""The SSRF guard's DNS lookup on Subscription create happens before the write lock: a slow
resolver delays that request alone, never the other writes (security.md §5.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from test_subscriptions import subscription

from fhir_server.subscriptions import endpoint

SLOW_HOST = "slow-dns.example"  # answered by the stand-in resolver below, never by real DNS


def test_a_slow_resolver_on_subscription_create_does_not_hold_the_write_lock(
    live_server_with: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = live_server_with(subscription_allow_private=True)
    asked, answered = threading.Event(), threading.Event()
    real = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != SLOW_HOST:
            return real(host, *args, **kwargs)
        asked.set()
        time.sleep(2)  # a resolver that takes 2 s (the check waits up to RESOLVE_SECONDS)
        answered.set()
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(endpoint.socket, "getaddrinfo", slow)
    monkeypatch.setattr(endpoint, "RESOLVE_SECONDS", 30.0)  # so the 2 s lookup completes
    created: list[httpx.Response] = []
    hook = {"type": "rest-hook", "endpoint": f"http://{SLOW_HOST}:9/hook"}
    creator = threading.Thread(target=lambda: created.append(
        httpx.post(f"{base}/Subscription", json=subscription("Observation?code=1", hook),
                   timeout=60)))  # fmt: skip
    creator.start()
    assert asked.wait(20), "the Subscription's endpoint was never resolved"
    # while the name is being resolved, another client writes: were the lookup inside the
    # write transaction, this PUT would wait the 2 s for the lock and return after `answered`
    r = httpx.put(f"{base}/Patient/other", json={"resourceType": "Patient", "id": "other"},
                  timeout=60)  # fmt: skip
    assert r.status_code == 201, r.text
    assert not answered.is_set(), "the write waited for the Subscription's DNS lookup"
    creator.join(60)
    assert created and created[0].status_code == 201, created and created[0].text
    assert created[0].json()["status"] == "active"  # the name resolved to an allowed address


def test_a_name_resolving_to_a_refused_address_is_still_refused_before_the_write(
    live_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == SLOW_HOST else host, *args, **kwargs)

    monkeypatch.setattr(endpoint.socket, "getaddrinfo", loopback)
    hook = {"type": "rest-hook", "endpoint": f"http://{SLOW_HOST}/hook"}
    r = httpx.post(f"{live_server}/Subscription", json=subscription("Observation?code=1", hook))
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["code"] == "security"
    assert "resolves to 127.0.0.1" in r.json()["issue"][0]["diagnostics"]
    # in a batch too, checked per entry before its transaction
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": subscription("Observation?code=1", hook),
         "request": {"method": "POST", "url": "Subscription"}}]}  # fmt: skip
    r = httpx.post(live_server, json=batch)
    assert r.status_code == 200, r.text
    outcome = r.json()["entry"][0]["response"]
    assert outcome["status"].startswith("400"), outcome
    assert httpx.get(f"{live_server}/Subscription").json()["total"] == 0
