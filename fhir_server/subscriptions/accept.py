"""Accepting a Subscription written over REST (R4 subscription.html#2.46.6): the criteria must
compile, the channel must be one we serve, the endpoint allowed; then `requested` (or `error`,
after the client fixed it) becomes `active`, and the writer becomes its owner."""

from __future__ import annotations

import re
from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..operations.export import principal_json
from ..policy.decide import forbidden, role_permits
from ..policy.enforce import authorize
from ..storage.sqlite import subscriptions as table
from .criteria import compile_criteria
from .endpoint import check_endpoint
from .payload import content_of

CHANNELS = ("rest-hook", "websocket")
#: R4 Subscription.channel.header: "Name: value" (RFC 9110 field-name token)
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*")


def on_write(change: Change) -> Effect | None:
    """The write hook on Subscription: refuse what we could not honour (400 with the
    element), mark the accepted one active, remember who wrote it."""
    sub = change.resource
    if sub is None:  # a delete: nothing to check; its owner row stays harmlessly
        return None
    services = change.services
    criteria = compile_criteria(services.registry, str(sub.get("criteria", "")))
    # a subscription is a standing search: its owner must be allowed that search
    if not role_permits(change.ctx.principal, criteria.rtype):
        raise forbidden(f"Searches of {criteria.rtype} are not available to this user",
                        "Subscription.criteria")  # fmt: skip
    authorize(change.ctx, services, "search-type", criteria.rtype)
    channel = sub.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise error(400, "not-supported",
                    f"Subscription.channel.type '{kind}' is not served; use one of {CHANNELS}",
                    "Subscription.channel.type")  # fmt: skip
    content_of(channel)  # 400 for a payload we cannot send
    if kind == "rest-hook":
        check_endpoint(str(channel.get("endpoint", "")),
                       services.settings.subscription_allow_private)  # fmt: skip
        for i, header in enumerate(channel.get("header", [])):
            if not _HEADER.fullmatch(header):
                raise error(400, "invalid", f"A channel header must read 'Name: value': {header!r}",
                            f"Subscription.channel.header[{i}]")  # fmt: skip
    table.set_owner(change.session, change.rid, principal_json(change.ctx.principal))
    status = sub.get("status")
    if status in ("requested", "error"):
        accepted: dict[str, Any] = {**sub, "status": "active"}
        accepted.pop("error", None)
        return Effect(resource=accepted)
    return None
