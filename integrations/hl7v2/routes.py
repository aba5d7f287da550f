"""The operations view of the inbox (Mirth's message browser): `GET /hl7/messages` (filters:
status, since, until, sender, control_id, type; newest first, paged), one message with its
text and what it wrote (`/hl7/messages/{seq}`), its raw bytes (`/raw`), and `POST
/hl7/messages/{seq}/replay` to map it again after a mapping fix.

Raw messages hold every patient's data: with authorization on, only a backend-services token
(`system/`) whose scopes read MessageHeader may look (write, to replay). Behind the bearer check
of /fhir (plugins.py: the prefix is guarded like /fhir)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fhir_server.context import ANONYMOUS, Principal
from fhir_server.errors import error
from fhir_server.policy.decide import allowed
from fhir_server.services import Services

from .charset import CharsetError, decode
from .worker import CHANNEL, process

router = APIRouter(prefix="/hl7")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _permit(request: Request, interaction: str) -> None:
    """Anonymous callers reach this only with `auth` off; others need a system token whose
    scopes cover MessageHeader (search to read, update to replay)."""
    who: Principal = getattr(request.state, "principal", ANONYMOUS)
    if who.kind == "anonymous":
        return
    if who.kind != "system" or not allowed(who, interaction, "MessageHeader"):
        raise error(403, "forbidden", "The HL7 v2 message log needs a system/ token whose "
                                      f"scopes allow {interaction} on MessageHeader")


def _summary(record: Any, base: str) -> dict[str, Any]:
    out = {
        "seq": record.seq, "sender": record.sender, "controlId": record.message_id,
        "type": record.kind, "receivedAt": record.received_at, "remote": record.remote,
        "status": record.status, "attempts": record.attempts, "duplicates": record.duplicates,
        "updatedAt": record.updated_at, "url": f"{base}/hl7/messages/{record.seq}",
    }  # fmt: skip
    if record.error:
        out["error"] = record.error
        out["errorAt"] = (record.meta.get("err") or {}).get("location")
    return out


@router.get("/messages")
def messages(request: Request, status: str | None = None, since: str | None = None,
             until: str | None = None, sender: str | None = None,
             control_id: str | None = None, type: str | None = None,
             before: int | None = None, count: int = 50) -> JSONResponse:  # fmt: skip
    _permit(request, "search-type")
    if count < 1 or count > 1000:
        raise error(400, "invalid", "count must be between 1 and 1000", "count")
    inbox = _services(request).store.inbox
    found = inbox.search(CHANNEL, status, since, until, sender, control_id, type, before, count)
    base = str(request.base_url).rstrip("/")
    body: dict[str, Any] = {
        "counts": inbox.counts(CHANNEL),
        "messages": [_summary(r, base) for r in found],
    }
    if len(found) == count:
        query = {k: v for k, v in request.query_params.items() if k != "before"}
        body["next"] = f"{base}/hl7/messages?{urlencode({**query, 'before': found[-1].seq})}"
    return JSONResponse(body)


def _record(request: Request, seq: int) -> Any:
    record = _services(request).store.inbox.get(seq)
    if record is None or record.channel != CHANNEL:
        raise error(404, "not-found", f"No HL7 v2 message {seq}")
    return record


@router.get("/messages/{seq}")
def message(request: Request, seq: int) -> JSONResponse:
    _permit(request, "read")
    record = _record(request, seq)
    body = _summary(record, str(request.base_url).rstrip("/"))
    try:
        text = decode(record.raw, _services(request).settings.hl7_charset).text
    except CharsetError as exc:
        text = record.raw.decode("latin-1")
        body["decodeError"] = str(exc)
    body["segments"] = [line for line in text.replace("\r\n", "\r").replace("\n", "\r")
                        .split("\r") if line]  # fmt: skip
    body["meta"] = record.meta
    return JSONResponse(body)


@router.get("/messages/{seq}/raw")
def raw(request: Request, seq: int) -> Response:
    """The message as received, byte for byte (ER7; its charset as MSH-18 says)."""
    _permit(request, "read")
    record = _record(request, seq)
    charset = record.meta.get("charset") or "utf-8"
    return Response(record.raw, media_type=f"x-application/hl7-v2+er7; charset={charset}")


@router.post("/messages/{seq}/replay")
def replay(request: Request, seq: int) -> JSONResponse:
    _permit(request, "update")
    record = _record(request, seq)
    if record.status == "rejected":
        raise error(409, "business-rule", f"Message {seq} was refused on receipt "
                                          f"({record.error}); the sender must send it again")
    outcome = process(_services(request), record)
    if outcome is None:
        raise error(503, "transient", "The database is busy; try again")
    done = _summary(_record(request, seq), str(request.base_url).rstrip("/"))
    return JSONResponse({**done, "written": list(outcome.written)})
