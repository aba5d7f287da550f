"""The video consultation room (WebRTC): `Appointment/$join` hands a participant a join token,
the signalling WebSocket relays SDP offers/answers and ICE candidates between the participants
of one Appointment (a mesh of 2-6 browsers; the media flow browser to browser), joins and
leaves are recorded on the consultation Encounter, recordings are stored as Media, and
`/apps/consult-room` is the reference client (referral-model.md §2.9)."""

from __future__ import annotations

from ...services import Services
from ...settings import Settings
from .hub import Link, hub_name
from .join import OPERATIONS, check_ice_servers
from .routes import router

__all__ = ["close", "register", "router"]


def register(services: Services) -> None:
    """Add `$join` and the room's link to the hub (called by the app factory); refuse at
    start-up an ICE server setting the browsers could not use."""
    settings: Settings = services.settings
    check_ice_servers(settings.consult_ice_servers)
    services.operations.extend(OPERATIONS)
    # a hub frame is one message and a little JSON around it
    services.features["consult-room"] = Link(
        hub_name(settings.database), settings.consult_message_bytes * 2 + 65536
    )


async def close(services: Services) -> None:
    """At shutdown: hand the rooms on (another worker becomes the hub) and drop the link."""
    link = services.features.get("consult-room")
    if isinstance(link, Link):
        await link.close()
