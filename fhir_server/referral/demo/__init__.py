"""A deterministic demo 医联体 (hospital consortium) with referrals in every business state,
written through the server's own write path (`fhir-server demo`; `serve` on an empty database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from ...context import RequestContext
from ...services import Services
from .builder import Builder, feedback_document, plan_referrals, service_request
from .data import CST, HOSPITALS, STATES
from .drive import drive, put_all

__all__ = ["STATES", "Demo", "describe", "load_demo", "load_if_empty", "sign_ins"]


@dataclass
class Demo:
    """What load_demo wrote, for tests and the CLI's report."""

    organizations: int = 0
    patients: int = 0
    slots: int = 0
    referrals: int = 0
    states: dict[str, str] = field(default_factory=dict)  # ServiceRequest id -> business state
    resources: int = 0


def load_demo(services: Services, today: date | None = None, seed: int = 20250301) -> Demo:
    """Write the demo consortium into the database and drive its referrals to their states.

    One transaction Bundle holds the consortium Organization, one 三级甲等 hospital, two secondary
    hospitals, four 社区卫生服务中心, OrganizationAffiliations, coordinators and doctors
    (Practitioner + PractitionerRole), 50 patients, Schedules with reserved referral Slots for the
    next 14 days, and referral ServiceRequests. Each referral's Task is then moved to its business
    state by calling the workflow operations in-process ($submit, $claim, $accept, ...), as a
    client would. Everything random comes from one seeded generator, so two loads produce the
    same content.
    """
    today = today or datetime.now(CST).date()
    b = Builder(today, seed, services.terminology)
    b.build()
    referrals = plan_referrals(b)
    for r in referrals:
        r.resource = service_request(b, r)
        b.add(r.resource)
        if r.state == "feedback-sent":
            b.add(feedback_document(r))
    ctx = RequestContext(
        base_url=services.settings.public_base_url
        or f"http://{services.settings.host}:{services.settings.port}/fhir"
    )
    put_all(services, ctx, b.resources)
    demo = Demo(
        organizations=1 + len(HOSPITALS),
        patients=len(b.patients),
        slots=sum(len(s) for s in b.slots.values()),
        referrals=len(referrals),
        resources=len(b.resources),
    )
    for r in referrals:
        drive(services, ctx, b, r)
    demo.states = {r.sr_id: r.state for r in referrals}
    return demo


def load_if_empty(services: Services) -> Demo | None:
    """Load the demo unless the database already holds a Patient."""
    if services.store.reader().any_current("Patient"):
        return None
    return load_demo(services)


def sign_ins() -> list[tuple[str, str]]:
    """(username, fhirUser) of the demo's people who sign in: each hospital's first doctor and
    referral coordinator (转诊办), and the first two patients. The wiring (fhir_server/app.py)
    registers them with the auth feature."""
    doctors = [(f"dr-{oid}", f"PractitionerRole/role-{oid}-dr1") for oid, *_ in HOSPITALS]
    coordinators = [(f"rc-{oid}", f"PractitionerRole/role-{oid}-rc") for oid, *_ in HOSPITALS]
    return [*doctors, *coordinators, ("pat-001", "Patient/pat-001"), ("pat-002", "Patient/pat-002")]


def describe(demo: Demo) -> str:
    """One line for the console saying what was loaded."""
    return (
        f"demo consortium loaded: {demo.organizations} organizations, {demo.patients} patients, "
        f"{demo.slots} reserved slots, {demo.referrals} referrals in "
        f"{len(set(demo.states.values()))} business states"
    )
