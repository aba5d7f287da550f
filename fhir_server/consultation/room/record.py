"""What the room writes into the record, through the normal write path: join and leave times
on the consultation Encounter (class VR, one per Appointment: Encounter.appointment), and
uploaded recordings as a Media with its content in a Binary, linked to that Encounter."""

from __future__ import annotations

import base64
from typing import Any

from ...context import RequestContext
from ...errors import error
from ...interactions.hooks import transaction
from ...interactions.search import find
from ...interactions.write import create, update
from ...model import literal
from ...model.resource import now
from ...services import Services
from ...storage.contract import Session
from .token import Grant

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: R4 Encounter.participant.individual: who may be named there (a Patient is the subject)
INDIVIDUALS = ("Practitioner/", "PractitionerRole/", "RelatedPerson/")
#: Encounter statuses (R4 encounter-status) a first join turns into in-progress
NOT_STARTED = ("planned", "arrived", "triaged")

Json = dict[str, Any]


def joined(services: Services, grant: Grant, base_url: str) -> str | None:
    """Record that the grant's participant entered the room now: a participant with
    period.start on the Appointment's Encounter (made on the first join). Returns the start
    stamp that `left` closes, or None for a Patient (the Encounter's subject: R4 has no
    participant entry for it)."""
    if not grant.participant.startswith(INDIVIDUALS):
        return None
    at = now()
    with transaction(services, RequestContext(base_url=base_url)) as session:
        encounter = consultation_encounter(session, services, base_url, grant.appointment, at)
        if encounter.get("status") in NOT_STARTED:
            encounter["status"] = "in-progress"
        encounter.setdefault("participant", []).append(
            {"individual": {"reference": grant.participant}, "period": {"start": at}}
        )
        _save(session, services, base_url, encounter)
    return at


def left(services: Services, grant: Grant, start: str, base_url: str) -> None:
    """Record that the participant who entered at `start` left now: that entry's period.end
    (matched by its start, so a reconnect's older socket, closing late, ends only its own)."""
    at = now()
    with transaction(services, RequestContext(base_url=base_url)) as session:
        encounter = consultation_encounter(session, services, base_url, grant.appointment, at)
        for p in encounter.get("participant") or []:
            period = p.get("period") or {}
            same = (p.get("individual") or {}).get("reference") == grant.participant
            if same and period.get("start") == start and "end" not in period:
                period["end"] = at
                _save(session, services, base_url, encounter)
                return


def consultation_encounter(
    session: Session, services: Services, base_url: str, appointment_id: str, at: str
) -> Json:
    """The Appointment's virtual Encounter, or a new one (not yet stored) for it: the
    Appointment's patient as subject, its basedOn (the consultation request) as basedOn."""
    ctx = RequestContext(base_url=base_url)
    query = f"appointment=Appointment/{appointment_id}&class={ACT_CODE}|VR"
    found = find(session, services, ctx, "Encounter", query)
    if found:
        current = session.current(*found[0])
        assert current is not None and current[1].json is not None
        encounter: Json = literal.loads(current[1].json)
        return encounter
    stored = session.current("Appointment", appointment_id)
    if stored is None or stored[1].json is None:
        raise error(404, "not-found", f"Appointment/{appointment_id} is not known")
    appointment = literal.loads(stored[1].json)
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": ACT_CODE, "code": "VR", "display": "virtual"},
        "appointment": [{"reference": f"Appointment/{appointment_id}"}],
        "period": {"start": at},
    }
    for p in appointment.get("participant") or []:
        actor = (p.get("actor") or {}).get("reference")
        if isinstance(actor, str) and actor.startswith("Patient/"):
            encounter["subject"] = {"reference": actor}
            break
    based_on = [r for r in appointment.get("basedOn") or [] if r.get("reference")]
    if based_on:
        encounter["basedOn"] = based_on
    return encounter


def _save(session: Session, services: Services, base_url: str, encounter: Json) -> Json:
    ctx = RequestContext(base_url=base_url)
    valid = services.validator(encounter)
    if "id" in encounter:
        result = update(session, services, ctx, "Encounter", encounter["id"], valid)
    else:
        result = create(session, services, ctx, "Encounter", valid)
    assert result.stored is not None and result.stored.json is not None
    saved: Json = literal.loads(result.stored.json)
    return saved


def store_recording(
    services: Services, grant: Grant, content: bytes, content_type: str, base_url: str
) -> Json:
    """A recording of the session: its bytes as a Binary, described by a Media (type video,
    or audio for an audio-only recording) on the consultation Encounter, operated by the
    participant who recorded it. Returns the Media as stored."""
    at = now()
    ctx = RequestContext(base_url=base_url)
    kind = "audio" if content_type.startswith("audio/") else "video"
    with transaction(services, ctx) as session:
        encounter = consultation_encounter(session, services, base_url, grant.appointment, at)
        if "id" not in encounter:
            encounter = _save(session, services, base_url, encounter)
        binary = {
            "resourceType": "Binary",
            "contentType": content_type,
            "securityContext": {"reference": f"Encounter/{encounter['id']}"},
            "data": base64.b64encode(content).decode("ascii"),
        }
        stored = create(session, services, ctx, "Binary", services.validator(binary)).stored
        assert stored is not None
        media: Json = {
            "resourceType": "Media",
            "status": "completed",
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/media-type",
                        "code": kind,
                        "display": kind.capitalize(),
                    }
                ]
            },
            "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "createdDateTime": at,
            "content": {
                "contentType": content_type,
                "url": f"Binary/{stored.id}",
                "size": len(content),
                "title": f"会诊录像 consultation recording, Appointment/{grant.appointment}",
                "creation": at,
            },
        }
        if "subject" in encounter:
            media["subject"] = encounter["subject"]
        # R4 Media.operator: a Practitioner, PractitionerRole, Patient or RelatedPerson
        media["operator"] = {"reference": grant.participant}
        requests = [r for r in encounter.get("basedOn") or []
                    if r["reference"].startswith("ServiceRequest/")]  # fmt: skip
        if requests:
            media["basedOn"] = requests
        result = create(session, services, ctx, "Media", services.validator(media))
    assert result.stored is not None and result.stored.json is not None
    saved: Json = literal.loads(result.stored.json)
    return saved
