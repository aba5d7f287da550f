"""rest-hook delivery (R4 subscription.html#2.46.7.1): each notification is one HTTP request,
sent from a small thread pool, retried with exponential back-off; after the last failure the
Subscription turns to `error` with the reason in Subscription.error, and the next success
turns it back to `active`. The endpoint's address is checked again before every attempt and
the request goes to that checked address (no second lookup a rebinding name could change),
with no redirects followed and a timeout."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from ..errors import FhirError
from ..storage.contract import Stored
from .endpoint import check_endpoint
from .payload import Request, rest_hook

if TYPE_CHECKING:
    from .notifier import Active, Notifier

log = logging.getLogger("fhir_server.subscriptions")

#: rest-hook requests under way at once per worker process
SENDERS = 4


class RestHooks:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        settings = notifier.services.settings
        self.settings = settings
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="rest-hook")
        self._stopping = threading.Event()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def client(self) -> httpx.Client:
        """The HTTP client, made at the first delivery: its TLS context (the CA bundle loaded,
        ~30 ms) is not worth paying at every start of a server that may never deliver."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self.settings.subscription_timeout_seconds, follow_redirects=False
                )
            return self._client

    def submit(self, sub: Active, stored: Stored) -> None:
        self._pool.submit(self._deliver, sub, stored)

    def stop(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._client_lock:
            if self._client is not None:
                self._client.close()

    def _deliver(self, sub: Active, stored: Stored) -> None:
        assert stored.json is not None
        request = rest_hook(sub.resource, sub.content, self.notifier.base_url, stored.type,
                            stored.id, stored.json)  # fmt: skip
        retries = self.settings.subscription_retries
        delay = self.settings.subscription_retry_seconds
        failure = ""
        for attempt in range(retries + 1):
            if attempt and self._stopping.wait(delay * 2 ** (attempt - 1)):
                return
            try:
                status = self._send(sub, request)
            except FhirError as exc:  # the endpoint's address is refused now: no retry
                failure = str(exc)
                break
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if 200 <= status < 300:
                if sub.resource.get("status") == "error":
                    self.notifier.set_status(sub.id, "active", None)
                return
            failure = f"the endpoint answered HTTP {status}"
        attempts = f"{retries + 1} attempts"
        text = f"rest-hook {request.method} {request.url} failed ({attempts}): {failure}"
        log.warning("Subscription/%s: %s", sub.id, text)
        self.notifier.set_status(sub.id, "error", text)

    def _send(self, sub: Active, request: Request) -> int:
        allow = self.settings.subscription_allow_private
        address = check_endpoint(request.url, allow)[0]
        parts = urlsplit(request.url)
        assert parts.hostname is not None
        headers = {"Host": parts.netloc.rpartition("@")[2]}
        for header in sub.resource["channel"].get("header", []):
            name, _, value = header.partition(":")
            headers[name.strip()] = value.strip()
        if request.content_type:
            headers["Content-Type"] = request.content_type
        url = httpx.URL(request.url).copy_with(host=address)
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        with self.client().stream(request.method, url, content=request.body, headers=headers,
                                 extensions=extensions) as response:  # fmt: skip
            return response.status_code
