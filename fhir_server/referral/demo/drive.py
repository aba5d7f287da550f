"""Reaching each demo referral's business state through the workflow operations, called
in-process as a client would call them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any

from ...context import RequestContext
from ...interactions import bundle
from ...interactions.hooks import transaction
from ...model.resource import now
from ...operations.registry import Call
from ...services import Services
from ..operations import expire
from ..transitions import table_of
from ..work import Work
from .builder import Builder, Referral, draft_task, instant, ref, service_request
from .data import CST, HOSPITALS, PATHS


def put_all(services: Services, ctx: RequestContext, resources: list[dict[str, Any]]) -> None:
    """PUT the resources at their fixed ids in one transaction Bundle."""
    entries = [
        {
            "fullUrl": f"{ctx.base_url}/{x['resourceType']}/{x['id']}",
            "resource": x,
            "request": {"method": "PUT", "url": f"{x['resourceType']}/{x['id']}"},
        }
        for x in resources
    ]
    bundle.process(
        services,
        ctx,
        {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        "minimal",
    )


def _invoke(
    services: Services,
    ctx: RequestContext,
    rtype: str,
    rid: str,
    name: str,
    parameters: list[dict[str, Any]] | None = None,
) -> Any:
    op = services.operations.find(name, "instance", rtype, "POST")
    body = {"resourceType": "Parameters", "parameter": parameters or []}
    return op.handler(Call(services, ctx, rtype, rid, "POST", body, body)).resource


def _first(answer: Any, rtype: str, where: Callable[[dict[str, Any]], bool]) -> str:
    """The id of the first resource of a type in an operation's answer Bundle that matches."""
    for entry in (answer or {}).get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == rtype and where(resource):
            return str(resource["id"])
    raise LookupError(f"no {rtype} in the operation's answer")



def drive(services: Services, ctx: RequestContext, b: Builder, r: Referral) -> None:
    """Reach the referral's state through the workflow operations, as a client would."""
    if r.state == "drafted":  # a Task being composed: nothing to call yet
        drafted = table_of(services).business_status["drafted"]
        put_all(services, ctx, draft_task(b, r, drafted))
        return
    steps = PATHS[r.state]
    if r.rtype != "outpatient":  # only outpatient referrals are booked into a Slot
        steps = tuple(("approve" if s == "slot" else s) for s in steps)
        if "approve" in steps and "$claim" not in steps:
            steps = ("$claim", *steps)
    valid = datetime.combine(b.today + timedelta(days=14), time(23, 59, 59), CST)
    params: list[dict[str, Any]] = [{"name": "validUntil", "valueDateTime": instant(valid)}]
    if steps and steps[0] == "slot":
        params.append({"name": "slot", "valueReference": ref("Slot", b.slots[r.target].pop(0))})
        steps = steps[1:]
    answer = _invoke(services, ctx, "ServiceRequest", r.sr_id, "$submit", params)
    task = _first(answer, "Task", lambda t: not t.get("partOf"))
    claimed: Any = None
    for step in steps:
        claimed = _step(services, ctx, b, r, task, step, claimed)


def _step(
    services: Services,
    ctx: RequestContext,
    b: Builder,
    r: Referral,
    task: str,
    step: str,
    previous: Any,
) -> Any:
    """One operation call of a referral's path; answers the operation's Bundle."""
    call = functools.partial(_invoke, services, ctx, "Task", task)
    coordinator = ref("PractitionerRole", b.coordinators[r.target])
    if step == "$claim":
        return call("$claim", [{"name": "owner", "valueReference": coordinator}])
    if step == "approve":  # approve each approval sub-task ($claim of an inpatient referral)
        subs = [
            e["resource"]["id"]
            for e in (previous or {}).get("entry") or []
            if e.get("resource", {}).get("resourceType") == "Task" and e["resource"].get("partOf")
        ]
        if not subs:
            return call("$accept", [])
        for sub in subs:
            answer = _invoke(services, ctx, "Task", sub, "$accept", [])
        return answer
    if step == "bed":
        planned = datetime.combine(b.today + timedelta(days=2), time(10), CST)
        return call(
            "$accept",
            [
                {"name": "bed", "valueReference": ref("Location", b.beds[r.target][0])},
                {"name": "plannedAdmission", "valueDateTime": instant(planned)},
            ],
        )
    if step == "$request-info":
        return call(
            step, [{"name": "question", "valueString": "请补充近3个月的血压监测记录及用药清单。"}]
        )
    if step == "$start-treatment":
        return call(step, [])
    if step == "$check-in":
        return call(step, [])
    if step == "feedback":
        return call(
            "$complete",
            [
                {
                    "name": "feedbackDocument",
                    "valueReference": ref("DocumentReference", f"fb-{r.sr_id}"),
                }
            ],
        )
    if step == "down":
        down = {
            **service_request(
                b,
                Referral(
                    f"{r.sr_id}-down",
                    "submitted",
                    "down",
                    "rehabilitation",
                    r.target,
                    r.source,
                    b.doctors[r.target][0][0],
                    r.patient,
                    f"{r.number}-D",
                    r.submitted,
                ),
            ),
            "status": "draft",
        }
        down.pop("id")
        return call("$complete", [{"name": "downwardReferral", "resource": down}])
    if step == "$reject":
        return call(
            step,
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-rejection-reason", "no-capacity"),
                },
                {"name": "note", "valueString": "本周专家号源已满，建议下周重新申请。"},
            ],
        )
    if step == "redirect":
        other = next(h[0] for h in HOSPITALS if h[2] != "chc" and h[0] != r.target)
        return call(
            "$reject",
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-rejection-reason", "beyond-capability"),
                },
                {"name": "suggestedOrganization", "valueReference": ref("Organization", other)},
            ],
        )
    if step == "$cancel":
        return call(
            step,
            [
                {
                    "name": "reason",
                    "valueCoding": b.ours("yl-referral-cancel-reason", "patient-request"),
                }
            ],
        )
    if step == "$no-show":
        return call(step, [{"name": "reason", "valueString": "患者未按预约时间报到"}])
    if step == "expire":
        with transaction(services) as session:
            work = Work(session, services, ctx, now())
            expire(work, work.get("Task", task), "转诊申请超过72小时未处理，自动失效")
            work.commit()
        return None
    raise ValueError(f"unknown demo step {step!r}")
