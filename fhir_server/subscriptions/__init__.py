"""R4 Subscriptions (http://hl7.org/fhir/R4/subscription.html): criteria evaluated on every
write through the search engine, notifications by rest-hook and websocket, sent only after the
write committed and only of what the Subscription's owner may see (README, "Subscriptions")."""

from __future__ import annotations

from typing import Any

from ..services import Services
from .accept import endpoint_checker, on_write
from .notifier import Notifier
from .websocket import PATH, router

WEBSOCKET_EXTENSION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"

__all__ = ["capability_extensions", "register", "router"]


def register(services: Services) -> None:
    """The accepting write hook, the after-commit hand-over and the notifier thread."""
    notifier = Notifier(services)
    services.features["subscriptions"] = notifier
    services.hooks.add_on_write(on_write, ["Subscription"], lambda _: True)
    services.hooks.before_write.setdefault("Subscription", []).append(endpoint_checker(services))
    services.hooks.after_commit.append(notifier.after_commit)
    services.hooks.on_close.append(notifier.stop)


def capability_extensions(base_url: str) -> list[dict[str, Any]]:
    """CapabilityStatement.rest.extension: where the websocket channel is (R4 extension
    capabilitystatement-websocket), a ws(s):// URL beside the FHIR base."""
    scheme, _, rest = base_url.partition("://")
    host = rest.split("/", 1)[0]
    ws = "wss" if scheme == "https" else "ws"
    return [{"url": WEBSOCKET_EXTENSION, "valueUri": f"{ws}://{host}{PATH}"}]
