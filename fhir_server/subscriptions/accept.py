"""Accepting a Subscription written over REST (R4 subscription.html#2.46.6): the criteria must
compile, the channel must be one we serve, the endpoint allowed; then `requested` becomes
`active` (`off` once its end has passed), and the writer becomes its owner."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import error
from ..interactions.hooks import Change, Effect
from ..model.resource import now
from ..operations.export import principal_json
from ..policy.decide import forbidden, role_permits
from ..policy.enforce import authorize
from ..search.values import date_bounds
from ..services import Services
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
    tables = services.store.subscriptions
    criteria = compile_criteria(services.registry, str(sub.get("criteria", "")), tables)
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
        # the name was resolved and checked before the write lock (check_before_lock); a
        # write that skipped that (a PATCH) is checked at its first delivery
        allow_private = services.settings.subscription_allow_private
        check_endpoint(str(channel.get("endpoint", "")), allow_private, resolve=False)
        for i, header in enumerate(channel.get("header", [])):
            if not _HEADER.fullmatch(header):
                raise error(400, "invalid", f"A channel header must read 'Name: value': {header!r}",
                            f"Subscription.channel.header[{i}]")  # fmt: skip
    tables.set_owner(change.session, change.rid, principal_json(change.ctx.principal))
    status = sub.get("status")
    if status != "off" and ended(sub):  # R4 Subscription.end: "turn the subscription off"
        return Effect(resource={**sub, "status": "off"})
    if status == "requested":
        accepted: dict[str, Any] = {**sub, "status": "active"}
        accepted.pop("error", None)
        return Effect(resource=accepted)
    return None


def endpoint_checker(services: Services) -> Callable[[dict[str, Any]], None]:
    """The before-write check (hooks.py) of a rest-hook endpoint's host: resolving it may
    take seconds (endpoint.RESOLVE_SECONDS), which must not be spent holding the write lock."""

    def check(sub: dict[str, Any]) -> None:
        channel = sub.get("channel")
        if not isinstance(channel, dict) or channel.get("type") != "rest-hook":
            return
        allow_private = services.settings.subscription_allow_private
        check_endpoint(str(channel.get("endpoint", "")), allow_private, must_resolve=False)

    return check


def end_instant(sub: dict[str, Any]) -> str | None:
    """Subscription.end as a UTC instant comparable with model.resource.now()."""
    end = sub.get("end")
    return date_bounds(end)[0] if isinstance(end, str) else None


def ended(sub: dict[str, Any]) -> bool:
    end = end_instant(sub)
    return end is not None and end <= now()
