"""Referral workflow operations (referral-model.md §3.2). Each reads, checks and writes Task,
ServiceRequest, Appointment, Slot, Encounter and Provenance in ONE write transaction, keeping
their statuses consistent (§2.5 consistency table) and answering a collection Bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import error
from ..interactions.search import find
from ..operations.registry import Call, Operations, Outcome
from .booking import attach_appointment, book, end_appointment
from .codes import BUSINESS_SYSTEM, CS, OPDEF, OUTPUT_SYSTEM, REFERRAL_NUMBER, SD
from .params import actor, bool_param, concept_param, reference_param, string_param
from .rules import business_status, is_referral_task
from .transitions import APPROVAL_DECISIONS, APPROVAL_OPEN, APPROVED
from .work import (
    ACT_CODE,
    SYSTEM_AGENT,
    TASK_CODES,
    Json,
    Work,
    add_note,
    add_output,
    approval_tasks,
    bundle,
    close_approvals,
    coding,
    direction,
    instant,
    is_approval,
    linked,
    parse_instant,
    ref,
    referral_task,
    referral_type,
    revoke,
    run,
    service_request,
    split,
    transition,
)

OPERATIONS = Operations()
operation = OPERATIONS.operation


@operation(
    "$submit", "instance", types=("ServiceRequest",), definition=f"{OPDEF}ServiceRequest-submit"
)
def submit(call: Call) -> Outcome:
    """T1/T2: create the referral Task owned by SR.performer; SR draft -> active; with `slot`
    (outpatient only) book an Appointment and go straight to accepted/booked."""

    def body(work: Work, sr: Json) -> None:
        if sr.get("status") != "draft":
            raise error(
                409,
                "business-rule",
                f"ServiceRequest/{sr['id']} is {sr.get('status')}, not draft",
                "ServiceRequest.status",
            )
        performer = (sr.get("performer") or [None])[0]
        if not performer or not sr.get("subject"):
            raise error(
                422,
                "business-rule",
                "A referral needs subject and performer (target)",
                "ServiceRequest.performer",
            )
        task = existing_draft(work, sr) or new_task(work, sr, performer)
        valid_until = call.value("validUntil")
        if isinstance(valid_until, str):
            task["restriction"] = {"period": {"end": valid_until}}
        agent = actor(call, sr.get("requester") or task.get("requester"))
        slot = reference_param(call, "slot")
        appointment = reference_param(call, "appointment")
        number(work, sr)
        work.set_status(sr, "active")
        if slot is None and appointment is None:
            transition(work, task, "submit", agent)
            return
        if referral_type(sr) != "outpatient":
            raise error(
                409, "business-rule", "Direct booking is for outpatient referrals only", "slot"
            )
        if slot:
            book(work, task, sr, slot)
        else:
            attach_appointment(work, task, sr, appointment)
        to = "booked-pending-review" if bool_param(call, "pendingReview") else "booked"
        transition(work, task, "submit-booked", agent, to=to)

    return run(call, "ServiceRequest", body, operation="$submit")


def existing_draft(work: Work, sr: Json) -> Json | None:
    pairs = find(
        work.session,
        work.services,
        work.ctx,
        "Task",
        f"based-on=ServiceRequest/{sr['id']}&status=draft",
        limit=None,
    )
    for t, i in pairs:
        task = work.load(t, i)
        if task is not None and is_referral_task(task):
            return task
    return None


def number(work: Work, sr: Json) -> None:
    """Give a submitted SR its 转诊单号 when it has none (yl-sr-6): the day and the id's last 8
    characters (a server id's random end: its start is the time, shared by the ids of a
    minute)."""
    system = REFERRAL_NUMBER
    if any(i.get("system") == system for i in sr.get("identifier") or []):
        return
    value = f"ZZ{work.at[:10].replace('-', '')}-{sr['id'][-8:]}"
    sr.setdefault("identifier", []).append({"system": system, "value": value})


def new_task(work: Work, sr: Json, owner: Json) -> Json:
    task: Json = {
        "resourceType": "Task",
        "meta": {"profile": [f"{SD}yl-referral-task"]},
        "status": "draft",
        "businessStatus": {"coding": [coding(BUSINESS_SYSTEM, "drafted")]},
        "intent": "order",
        "priority": sr.get("priority", "routine"),
        "code": {"coding": [coding(TASK_CODES, "fulfill")]},
        "basedOn": [ref(sr)],
        "focus": ref(sr),
        "for": sr["subject"],
        "authoredOn": work.at,
        "lastModified": work.at,
        "owner": owner,
    }
    if sr.get("requester"):
        task["requester"] = sr["requester"]
    way = direction(sr)
    if way:
        task["extension"] = [{"url": f"{SD}yl-referral-direction", "valueCoding": way}]
    return work.add(task)


@operation("$claim", "instance", types=("Task",), definition=f"{OPDEF}Task-claim")
def claim(call: Call) -> Outcome:
    """T3 (outpatient etc.) or T4 (inpatient: under review, one approval sub-task per
    `approver`, default one owned by the claiming owner)."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        sr = service_request(work, task)
        owner = reference_param(call, "owner")
        agent = actor(call, owner or task.get("owner"))
        if owner:
            task["owner"] = owner
        if referral_type(sr) != "inpatient":
            transition(work, task, "claim", agent)
            return
        transition(work, task, "review", agent)
        approvers = [
            {"reference": v} if isinstance(v, str) else v
            for p in call.values("approver")
            for k, v in p.items()
            if k in ("valueReference", "valueString")
        ] or [task["owner"]]
        if any((split(a) or ("",))[0] != "PractitionerRole" for a in approvers):
            raise error(
                422,
                "business-rule",
                "Approval sub-tasks are owned by a PractitionerRole: give 'approver' "
                "(or a PractitionerRole 'owner')",
                "approver",
            )
        level = concept_param(call, "approvalLevel")
        for approver in approvers:
            sub: Json = {
                "resourceType": "Task",
                "meta": {"profile": [f"{SD}yl-referral-approval-task"]},
                "status": "requested",
                "intent": "order",
                "code": {"coding": [coding(TASK_CODES, "approve")]},
                "partOf": [ref(task)],
                "basedOn": [ref(sr)],
                "focus": ref(sr),
                "for": task["for"],
                "authoredOn": work.at,
                "lastModified": work.at,
                "requester": task["owner"],
                "owner": approver,
            }
            if level:
                sub["input"] = [
                    {
                        "type": {"coding": [coding(OUTPUT_SYSTEM, "approvalLevel")]},
                        "valueCodeableConcept": level,
                    }
                ]
            work.add(sub)

    return run(call, "Task", body, operation="$claim")


def _same_booking(work: Work, task: Json, appointment: Json | None, slot: Json | None) -> None:
    """T9 confirms the booking made at submission: an `appointment` or `slot` naming another
    is refused (409 at that parameter) rather than ignored, so the receiver is not told a time
    is booked that was not."""
    booked = linked(work, task, "appointment", "Appointment")
    held = {split(s) for s in (booked or {}).get("slot") or []}
    if appointment is not None and (booked is None or split(appointment) != split(ref(booked))):
        name, given = "appointment", appointment
    elif slot is not None and split(slot) not in held:
        name, given = "slot", slot
    else:
        return
    what = f"Appointment/{booked['id']}" if booked else "its booking"
    raise error(409, "business-rule", f"Task/{task['id']} is booked pending review "
                f"({what}): $accept confirms that booking, not {given.get('reference')} "
                "($reject releases it)", name)  # fmt: skip


@operation("$accept", "instance", types=("Task",), definition=f"{OPDEF}Task-accept")
def accept(call: Call) -> Outcome:
    """T7 accept (with `appointment`/`slot`: booked), T8 `bed` + `plannedAdmission`,
    T9 confirm a booking pending review; on an approval sub-task: approve it, and accept the
    referral (SYS) once every sub-task is approved."""

    def body(work: Work, task: Json) -> None:
        if is_approval(task):
            decide_approval(work, task, "accept", actor(call, task.get("owner")), None)
            return
        referral_task(task)
        sr = service_request(work, task)
        owner = reference_param(call, "assignedTo") or reference_param(call, "owner")
        agent = actor(call, owner or task.get("owner"))
        bed = reference_param(call, "bed")
        appointment, slot = reference_param(call, "appointment"), reference_param(call, "slot")
        add_note(work, task, string_param(call, "note"), agent)
        business = business_status(task)
        if task.get("status") == "accepted":
            if business == "booked-pending-review":
                _same_booking(work, task, appointment, slot)
                transition(work, task, "confirm-booking", agent)
            elif bed is None:
                raise error(
                    409, "business-rule", f"Task/{task['id']} is already accepted", "Task.status"
                )
        else:
            open_subs = [s for s in approval_tasks(work, task) if s.get("status") not in APPROVED]
            if open_subs and task.get("status") in ("requested", "received"):
                raise error(
                    409,
                    "business-rule",
                    f"{len(open_subs)} approval sub-task(s) are not approved yet",
                    "Task.status",
                )
            if owner:
                task["owner"] = owner
            if appointment or slot:
                work.table.allowed("accept", task.get("status", ""), business, "booked")
                if slot:
                    book(work, task, sr, slot)
                else:
                    attach_appointment(work, task, sr, appointment)
                transition(work, task, "accept", agent, to="booked", extra_milestones=("booked",))
            else:
                if referral_type(sr) == "outpatient":
                    raise error(
                        409,
                        "business-rule",
                        "An outpatient referral is accepted by booking it: give "
                        "'appointment' or 'slot'",
                        "appointment",
                    )
                transition(work, task, "accept", agent, to="approved")
        if bed is not None:
            work.resolve(bed, "Location", "bed")
            planned = call.value("plannedAdmission")
            work.table.allowed("assign-bed", task.get("status", ""), business_status(task))
            task["output"] = [
                o
                for o in task.get("output") or []
                if not {c.get("code") for c in (o.get("type") or {}).get("coding") or []}
                & {"bed", "plannedAdmission"}
            ]
            add_output(task, "bed", "valueReference", bed)
            if isinstance(planned, str):
                add_output(task, "plannedAdmission", "valueDateTime", planned)
            transition(work, task, "assign-bed", agent)

    return run(call, "Task", body, operation="$accept")


def decide_approval(work: Work, sub: Json, decision: str, agent: Json, reason: Json | None) -> None:
    """Approve or deny an approval sub-task; the parent referral follows (T7 when all are
    approved, T10 approval-denied on a denial)."""
    sources, to = APPROVAL_DECISIONS[decision]
    if sub.get("status") not in sources:
        raise error(
            409,
            "business-rule",
            f"Approval Task/{sub['id']} is {sub.get('status')}; it cannot be decided",
            "Task.status",
        )
    work.set_status(sub, to, lastModified=work.at)
    if reason is not None:
        sub["statusReason"] = reason
    work.record(sub, decision, agent, reason)
    key = split((sub.get("partOf") or [None])[0])
    parent = work.load(*key) if key else None
    if parent is None or not is_referral_task(parent):
        return
    if decision == "reject":
        denied = {"coding": [coding(f"{CS}yl-referral-rejection-reason", "approval-denied")]}
        reject_referral(work, parent, "reject", SYSTEM_AGENT, denied)
    elif all(s.get("status") in APPROVED for s in approval_tasks(work, parent)):
        transition(work, parent, "accept", SYSTEM_AGENT, to="approved")


def reject_referral(work: Work, task: Json, code: str, agent: Json, reason: Json) -> None:
    """T10: rejected/redirected; SR stays active; Appointment cancelled, Slot freed."""
    transition(work, task, code, agent, reason=reason)
    end_appointment(work, task, "cancelled", reason)
    close_approvals(work, task)


@operation("$reject", "instance", types=("Task",), definition=f"{OPDEF}Task-reject")
def reject(call: Call) -> Outcome:
    """T10: `reason` (Coding/CodeableConcept) required; `suggestedOrganization` redirects."""

    def body(work: Work, task: Json) -> None:
        reason = concept_param(call, "reason", required=True)
        if is_approval(task):
            decide_approval(work, task, "reject", actor(call, task.get("owner")), reason)
            return None
        referral_task(task)
        agent = actor(call, task.get("owner"))
        add_note(work, task, string_param(call, "note"), agent)
        suggested = reference_param(call, "suggestedOrganization")
        if suggested:
            work.resolve(suggested, "Organization", "suggestedOrganization")
            add_output(task, "suggestedOrganization", "valueReference", suggested)
        assert reason is not None
        reject_referral(work, task, "redirect" if suggested else "reject", agent, reason)

    return run(call, "Task", body, operation="$reject")


@operation("$request-info", "instance", types=("Task",), definition=f"{OPDEF}Task-request-info")
def request_info(call: Call) -> Outcome:
    """T5: the receiver asks the sender for more information (a Communication, if `question`)."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        sr = service_request(work, task)
        agent = actor(call, task.get("owner"))
        transition(work, task, "request-info", agent)
        question = string_param(call, "question")
        if question:
            communicate(work, task, sr, "info-request", question, agent, task.get("requester"))

    return run(call, "Task", body, operation="$request-info")


@operation("$provide-info", "instance", types=("Task",), definition=f"{OPDEF}Task-provide-info")
def provide_info(call: Call) -> Outcome:
    """T6: the sender answers; `attachment` references join SR.supportingInfo; back to
    under-review while approval sub-tasks are open, else received."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        sr = service_request(work, task)
        agent = actor(call, task.get("requester"))
        reviewing = any(s.get("status") in APPROVAL_OPEN for s in approval_tasks(work, task))
        transition(
            work, task, "provide-info", agent, to="under-review" if reviewing else "received"
        )
        attachments = [
            v
            for name in ("attachments", "attachment")
            for p in call.values(name)
            for k, v in p.items()
            if k == "valueReference"
        ]
        if attachments:
            sr.setdefault("supportingInfo", []).extend(attachments)
            work.changed(sr)
        answer = string_param(call, "answer")
        if answer:
            communicate(work, task, sr, "info-supplement", answer, agent, task.get("owner"))

    return run(call, "Task", body, operation="$provide-info")


def communicate(
    work: Work, task: Json, sr: Json, category: str, text: str, sender: Json, recipient: Any
) -> None:
    message: Json = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [ref(sr)],
        "partOf": [ref(task)],
        "category": [{"coding": [coding(f"{CS}yl-communication-category", category)]}],
        "subject": task["for"],
        "sent": work.at,
        "payload": [{"contentString": text}],
    }
    if "reference" in sender:
        message["sender"] = sender
    if isinstance(recipient, dict):
        message["recipient"] = [recipient]
    work.add(message)


@operation("$cancel", "instance", types=("Task",), definition=f"{OPDEF}Task-cancel")
def cancel(call: Call) -> Outcome:
    """T11: the sender withdraws (`reason` required): SR revoked, Appointment cancelled."""

    def body(work: Work, task: Json) -> None:
        reason = concept_param(call, "reason", required=True)
        referral_task(task)
        if bool_param(call, "enteredInError"):
            in_error(work, task, actor(call, task.get("requester")), reason)
            return
        sr = service_request(work, task)
        agent = actor(call, task.get("requester"))
        add_note(work, task, string_param(call, "note"), agent)
        transition(work, task, "cancel", agent, reason=reason)
        withdraw(work, task, sr, reason)

    return run(call, "Task", body, operation="$cancel")


def withdraw(work: Work, task: Json, sr: Json, reason: Json | None) -> None:
    """Consistency for cancelled/* (withdrawn, expired): SR revoked, Appointment cancelled,
    Slot freed, Encounter cancelled, open approvals cancelled."""
    revoke(work, sr, reason)
    end_appointment(work, task, "cancelled", reason)
    work.set_status(linked(work, task, "encounter", "Encounter"), "cancelled")
    close_approvals(work, task)


def expire(work: Work, task: Json, why: str) -> None:
    """T12 (the sweep): cancelled/expired; SR revoked with reason expired."""
    sr = service_request(work, task)
    reason = {"coding": [coding(f"{CS}yl-referral-cancel-reason", "expired")], "text": why}
    transition(work, task, "expire", SYSTEM_AGENT, reason=reason)
    withdraw(work, task, sr, reason)


@operation("$check-in", "instance", types=("Task",), definition=f"{OPDEF}Task-check-in")
def check_in(call: Call) -> Outcome:
    """T13 转诊报到: Encounter (arrived, basedOn SR) created or linked, Appointment arrived.
    Idempotent: checking in again answers the same Encounter and writes nothing."""

    def repeat(work: Work, task: Json) -> Json | None:
        encounter = linked(work, task, "encounter", "Encounter")
        if task.get("status") == "in-progress" and encounter is not None:
            done = [task, encounter, linked(work, task, "appointment", "Appointment")]
            return bundle(work.ctx.base_url, [r for r in done if r is not None])
        return None

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        sr = service_request(work, task)
        agent = actor(call, task.get("owner"))
        transition(work, task, "check-in", agent)
        appointment = linked(work, task, "appointment", "Appointment")
        work.set_status(appointment, "arrived")
        arrival = call.value("arrivalTime")
        existing = reference_param(call, "encounter")
        if existing:
            encounter = work.resolve(existing, "Encounter", "encounter")
            based_on = encounter.setdefault("basedOn", [])
            if ref(sr) not in based_on:
                based_on.append(ref(sr))
            if encounter.get("status") == "planned":
                encounter["status"] = "arrived"
            work.changed(encounter)
        else:
            encounter = work.add(new_encounter(work, task, sr, appointment, call, arrival))
        add_output(task, "encounter", "valueReference", ref(encounter))

    return run(call, "Task", body, repeat, operation="$check-in")


def new_encounter(
    work: Work, task: Json, sr: Json, appointment: Json | None, call: Call, arrival: Any
) -> Json:
    cls = call.value("encounterClass")
    if not isinstance(cls, dict):
        code = {"inpatient": "IMP", "emergency": "EMER"}.get(referral_type(sr) or "", "AMB")
        cls = coding(ACT_CODE, code)
    encounter: Json = {
        "resourceType": "Encounter",
        "meta": {"profile": [f"{SD}yl-referral-encounter"]},
        "status": "arrived",
        "class": cls,
        "subject": sr["subject"],
        "basedOn": [ref(sr)],
        "period": {"start": arrival if isinstance(arrival, str) else work.at},
    }
    if appointment is not None:
        encounter["appointment"] = [ref(appointment)]
    for candidate in (task.get("owner"), *(sr.get("performer") or [])):
        key = split(candidate)
        if key and key[0] == "Organization":
            encounter["serviceProvider"] = candidate
            break
    return encounter


@operation(
    "$start-treatment", "instance", types=("Task",), definition=f"{OPDEF}Task-start-treatment"
)
def start_treatment(call: Call) -> Outcome:
    """T14: arrived -> in-treatment, or admitted (`admitted` true, default for inpatient);
    Encounter in-progress."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        sr = service_request(work, task)
        admitted = bool_param(call, "admitted") or referral_type(sr) == "inpatient"
        transition(
            work,
            task,
            "start-treatment",
            actor(call, task.get("owner")),
            to="admitted" if admitted else "in-treatment",
        )
        work.set_status(linked(work, task, "encounter", "Encounter"), "in-progress")

    return run(call, "Task", body, operation="$start-treatment")


@operation("$no-show", "instance", types=("Task",), definition=f"{OPDEF}Task-no-show")
def no_show_operation(call: Call) -> Outcome:
    """T15: the patient did not arrive: Appointment noshow, Slot freed; SR stays active."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        no_show(work, task, actor(call, task.get("owner")), concept_param(call, "reason"))

    return run(call, "Task", body, operation="$no-show")


def no_show(work: Work, task: Json, agent: Json, reason: Json | None) -> None:
    reason = reason or {"text": "The patient did not arrive"}
    transition(work, task, "no-show", agent, reason=reason)
    end_appointment(work, task, "noshow", reason)


@operation("$complete", "instance", types=("Task",), definition=f"{OPDEF}Task-complete")
def complete(call: Call) -> Outcome:
    """T16 with `feedbackDocument`, T17 with `downwardReferral` (submitted here if a draft):
    SR completed, Encounter finished, Appointment fulfilled; completing a downward referral
    creates the follow-up Tasks (settings.follow_up_days)."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        feedback = reference_param(call, "feedbackDocument")
        down_value = call.value("downwardReferral")
        if feedback is None and down_value is None:
            raise error(
                400,
                "required",
                "$complete needs feedbackDocument and/or downwardReferral",
                "feedbackDocument",
            )
        sr = service_request(work, task)
        agent = actor(call, task.get("owner"))
        code = "complete-down-referred" if down_value is not None else "complete"
        work.table.allowed(code, task.get("status", ""), business_status(task))
        if feedback:
            add_output(task, "feedbackDocument", "valueReference", feedback)
        plan = reference_param(call, "followUpPlan")
        if plan:
            add_output(task, "followUpPlan", "valueReference", plan)
        add_note(work, task, string_param(call, "note"), agent)
        transition(
            work,
            task,
            code,
            agent,
            extra_milestones=("feedback-sent",) if feedback and down_value else (),
        )
        if down_value is not None:
            down = down_referral(work, down_value)
            add_output(task, "downwardReferral", "valueReference", ref(down))
            if down.get("status") == "draft":
                submit_draft(work, down, agent)
        work.set_status(sr, "completed")
        encounter = linked(work, task, "encounter", "Encounter")
        if encounter is not None and encounter.get("status") != "finished":
            period = dict(encounter.get("period") or {})
            period["end"] = work.at
            work.set_status(encounter, "finished", period=period)
        work.set_status(linked(work, task, "appointment", "Appointment"), "fulfilled")
        if (direction(sr) or {}).get("code") == "down":
            follow_ups(work, task, sr)

    return run(call, "Task", body, operation="$complete")


def down_referral(work: Work, value: Any) -> Json:
    """`downwardReferral`: a Reference to a ServiceRequest, or one given inline (created)."""
    if isinstance(value, dict) and value.get("resourceType") == "ServiceRequest":
        created = {k: v for k, v in value.items() if k not in ("id", "meta")}
        created["meta"] = {"profile": [f"{SD}yl-referral-request"]}
        created.setdefault("status", "draft")
        created.setdefault("authoredOn", work.at)
        return work.add(created)
    reference = {"reference": value} if isinstance(value, str) else value
    return work.resolve(reference, "ServiceRequest", "downwardReferral")


def submit_draft(work: Work, sr: Json, agent: Json) -> None:
    """T1 for the downward referral created at completion."""
    performer = (sr.get("performer") or [None])[0]
    if not performer or not sr.get("subject"):
        raise error(
            422,
            "business-rule",
            "The downward referral needs subject and performer",
            "downwardReferral",
        )
    task = existing_draft(work, sr) or new_task(work, sr, performer)
    number(work, sr)
    work.set_status(sr, "active")
    transition(work, task, "submit", agent)


def follow_ups(work: Work, task: Json, sr: Json) -> None:
    """One yl-follow-up-task per configured day count after completion (回访)."""
    start = parse_instant(work.at) or datetime.now(UTC)
    days = [int(d) for d in work.services.settings.follow_up_days.split(",") if d.strip()]
    for day in days:
        due = start + timedelta(days=day)
        work.add(
            {
                "resourceType": "Task",
                "meta": {"profile": [f"{SD}yl-follow-up-task"]},
                "status": "requested",
                "intent": "order",
                "code": {"coding": [coding(f"{CS}yl-task-type", "follow-up")]},
                "description": f"Follow-up {day} days after the downward referral",
                "basedOn": [ref(sr)],
                "partOf": [ref(task)],
                "focus": ref(sr),
                "for": task["for"],
                "authoredOn": work.at,
                "lastModified": work.at,
                "owner": task["owner"],
                "restriction": {
                    "period": {"start": instant(due), "end": instant(due + timedelta(days=1))}
                },
            }
        )


@operation("$fail", "instance", types=("Task",), definition=f"{OPDEF}Task-fail")
def fail(call: Call) -> Outcome:
    """T18: treatment aborted (`reason` required): SR revoked, Encounter finished."""

    def body(work: Work, task: Json) -> None:
        reason = concept_param(call, "reason", required=True)
        referral_task(task)
        sr = service_request(work, task)
        agent = actor(call, task.get("owner"))
        add_note(work, task, string_param(call, "note"), agent)
        transition(work, task, "fail", agent, reason=reason)
        revoke(work, sr, reason)
        encounter = linked(work, task, "encounter", "Encounter")
        if encounter is not None:
            period = dict(encounter.get("period") or {})
            period["end"] = work.at
            work.set_status(encounter, "finished", period=period)
        work.set_status(linked(work, task, "appointment", "Appointment"), "fulfilled")

    return run(call, "Task", body, operation="$fail")


@operation(
    "$enter-in-error", "instance", types=("Task",), definition=f"{OPDEF}Task-enter-in-error"
)
def enter_in_error(call: Call) -> Outcome:
    """T19: created in error: Task, SR, Appointment, Encounter entered-in-error; Slot freed."""

    def body(work: Work, task: Json) -> None:
        referral_task(task)
        in_error(work, task, actor(call, task.get("requester")), concept_param(call, "reason"))

    return run(call, "Task", body, operation="$enter-in-error")


def in_error(work: Work, task: Json, agent: Json, reason: Json | None) -> None:
    sr = service_request(work, task)
    transition(work, task, "enter-in-error", agent, reason=reason)
    revoke(work, sr, reason, status="entered-in-error")
    end_appointment(work, task, "entered-in-error", None)
    work.set_status(linked(work, task, "encounter", "Encounter"), "entered-in-error")
    close_approvals(work, task)

