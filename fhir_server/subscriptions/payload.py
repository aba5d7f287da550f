"""What a notification carries (R4 subscription.html#2.46.7.1 and the Subscriptions R5 Backport
IG's payload content codes, read from R4's `channel._payload` extension).

- no `channel.payload`: **empty**: a POST with no body to the endpoint (R4).
- `channel.payload` a FHIR JSON mime type: **full-resource**: the resource PUT to
  `[endpoint]/[type]/[id]`, as R4 specifies for a rest-hook with a payload.
- with the extension `backport-payload-content` = `id-only`: a POST of a Backport IG
  notification Bundle (type history) naming the resource's URL without its content;
  `empty` and `full-resource` in the extension mean the same as above.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import error
from ..model.resource import now

CONTENT_EXTENSION = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
)
CONTENTS = ("empty", "id-only", "full-resource")
JSON_TYPES = ("application/fhir+json", "application/json")


def content_of(channel: dict[str, Any]) -> str:
    """empty | id-only | full-resource for a channel; 400 for one we cannot send."""
    mime = channel.get("payload")
    declared = [
        ext.get("valueCode")
        for ext in (channel.get("_payload") or {}).get("extension", [])
        if ext.get("url") == CONTENT_EXTENSION
    ]
    if mime is not None and mime.split(";")[0].strip() not in JSON_TYPES:
        raise error(400, "not-supported",
                    f"Subscription.channel.payload '{mime}': only {JSON_TYPES} are sent",
                    "Subscription.channel.payload")  # fmt: skip
    if declared:
        content = declared[0]
        if content not in CONTENTS:
            raise error(400, "invalid", f"Payload content '{content}' is not one of {CONTENTS}",
                        "Subscription.channel.payload.extension")  # fmt: skip
        if content != "empty" and mime is None:
            raise error(400, "required", f"Payload content '{content}' needs channel.payload",
                        "Subscription.channel.payload")  # fmt: skip
        return str(content)
    return "empty" if mime is None else "full-resource"


@dataclass(frozen=True)
class Request:
    """One HTTP request of a rest-hook notification."""

    method: str
    url: str
    body: bytes | None
    content_type: str | None


def rest_hook(
    sub: dict[str, Any], content: str, base_url: str, rtype: str, rid: str, json: bytes
) -> Request:
    endpoint = str(sub["channel"]["endpoint"])
    mime = str(sub["channel"].get("payload", "application/fhir+json"))
    if content == "full-resource":
        return Request("PUT", f"{endpoint.rstrip('/')}/{rtype}/{rid}", json, mime)
    if content == "id-only":
        return Request("POST", endpoint, id_only_bundle(sub, base_url, rtype, rid), mime)
    return Request("POST", endpoint, None, None)


def id_only_bundle(sub: dict[str, Any], base_url: str, rtype: str, rid: str) -> bytes:
    """A Backport IG (R4) notification Bundle: a SubscriptionStatus Parameters naming the
    subscription and the focus, then an entry with the resource's URL and no resource."""
    own = f"{base_url}/Subscription/{sub['id']}"
    focus = f"{base_url}/{rtype}/{rid}"
    status = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": own}},
            {"name": "status", "valueCode": sub.get("status", "active")},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "notification-event",
             "part": [{"name": "focus", "valueReference": {"reference": focus}}]},
        ],
    }  # fmt: skip
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": now(),
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status,
             "request": {"method": "GET", "url": f"{own}/$status"},
             "response": {"status": "200"}},
            {"fullUrl": focus, "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
             "response": {"status": "200"}},
        ],
    }  # fmt: skip
    return orjson.dumps(bundle)
