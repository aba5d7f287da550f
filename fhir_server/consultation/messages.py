"""Messages between the doctors of a consultation: Communications (category
consultation-message) with `partOf` the consultation Task, text, attachments (Binary) and
references (DiagnosticReport, ImagingStudy) in `payload`; and read receipts.

R4 Communication has one `received` time and no per-reader status, so a receipt is a
Communication of its own per reader (category read-receipt, `inResponseTo` the message,
`sender` the reader, `sent` when read): every reader's receipt is kept, searchable with
`Communication?in-response-to=Communication/ID&category=...|read-receipt`."""

from __future__ import annotations

from ..errors import error
from ..interactions.hooks import transaction
from ..interactions.search import find
from ..model.resource import now
from ..operations.registry import Call, Operations, Outcome
from ..referral.params import reference_param
from ..referral.work import Work, bundle, coding, ref
from .codes import MESSAGE_SYSTEM, OPDEF
from .work import key_of

OPERATIONS = Operations()


@OPERATIONS.operation("$mark-read", "instance", types=("Communication",),
                      definition=f"{OPDEF}Communication-mark-read")  # fmt: skip
def mark_read(call: Call) -> Outcome:
    """`reader` (Reference) read the message: its receipt, created once (a second call
    answers the first receipt)."""
    reader = reference_param(call, "reader")
    if reader is None and call.ctx.principal.fhir_user:
        reader = {"reference": call.ctx.principal.fhir_user}
    if reader is None:
        raise error(400, "required", "Parameter 'reader' (Reference) is required", "reader")
    assert call.rid is not None
    with transaction(call.services, call.ctx) as session:
        work = Work(session, call.services, call.ctx, now())
        message = work.get("Communication", call.rid)
        if _is_receipt(message):
            raise error(422, "business-rule", "A read receipt is not read in turn", "Communication")
        for rtype, rid in find(session, call.services, call.ctx, "Communication",
                               f"in-response-to=Communication/{call.rid}&sender={key_of(reader)}",
                               limit=None):  # fmt: skip
            found = work.load(rtype, rid)
            if found is not None and _is_receipt(found):
                return Outcome(bundle(call.ctx.base_url, [found]))
        receipt = {
            "resourceType": "Communication",
            "status": "completed",
            "category": [{"coding": [coding(MESSAGE_SYSTEM, "read-receipt")]}],
            "inResponseTo": [ref(message)],
            "sender": {"reference": key_of(reader)},
            "sent": work.at,
        }
        for name in ("subject", "partOf", "basedOn"):
            if message.get(name):
                receipt[name] = message[name]
        if message.get("sender"):
            receipt["recipient"] = [message["sender"]]
        work.add(receipt)
        saved = work.commit()
    return Outcome(bundle(call.ctx.base_url, saved), status=201)


def _is_receipt(message: dict) -> bool:  # type: ignore[type-arg]
    return any(
        c.get("code") == "read-receipt" and c.get("system") == MESSAGE_SYSTEM
        for cat in message.get("category") or []
        for c in cat.get("coding") or []
    )
