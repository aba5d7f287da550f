"""HL7 v2 messages -> FHIR, following the HL7 Version 2 to FHIR IG 1.0.0 by message structure
(its message maps pick a segment map per segment; its vocabulary maps are data in ../tables).
Mapping is pure: a message becomes a Plan (plan.py) that apply.py writes in one transaction.

Where the IG is silent we chose (and say so in each module): ADT_A03 (discharge) and ADT_A39
(A40 merge) have no IG map; identity of every resource is by business identifier."""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.settings import Settings

from ..er7 import Message, Segment
from ..receipt import Header
from .allergy import allergies
from .appointment import appointment
from .condition import diagnoses
from .context import Context
from .coverage import coverages
from .document import document
from .encounter import encounter, has_visit
from .messageheader import message_header, provenance
from .orders import groups, service_request
from .patient import patient, prior_identifiers
from .plan import MappingError, Op, Plan, reference, token
from .procedure import procedures
from .results import report

__all__ = ["MappingError", "Plan", "map_message"]

#: the ADT structures whose DG1, AL1, PR1 and IN1 are mapped
_CLINICAL = frozenset({"ADT_A01", "ADT_A03", "ADT_A05"})
MERGE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
                     "code": "merge", "display": "Merge Record Lifecycle Event"}]}  # fmt: skip


def map_message(message: Message, header: Header, settings: Settings) -> Plan:
    """The plan of one message (MappingError naming the field when it cannot be mapped)."""
    assert header.structure is not None
    ctx = Context(message, header, settings)
    focus = _BUILDERS[header.structure](ctx)
    plan = ctx.plan
    plan.provenance = provenance(ctx, message_header(ctx, focus))
    if plan.activity is not None:  # the same agents and source, its own activity
        plan.activity = {**plan.provenance, **plan.activity}
    return plan


def _first(ctx: Context, name: str) -> Segment:
    """A segment the structure requires (receipt.py checked it is there)."""
    found = ctx.message.first(name)
    assert found is not None, name
    return found


def adt(ctx: Context) -> list[Op]:
    """ADT_A01 (A01, A04, A08, A13), A02, A03, A05 (A05, A14, A28, A31), A09 (A11): the
    Patient from PID (the newer truth: upsert) and the Encounter from PV1, found by PV1-19.
    An ADT_A05 whose PV1 describes no visit (`PV1|1|N`) makes no Encounter; the events of a
    visit (A01, A02, A03, A04, A11, A13) need its number. ADT_A01 and ADT_A05 (the IG's maps)
    and ADT_A03 (a discharge brings its diagnoses and procedures; our choice) also map DG1,
    AL1, PR1 and IN1; a cancelled admission (A11) or a transfer (A02) does not."""
    pid = _first(ctx, "PID")
    event = ctx.header.event
    person = patient(ctx, pid, "keep" if event == "A11" else "upsert")
    pv1 = ctx.message.first("PV1")
    visit = event in ("A01", "A02", "A03", "A04", "A11", "A13")
    stay = None
    if pv1 is not None and (has_visit(pv1) or (visit and pv1.value(2) != "N")):
        stay = encounter(ctx, pv1, person, "upsert")
    elif visit:
        raise ctx.at(pv1 or pid, 19, 1).error(  # type: ignore[arg-type]
            101, f"{ctx.header.type} needs a PV1 with the visit number (PV1-19)")
    if ctx.header.structure in _CLINICAL:
        diagnoses(ctx, person, stay)
        allergies(ctx, person)
        procedures(ctx, person, stay)
        coverages(ctx, person)
    return [person, stay] if stay is not None else [person]


def merge(ctx: Context) -> list[Op]:
    """ADT^A40 (ADT_A39; no IG map, design note integrations.md §1.4): PID is the surviving
    record, MRG-1 the one merged into it. The old Patient gets `active` false and a link
    `replaced-by` the survivor, which links back with `replaces` (R4 link-type); both in a
    Provenance of activity `merge`. A repeated A40 changes nothing, so writes nothing."""
    survivor = patient(ctx, _first(ctx, "PID"), "upsert")
    mrg = _first(ctx, "MRG")
    prior = prior_identifiers(ctx, mrg)
    first = survivor.resource["identifier"][0]
    if (prior[0]["system"], prior[0]["value"]) == (first["system"], first["value"]):
        raise ctx.at(mrg, 1, 1).error(205, "MRG-1 names the surviving record (PID-3) itself")
    old = ctx.plan.add(Op(
        "prior", "Patient",
        {"resourceType": "Patient", "active": False,
         "link": [{"other": reference(survivor), "type": "replaced-by"}]},
        match=token("identifier", prior[0]["system"], prior[0]["value"]), mode="existing",
        merge=("identifier", "link"),
    ))  # fmt: skip
    survivor.resource["link"] = [{"other": reference(old), "type": "replaces"}]
    ctx.plan.activity = {"activity": MERGE}
    ctx.plan.activity_targets = (survivor.key, old.key)
    return [survivor]


def _patient_and_visit(ctx: Context) -> tuple[Op | None, Op | None]:
    """For results, orders, appointments and documents: the Patient and the Encounter as
    stored (mode keep), created from the message only when unknown."""
    pid = ctx.message.first("PID")
    person = patient(ctx, pid, "keep") if pid is not None else None
    pv1 = ctx.message.first("PV1")
    visit = None
    if person is not None and pv1 is not None and has_visit(pv1):
        visit = encounter(ctx, pv1, person, "keep")
    return person, visit


def results(ctx: Context) -> list[Op]:
    """ORU_R01: a DiagnosticReport per order group (OBR), with its Observations (OBX),
    Specimen and ServiceRequest."""
    person, visit = _patient_and_visit(ctx)
    if person is None:
        raise ctx.at(ctx.message.msh, 1).error(100, "ORU_R01 without PID: no patient to report on")
    return [report(ctx, order, person, visit, n)
            for n, order in enumerate(groups(ctx.message.segments), 1) if order.obr]


def orders(ctx: Context) -> list[Op]:
    """ORM_O01 and OML_O21: a ServiceRequest per order group (ORC), its status from ORC-5 or
    the order control code ORC-1 (NW new, CA cancel, DC discontinue, HD hold...)."""
    person, visit = _patient_and_visit(ctx)
    if person is None:
        raise ctx.at(ctx.message.msh, 1).error(100, f"{ctx.header.structure} without PID")
    return [service_request(ctx, order, person, visit, "upsert", n)
            for n, order in enumerate(groups(ctx.message.segments), 1)]


def schedule(ctx: Context) -> list[Op]:
    """SIU_S12 (S12-S26): the Appointment (SCH and its resource segments)."""
    person, _ = _patient_and_visit(ctx)
    return [appointment(ctx, _first(ctx, "SCH"), person)]


def documents(ctx: Context) -> list[Op]:
    """MDM_T02 (T02, T04, T06, T08, T10): the DocumentReference (TXA and its OBX lines)."""
    person, visit = _patient_and_visit(ctx)
    if person is None:
        raise ctx.at(ctx.message.msh, 1).error(100, "MDM_T02 without PID")
    return [document(ctx, _first(ctx, "TXA"), person, visit)]


_BUILDERS: dict[str, Callable[[Context], list[Op]]] = {
    "ADT_A01": adt, "ADT_A02": adt, "ADT_A03": adt, "ADT_A05": adt, "ADT_A09": adt,
    "ADT_A39": merge, "ORU_R01": results, "ORM_O01": orders, "OML_O21": orders,
    "SIU_S12": schedule, "MDM_T02": documents,
}  # fmt: skip
