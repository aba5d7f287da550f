"""Consultation workflow operations (issue 14). Each reads, checks and writes the Task, its
ServiceRequest, Appointment, AppointmentResponses, Slots, Encounter, opinion Composition and a
Provenance per transition in ONE write transaction, and answers a collection Bundle of what
it changed, the Task first. Which transitions exist is transitions.py's table alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..errors import error
from ..interactions.hooks import transaction
from ..model import literal
from ..model.resource import now
from ..operations.registry import Call, Operation, Operations, Outcome
from ..referral.params import actor, concept_param, reference_param, string_param
from ..referral.work import (
    Json,
    Work,
    add_output,
    bundle,
    coding,
    instant,
    linked,
    parse_instant,
    ref,
    revoke,
)
from .booking import (
    book_slot,
    end_appointment,
    expert_entry,
    experts_of,
    free_slots,
    participant,
    respond,
    set_time,
)
from .codes import (
    ACT_CODE,
    BUSINESS_SYSTEM,
    CONSULT_NOTE,
    CONSULTATION,
    LOINC,
    OPDEF,
    OPINION_PROFILE,
    REQUEST_PROFILE,
    SECTION_SYSTEM,
    SNOMED,
    TASK_PROFILE,
    TYPE_SYSTEM,
)
from .rules import business_status, is_consultation_request, is_consultation_task
from .transitions import OPEN
from .work import ConsultWork, check_side, key_of, run, transition

OPERATIONS = Operations()
operation = OPERATIONS.operation
TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"
#: the opinion's sections: (parameter, yl-consultation-opinion-section code, title)
SECTIONS = (
    ("historySummary", "history-summary", "病情摘要 History summary"),
    ("findings", "findings", "检查所见 Findings"),
    ("opinion", "opinion", "会诊意见 Opinion"),
    ("recommendations", "recommendations", "诊疗建议 Recommendations"),
)


def deadlines(setting: str) -> dict[str, int]:
    """settings.consultation_response_minutes (`priority=minutes,...`) as a dict; ValueError
    (at start-up, from register) when it is malformed."""
    table: dict[str, int] = {}
    for part in setting.split(","):
        name, _, minutes = part.strip().partition("=")
        if name not in ("routine", "urgent", "asap", "stat") or not minutes.strip().isdigit():
            raise ValueError(
                f"consultation_response_minutes: {part!r} is not priority=minutes "
                "(priority one of routine, urgent, asap, stat)"
            )
        table[name] = int(minutes)
    if "routine" not in table:
        raise ValueError("consultation_response_minutes needs routine=minutes")
    return table


def deadline_minutes(setting: str, priority: str) -> int:
    """Minutes to answer a request of this ServiceRequest.priority (asap counts as urgent;
    a priority not given, as routine)."""
    table = deadlines(setting)
    return table.get(priority) or table.get("urgent" if priority == "asap" else "routine", 0) \
        or table["routine"]


@operation("$request-consultation", "instance", types=("ServiceRequest",),
           definition=f"{OPDEF}ServiceRequest-request-consultation")  # fmt: skip
def request_instance(call: Call) -> Outcome:
    """C1 on a draft consultation ServiceRequest."""
    return request_consultation(call)


@operation("$request-consultation", "type", types=("ServiceRequest",),
           definition=f"{OPDEF}ServiceRequest-request-consultation")  # fmt: skip
def request_type(call: Call) -> Outcome:
    """C1 with the ServiceRequest given inline (`request`), created here."""
    return request_consultation(call)


def request_consultation(call: Call) -> Outcome:
    """C1: the inviting doctor asks invited experts (`expert`, several) or a collaboration team
    (`team`: its PractitionerRole members) for an opinion: ServiceRequest active, a Task
    (requested, owned by the first expert, due by the deadline of its priority), an Appointment
    (proposed; with `slot`, booked in that Slot of an invited expert's Schedule)."""
    with transaction(call.services, call.ctx) as session:
        work = ConsultWork(session, call.services, call.ctx, now())
        sr = _request(work, call)
        check_side(work, "$request-consultation", sr)
        experts = _experts(work, call, sr)
        if not sr.get("subject") or not sr.get("requester"):
            raise error(422, "business-rule", "A consultation needs subject and requester",
                        "ServiceRequest.requester")  # fmt: skip
        sr["performer"] = [*experts, *(t for t in [reference_param(call, "team")] if t)]
        sr["status"] = "active"
        sr.setdefault("authoredOn", work.at)
        work.changed(sr)
        priority = sr.get("priority") or "routine"
        minutes = deadline_minutes(call.services.settings.consultation_response_minutes, priority)
        due = parse_instant(work.at) or parse_instant(now())
        assert due is not None
        appointment = work.add({
            "resourceType": "Appointment",
            "status": "proposed",
            "basedOn": [ref(sr)],
            "serviceCategory": [{"coding": [coding(SNOMED, CONSULTATION, "Consultation")]}],
            "appointmentType": {"coding": [coding(
                "http://terminology.hl7.org/CodeSystem/v2-0276", "ROUTINE")]},
            "description": (sr.get("code") or {}).get("text") or "远程会诊",
            "created": work.at[:10],
            "participant": [participant(sr["requester"], "inviting-doctor", "accepted"),
                            *(participant(e, "invited-expert", "needs-action") for e in experts),
                            # the patient takes part (R4 Appointment.participant): it also
                            # puts the Appointment in the patient's compartment, so the
                            # parties (and the patient) read its time like the record's
                            {"actor": {"reference": sr["subject"]["reference"]},
                             "required": "information-only", "status": "accepted"}],
        })  # fmt: skip
        task = work.add({
            "resourceType": "Task",
            "meta": {"profile": [TASK_PROFILE]},
            "status": "requested",
            "businessStatus": {"coding": [coding(BUSINESS_SYSTEM, "requested")]},
            "intent": "order",
            "priority": priority,
            "code": {"coding": [coding(TASK_CODES, "fulfill")]},
            "basedOn": [ref(sr)],
            "focus": ref(sr),
            "for": sr["subject"],
            "authoredOn": work.at,
            "lastModified": work.at,
            "requester": sr["requester"],
            "owner": experts[0],
            "restriction": {"period": {"end": instant(due + timedelta(minutes=minutes))}},
        })  # fmt: skip
        add_output(task, "appointment", "valueReference", ref(appointment))
        slot = reference_param(call, "slot")
        if slot:
            book_slot(work, appointment, slot)
        work.lead = ("Task", task["id"])
        work.records.append((task["id"], actor(call, sr["requester"]), "request", "C1", None))
        saved = work.commit()
    return Outcome(bundle(call.ctx.base_url, saved), status=201)


def _request(work: Work, call: Call) -> Json:
    """The ServiceRequest: the draft invoked on, or the one given inline (created)."""
    if call.rid is not None:
        sr = work.get("ServiceRequest", call.rid)
        work.if_match("ServiceRequest", call.rid, call.if_match)
        if sr.get("status") != "draft":
            raise error(409, "business-rule",
                        f"ServiceRequest/{sr['id']} is {sr.get('status')}, not draft",
                        "ServiceRequest.status")  # fmt: skip
    else:
        given = call.value("request")
        if not isinstance(given, dict) or given.get("resourceType") != "ServiceRequest":
            raise error(400, "required", "Give the ServiceRequest as parameter 'request'",
                        "request")  # fmt: skip
        sr = work.add({k: v for k, v in given.items() if k not in ("id", "meta")})
    if not is_consultation_request(sr):
        raise error(
            422,
            "business-rule",
            f"A consultation ServiceRequest has category {SNOMED}|{CONSULTATION} (Consultation)",
            "ServiceRequest.category",
        )
    sr.setdefault("meta", {})["profile"] = [REQUEST_PROFILE]
    if not any(
        c.get("system") == TYPE_SYSTEM
        for cat in sr.get("category") or []
        for c in cat.get("coding") or []
    ):
        raise error(422, "business-rule", f"Give the consultation type ({TYPE_SYSTEM}) as "
                    "a ServiceRequest.category", "ServiceRequest.category")  # fmt: skip
    return sr


def _experts(work: Work, call: Call, sr: Json) -> list[Json]:
    """The invited experts (PractitionerRoles): `expert` parameters, the specialists of `team`
    (a collaboration CareTeam), else the ServiceRequest's PractitionerRole performers; once
    each."""
    found: list[Any] = []
    for p in call.values("expert"):
        value = p.get("valueReference") or p.get("valueString")
        found.append({"reference": value} if isinstance(value, str) else value)
    team = reference_param(call, "team")
    if team:
        care_team = work.resolve(team, "CareTeam", "team")
        found += [m["member"] for m in care_team.get("participant") or []
                  if str(key_of(m.get("member"))).startswith("PractitionerRole/")
                  and _specialist(m)]  # fmt: skip
    if not found:
        found = [p for p in sr.get("performer") or []
                 if str(key_of(p)).startswith("PractitionerRole/")]  # fmt: skip
    unique: dict[str, Json] = {}
    for e in found:
        k = key_of(e)
        if not isinstance(e, dict) or not k or not k.startswith("PractitionerRole/"):
            raise error(422, "business-rule", "An invited expert is a PractitionerRole", "expert")
        work.resolve(e, "PractitionerRole", "expert")
        unique.setdefault(k, {"reference": k})
    if not unique:
        raise error(422, "business-rule", "Invite at least one expert ('expert' or 'team')",
                    "expert")  # fmt: skip
    return list(unique.values())


def _specialist(member: Json) -> bool:
    """A team member invited as an expert: an upper-level specialist (yl-collaboration-role),
    or a member without a role; the team's primary-care doctors are not."""
    codes = {c.get("code") for r in member.get("role") or [] for c in r.get("coding") or []}
    return not codes or "upper-specialist" in codes


def _appointment(work: Work, task: Json) -> Json:
    found = linked(work, task, "appointment", "Appointment")
    if found is None:
        raise error(409, "business-rule", f"Task/{task['id']} has no Appointment", "Task.output")
    return found


def _expert(call: Call, appointment: Json) -> Json:
    """Who answers: parameter `expert`, else the caller's fhirUser when it is an invited
    PractitionerRole, else the only invited expert still to answer; 422 when ambiguous."""
    given = reference_param(call, "expert")
    if given:
        return given
    me = call.ctx.principal.fhir_user
    invited = experts_of(appointment)
    if me and any(key_of(p.get("actor")) == me for p in invited):
        return {"reference": me}
    waiting = [p for p in invited if p.get("status") in ("needs-action", "tentative")]
    if len(waiting) == 1:
        return {"reference": waiting[0]["actor"]["reference"]}
    raise error(422, "required", "Say which invited expert answers ('expert')", "expert")


#: business statuses in which an invited expert may still answer their invitation: open, or
#: (the other experts of a team) while the consultation goes on
ANSWERABLE = (*OPEN, "accepted", "scheduled", "in-progress", "opinion-drafted")


def _answerable(work: Work, task: Json, code: str) -> str | None:
    """The Task's business status; 409 (the table's refusal) when nobody may answer now."""
    status = business_status(task)
    if status not in ANSWERABLE:
        work.table.allowed(code, task.get("status", ""), status)
    return status


def _answered(entry: Json) -> None:
    if entry.get("status") in ("accepted", "declined"):
        raise error(
            409,
            "business-rule",
            f"{entry['actor']['reference']} has already {entry['status']}",
            "expert",
        )


@operation("$accept", "instance", types=("Task",), definition=f"{OPDEF}Task-accept")
def accept(call: Call) -> Outcome:
    """C2: an invited expert accepts (AppointmentResponse accepted). The first acceptance moves
    the Task to accepted, and on to scheduled (C6) when the Appointment is already booked; the
    other experts of a team accept into the same consultation."""

    def body(work: Work, task: Json, sr: Json) -> None:
        status = _answerable(work, task, "accept")
        appointment = _appointment(work, task)
        expert = _expert(call, appointment)
        _answered(expert_entry(appointment, expert))
        respond(work, appointment, expert, "accepted", string_param(call, "comment"))
        if status in OPEN:
            transition(work, task, "accept", expert)
            if appointment.get("status") == "booked":
                transition(work, task, "schedule", expert)

    return run(call, body, "$accept")


@operation("$decline", "instance", types=("Task",), definition=f"{OPDEF}Task-decline")
def decline(call: Call) -> Outcome:
    """C3/C4: an invited expert declines (`reason` required). With `redirectTo` (another
    PractitionerRole) the request passes to that expert (redirected); otherwise, once every
    invited expert has declined, the consultation is declined (ServiceRequest revoked,
    Appointment cancelled, Slot freed)."""

    def body(work: Work, task: Json, sr: Json) -> None:
        reason = concept_param(call, "reason", required=True)
        _answerable(work, task, "decline")
        appointment = _appointment(work, task)
        expert = _expert(call, appointment)
        _answered(expert_entry(appointment, expert))
        respond(work, appointment, expert, "declined", (reason or {}).get("text"))
        target = reference_param(call, "redirectTo")
        if target is not None:
            work.resolve(target, "PractitionerRole", "redirectTo")
            target = {"reference": key_of(target)}
            if any(key_of(p.get("actor")) == target["reference"] for p in experts_of(appointment)):
                raise error(409, "business-rule", f"{target['reference']} is already invited",
                            "redirectTo")  # fmt: skip
            transition(work, task, "redirect", expert, reason)
            appointment["participant"].append(participant(target, "invited-expert",
                                                          "needs-action"))  # fmt: skip
            sr["performer"] = [*(sr.get("performer") or []), target]
            work.changed(sr)
            if key_of(task.get("owner")) == key_of(expert):
                task["owner"] = target
            if appointment.get("status") == "booked":  # the new expert has not agreed the time
                free_slots(work, appointment)
                appointment["status"] = "proposed"
            return
        if any(p.get("status") != "declined" for p in experts_of(appointment)):
            if key_of(task.get("owner")) == key_of(expert):
                task["owner"] = next(
                    {"reference": p["actor"]["reference"]}
                    for p in experts_of(appointment) if p.get("status") != "declined"
                )  # fmt: skip
                work.changed(task)
            return
        transition(work, task, "decline", expert, reason)
        revoke(work, sr, reason)
        end_appointment(work, appointment, "cancelled", reason)

    return run(call, body, "$decline")


@operation("$propose-time", "instance", types=("Task",),
           definition=f"{OPDEF}Task-propose-time")  # fmt: skip
def propose_time(call: Call) -> Outcome:
    """An invited expert proposes another time (`start`, `end`): an AppointmentResponse
    tentative with those times. A scheduled session goes back to accepted (C5: Appointment
    pending, Slot freed) until $schedule fixes the time again."""

    def body(work: Work, task: Json, sr: Json) -> None:
        start, end = call.value("start"), call.value("end")
        low, high = parse_instant(start), parse_instant(end)
        if low is None or high is None or high <= low:
            raise error(400, "invalid", "Give start and end (instants, start before end)",
                        "start")  # fmt: skip
        appointment = _appointment(work, task)
        expert = _expert(call, appointment)
        status = business_status(task)
        if status not in ("requested", "redirected", "accepted", "scheduled"):
            raise error(409, "business-rule",
                        f"A time cannot be proposed for a consultation that is {status}",
                        "Task.status")  # fmt: skip
        respond(work, appointment, expert, "tentative", string_param(call, "comment"),
                start, end)  # fmt: skip
        if status == "scheduled":
            transition(work, task, "propose-time", expert)
            free_slots(work, appointment)
            appointment["status"] = "pending"

    return run(call, body, "$propose-time")


@operation("$schedule", "instance", types=("Task",), definition=f"{OPDEF}Task-schedule")
def schedule(call: Call) -> Outcome:
    """C6: fix the session time: `slot` (an invited expert's free Slot) or `start` + `end`;
    the Appointment is booked unless an invited expert is booked elsewhere then (409)."""

    def body(work: Work, task: Json, sr: Json) -> None:
        appointment = _appointment(work, task)
        work.table.allowed("schedule", task.get("status", ""), business_status(task))
        slot = reference_param(call, "slot")
        free_slots(work, appointment)
        if slot:
            book_slot(work, appointment, slot)
        else:
            start, end = call.value("start"), call.value("end")
            if not (isinstance(start, str) and isinstance(end, str)):
                raise error(400, "required", "Give 'slot', or 'start' and 'end'", "slot")
            set_time(work, appointment, start, end)
        transition(work, task, "schedule", actor(call, task.get("requester")))

    return run(call, body, "$schedule")


@operation("$start", "instance", types=("Task",), definition=f"{OPDEF}Task-start")
def start(call: Call) -> Outcome:
    """C7: the session starts: an Encounter of class VR (virtual) for the Appointment's
    participants (Encounter?appointment= finds it). An accepted consultation never scheduled
    (an asynchronous reading of images, ECG, slides) starts now, its Appointment booked from
    now for 30 minutes."""

    def body(work: Work, task: Json, sr: Json) -> None:
        appointment = _appointment(work, task)
        transition(work, task, "start", actor(call, task.get("owner")))
        if appointment.get("status") != "booked":
            begin = parse_instant(work.at)
            assert begin is not None
            appointment.update(status="booked", start=work.at,
                               end=instant(begin + timedelta(minutes=30)))  # fmt: skip
            work.changed(appointment)
        people = [p for p in appointment.get("participant") or []
                  if p.get("status") == "accepted"
                  and str(key_of(p.get("actor"))).startswith("PractitionerRole/")]  # fmt: skip
        encounter = work.add({
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": coding(ACT_CODE, "VR", "virtual"),
            "serviceType": {"coding": [coding(SNOMED, CONSULTATION, "Consultation")]},
            "subject": sr["subject"],
            "basedOn": [ref(sr)],
            "appointment": [ref(appointment)],
            "participant": [{"type": p["type"], "individual": p["actor"]} for p in people],
            "period": {"start": work.at},
        })  # fmt: skip
        add_output(task, "encounter", "valueReference", ref(encounter))

    return run(call, body, "$start")


@operation("$submit-opinion", "instance", types=("Task",),
           definition=f"{OPDEF}Task-submit-opinion")  # fmt: skip
def submit_opinion(call: Call) -> Outcome:
    """C8: the expert's opinion as a draft Composition (LOINC 11488-4 Consult note, status
    preliminary) with the four sections; submitting again revises the same draft."""

    def body(work: Work, task: Json, sr: Json) -> None:
        texts = {name: string_param(call, name) for name, _, _ in SECTIONS}
        if not texts["opinion"]:
            raise error(400, "required", "Parameter 'opinion' (string) is required", "opinion")
        author = reference_param(call, "author") or task.get("owner")
        transition(work, task, "submit-opinion", actor(call, author))
        existing = linked(work, task, "opinion", "Composition")
        composition = existing or {"resourceType": "Composition"}
        composition.update(_opinion(work, task, sr, author, texts))
        if existing is None:
            work.add(composition)
            add_output(task, "opinion", "valueReference", ref(composition))
        else:
            work.changed(composition)

    return run(call, body, "$submit-opinion")


def _opinion(work: Work, task: Json, sr: Json, author: Any, texts: dict[str, str | None]) -> Json:
    encounter = linked(work, task, "encounter", "Encounter")
    out: Json = {
        "meta": {"profile": [OPINION_PROFILE]},
        "status": "preliminary",
        "type": {"coding": [coding(LOINC, CONSULT_NOTE, "Consult note")], "text": "会诊意见"},
        "subject": sr["subject"],
        "date": work.at,
        "author": [author],
        "title": "远程会诊意见 Consultation opinion",
        "event": [{"detail": [ref(sr), ref(task)]}],
        "section": [],
    }
    if encounter is not None:
        out["encounter"] = ref(encounter)
    for name, code, title in SECTIONS:
        text = texts[name] or "无"
        div = "".join(f"<p>{_escape(line)}</p>" for line in text.split("\n"))
        out["section"].append({
            "title": title,
            "code": {"coding": [coding(SECTION_SYSTEM, code)]},
            "text": {"status": "generated",
                     "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>'},
        })  # fmt: skip
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@operation("$sign", "instance", types=("Task",), definition=f"{OPDEF}Task-sign")
def sign(call: Call) -> Outcome:
    """C9: the expert signs: the Composition final with a legal attester, the Task and its
    ServiceRequest completed, the Appointment fulfilled, the Encounter finished."""

    def body(work: Work, task: Json, sr: Json) -> None:
        composition = linked(work, task, "opinion", "Composition")
        signer = reference_param(call, "signer")
        if composition is not None:
            signer = signer or (composition.get("author") or [None])[0]
        transition(work, task, "sign", actor(call, signer))
        assert composition is not None  # opinion-drafted has one
        composition.update(status="final", date=work.at)
        attester: Json = {"mode": "legal", "time": work.at}
        if signer:
            attester["party"] = signer
        composition["attester"] = [attester]
        work.changed(composition)
        work.set_status(sr, "completed")
        work.set_status(linked(work, task, "appointment", "Appointment"), "fulfilled")
        encounter = linked(work, task, "encounter", "Encounter")
        if encounter is not None and encounter.get("status") != "finished":
            period = {**(encounter.get("period") or {}), "end": work.at}
            work.set_status(encounter, "finished", period=period)

    return run(call, body, "$sign")


@operation("$cancel", "instance", types=("Task",), definition=f"{OPDEF}Task-cancel")
def cancel(call: Call) -> Outcome:
    """C10: the inviting doctor withdraws (`reason` required): ServiceRequest revoked,
    Appointment cancelled, Slot freed."""

    def body(work: Work, task: Json, sr: Json) -> None:
        reason = concept_param(call, "reason", required=True)
        transition(work, task, "cancel", actor(call, task.get("requester")), reason)
        revoke(work, sr, reason)
        end_appointment(work, linked(work, task, "appointment", "Appointment"), "cancelled",
                        reason)  # fmt: skip

    return run(call, body, "$cancel")


def expire(work: Work, task: Json, why: str) -> None:
    """C11 (the sweep): not answered in time: expired, ServiceRequest revoked, Appointment
    cancelled, Slot freed."""
    reason = {"text": why}
    transition(work, task, "expire", {"display": "fhir-server (system)"}, reason)
    sr = work.resolve(task.get("focus"), "ServiceRequest", "Task.focus")
    revoke(work, sr, reason)
    end_appointment(work, linked(work, task, "appointment", "Appointment"), "cancelled", reason)


#: operation names both workflows define on Task: the referral's handles its own Tasks
SHARED = ("$accept", "$cancel")


def share(operations: Operations) -> None:
    """Make Task/$accept and Task/$cancel serve both workflows: a consultation Task goes to the
    handler here, any other Task to the one registered before (the referral's)."""
    mine = {op.name: op for op in OPERATIONS if op.name in SHARED}
    for name in SHARED:
        theirs = operations.find(name, "instance", "Task", "POST")
        if theirs is mine[name]:
            continue
        operations.replace(
            theirs,
            Operation(name, "instance", ("Task",), theirs.methods,
                      _dispatch(mine[name], theirs), theirs.definition),
        )  # fmt: skip


def _dispatch(mine: Operation, theirs: Operation) -> Any:
    def handler(call: Call) -> Outcome:
        assert call.rid is not None
        found = call.services.store.reader().current("Task", call.rid)
        doc = found[1].json if found is not None and not found[1].deleted else None
        if doc is not None and is_consultation_task(_loads(doc)):
            return mine.handler(call)
        return theirs.handler(call)

    return handler


def _loads(doc: Any) -> Json:
    loaded: Json = literal.loads(doc)
    return loaded
