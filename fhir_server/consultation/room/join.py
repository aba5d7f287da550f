"""`Appointment/{id}/$join`: who may enter the video room of an Appointment, and what the
browser needs to do so (a join token, the signalling URL, the ICE servers)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ...context import RequestContext
from ...errors import FhirError, error
from ...interactions.read import read_as
from ...model import literal
from ...operations.registry import Call, Operations, Outcome
from ...storage.contract import Session
from .token import Grant, issue

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

    from ...services import Services

OPDEF = "https://yilian.health/fhir/OperationDefinition/"
#: Appointment statuses (R4 appointmentstatus) whose session may be entered: it is booked and
#: not over; proposed/pending are not agreed yet, the others ended it
JOINABLE = ("booked", "arrived", "checked-in")
#: the path of the signalling WebSocket below the server's root (routes.py serves it)
SIGNAL_PATH = "/consult-room/signal/"

OPERATIONS = Operations()


@OPERATIONS.operation("$join", "instance", ("Appointment",), definition=f"{OPDEF}Appointment-join")
def join(call: Call) -> Outcome:
    """A participant of a booked Appointment gets a join token. With authorization on, the
    caller joins as itself (its fhirUser); a `participant` naming anybody else is refused.
    Being a participant is the grant (policy/decide.py OPERATIONS); anybody else gets 404
    when a read of the Appointment would (no existence oracle), else 403."""
    assert call.rid is not None
    services, ctx = call.services, call.ctx
    session = services.store.reader()
    found = session.current("Appointment", call.rid)
    appointment = literal.loads(found[1].json) if found and found[1].json else None
    try:
        if appointment is None:
            raise error(404, "not-found", f"Appointment/{call.rid} is not known")
        who = participant_of(session, appointment, wanted(call, ctx))
    except FhirError:  # 404 (410) if the caller may not even see the Appointment
        read_as(session, services, ctx, "Appointment", call.rid)
        raise
    status = appointment.get("status")
    if status not in JOINABLE:
        raise error(
            409,
            "business-rule",
            f"Appointment/{call.rid} is {status}: only a {'/'.join(JOINABLE)} one can be joined",
            "Appointment.status",
        )
    seconds = services.settings.consult_token_seconds
    grant = Grant(call.rid, who, int(time.time()) + seconds)
    token = issue(signing_key(services), grant, ctx.base_url)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grant.expires))
    return Outcome(
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "token", "valueString": token},
                {"name": "signaling", "valueUrl": signaling_url(ctx.base_url, call.rid)},
                {"name": "iceServers", "valueString": services.settings.consult_ice_servers},
                {"name": "expires", "valueInstant": expires},
            ],
        }
    )


def wanted(call: Call, ctx: RequestContext) -> str:
    """Whom the caller joins as: its own fhirUser when it has a token (a `participant` naming
    someone else is 403), else the `participant` parameter (required)."""
    given = call.value("participant")
    named = given.get("reference") if isinstance(given, dict) else None
    if given is not None and not isinstance(named, str):
        raise error(400, "invalid", "participant must be a valueReference with a reference",
                    "participant")  # fmt: skip
    principal = ctx.principal
    if principal.kind == "anonymous":
        if named is None:
            raise error(400, "required", "participant is required", "participant")
        return _relative(named)
    if principal.kind not in ("user", "patient") or not principal.fhir_user:
        raise error(403, "forbidden", "Only a practitioner or patient may join a consultation")
    if named is not None and _relative(named) != principal.fhir_user:
        raise error(403, "forbidden", f"You may join only as yourself ({principal.fhir_user})",
                    "participant")  # fmt: skip
    return principal.fhir_user


def participant_of(session: Session, appointment: dict[str, Any], who: str) -> str:
    """The Appointment.participant.actor `who` is (a PractitionerRole also stands for its
    Practitioner); 403 when it is none, or has declined (R4 participationstatus)."""
    selves = {who}
    if who.startswith("PractitionerRole/"):
        found = session.current("PractitionerRole", who.split("/", 1)[1])
        if found is not None and found[1].json is not None:
            practitioner = literal.loads(found[1].json).get("practitioner") or {}
            if isinstance(practitioner.get("reference"), str):
                selves.add(_relative(practitioner["reference"]))
    declined = False
    for p in appointment.get("participant") or []:
        actor = (p.get("actor") or {}).get("reference")
        if isinstance(actor, str) and _relative(actor) in selves:
            if p.get("status") != "declined":
                return _relative(actor)
            declined = True
    why = "has declined" if declined else "is not a participant of"
    raise error(403, "forbidden", f"{who} {why} Appointment/{appointment['id']}",
                "Appointment.participant")  # fmt: skip


def _relative(reference: str) -> str:
    """`Type/id` of a relative or absolute literal reference."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def signaling_url(base_url: str, appointment: str) -> str:
    """The WebSocket URL on this server (ws:// beside http://, wss:// beside https://)."""
    root = base_url.removesuffix("/fhir")
    scheme, rest = root.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{SIGNAL_PATH}{appointment}"


def signing_key(services: Services) -> RSAKey:
    """The server's signing key, kept by the authorization server (auth/keys.py)."""
    key: RSAKey = services.features["auth"].keys.key()
    return key


def check_ice_servers(value: str) -> None:
    """Refuse at start-up an ICE server list the browsers would reject (RTCIceServer, W3C
    WebRTC §4.2.1: `urls` a string or list of strings; TURN needs username and credential)."""
    try:
        servers = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"consult_ice_servers is not JSON: {exc}") from None
    if not isinstance(servers, list):
        raise ValueError("consult_ice_servers must be a JSON array of RTCIceServer objects")
    for i, server in enumerate(servers):
        urls = server.get("urls") if isinstance(server, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"consult_ice_servers[{i}] needs `urls`, a string or strings")
        turn = any(u.startswith(("turn:", "turns:")) for u in urls)
        if turn and not (server.get("username") and server.get("credential")):
            raise ValueError(f"consult_ice_servers[{i}]: a TURN server needs username and "
                             "credential")  # fmt: skip


def admits(services: Services, grant: Grant) -> str | None:
    """Why the room no longer admits a token's holder (the Appointment was cancelled or is
    over, the participant declined or was removed since $join), or None when it does."""
    session = services.store.reader()
    found = session.current("Appointment", grant.appointment)
    if found is None or found[1].json is None:
        return f"Appointment/{grant.appointment} is not known"
    appointment = literal.loads(found[1].json)
    if appointment.get("status") not in JOINABLE:
        return f"Appointment/{grant.appointment} is {appointment.get('status')}"
    try:
        participant_of(session, appointment, grant.participant)
    except FhirError as exc:
        return exc.issues[0].diagnostics
    return None
