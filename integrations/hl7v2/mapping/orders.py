"""ORC + OBR (+ TQ1, NTE, SPM) -> ServiceRequest and Specimen, after the IG's segment maps
ORC[ServiceRequest], OBR[ServiceRequest], OBR[Specimen] and SPM[Specimen]; the order groups of
ORM_O01, OML_O21 and ORU_R01.

An order is found by its placer order number (ORC-2, else OBR-2; identifier type PLAC) in the
sending facility's system, so the ORU that answers an OML finds the ServiceRequest it made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import tables
from ..er7 import Composite, Segment
from . import datatypes as dt
from .context import Context
from .plan import Mode, Op, token


@dataclass
class Order:
    """One order group: ORC (optional in ORU), OBR, its notes and timing, its observations
    with their notes, its specimens."""

    orc: Segment | None
    obr: Segment | None = None
    notes: list[Segment] = field(default_factory=list)
    timing: list[Segment] = field(default_factory=list)
    observations: list[tuple[Segment, list[Segment]]] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)


def groups(segments: list[Segment]) -> list[Order]:
    """The order groups, in order: an ORC opens a group; an OBR joins the ORC just before it
    or opens a group of its own; OBX, NTE, TQ1 and SPM belong to the group they follow."""
    out: list[Order] = []
    for s in segments:
        name = s.name
        current = out[-1] if out else None
        if name == "ORC":
            out.append(Order(s))
        elif name == "OBR":
            if current is not None and current.obr is None:
                current.obr = s
            else:
                out.append(Order(None, s))
        elif current is None:
            continue
        elif name == "OBX":
            current.observations.append((s, []))
        elif name == "NTE":
            (current.observations[-1][1] if current.observations else current.notes).append(s)
        elif name == "TQ1":
            current.timing.append(s)
        elif name == "SPM":
            current.specimens.append(s)
    return out


def order_number(c: Composite, ctx: Context, kind: str, code: str) -> dict[str, Any] | None:
    """EI (entity id ^ namespace ^ universal id ^ type) -> Identifier of type PLAC or FILL, in
    the system of its namespace (else the sending facility)."""
    if not c[1]:
        return None
    return dt.identifier(c[1], ctx.system(kind, c[2] or c[3]), code)


def numbers(ctx: Context, order: Order) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(placer, filler) order numbers: ORC-2/3, else OBR-2/3 (IG ORC[ServiceRequest])."""
    orc, obr = order.orc, order.obr
    placer = filler = None
    for segment in (orc, obr):
        if segment is not None:
            placer = placer or order_number(segment.composite(2), ctx, "placer-order", "PLAC")
            filler = filler or order_number(segment.composite(3), ctx, "filler-order", "FILL")
    return placer, filler


def status(ctx: Context, orc: Segment | None, default: str) -> str:
    """ORC-5 (OrderStatus), else ORC-1 (OrderControlCode[ServiceRequest.status])."""
    if orc is None:
        return default
    if orc.value(5):
        mapped = tables.code("OrderStatus", orc.value(5))
        if mapped is None:
            raise ctx.at(orc, 5).error(103, f"'{orc.value(5)}' is not an order status (0038)")
        return mapped
    return tables.code("OrderControlCode[ServiceRequest.status]", orc.value(1)) or default


def service_request(ctx: Context, order: Order, patient: Op, encounter: Op | None,
                    mode: Mode, n: int, default_status: str = "active") -> Op:  # fmt: skip
    """The ServiceRequest op of an order group (key `order:<n>`)."""
    orc, obr = order.orc, order.obr
    placer, filler = numbers(ctx, order)
    if placer is None and filler is None:
        where = ctx.at(orc or obr, 2, 1)  # type: ignore[arg-type]
        raise where.error(101, "the order has no placer (ORC-2/OBR-2) nor filler number")
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [i for i in (placer, filler) if i],
        "status": status(ctx, orc, default_status),
        "intent": "order",
    }
    priority = _priority(order)
    if priority:
        resource["priority"] = priority
    code = obr is not None and ctx.codeable(obr, 4)
    if code:
        resource["code"] = code
    resource["subject"] = {"reference": patient.ref}
    if encounter is not None:
        resource["encounter"] = {"reference": encounter.ref}
    when = _occurrence(ctx, order)
    if when:
        resource["occurrenceDateTime"] = when
    if orc is not None and orc.value(9) and orc.value(1) in ("NW", ""):
        resource["authoredOn"] = ctx.date_time(orc, 9)
    requester = (orc and ctx.practitioner(orc.composite(12))) or (
        obr and ctx.practitioner(obr.composite(16))
    )
    if requester:
        resource["requester"] = requester
    reasons = [r for r in (dt.codeable(c, ctx.facility) for c in
                           (obr.composites(31) if obr else [])) if r]  # fmt: skip
    if reasons:
        resource["reasonCode"] = reasons
    notes = [{"text": t} for t in (note_text(s) for s in order.notes) if t]
    if notes:
        resource["note"] = notes
    specimens = [specimen(ctx, order, s, patient) for s in order.specimens]
    if specimens:
        resource["specimen"] = [{"reference": s.ref} for s in specimens]
    key = placer or filler
    assert key is not None
    return ctx.plan.add(Op(f"order:{n}", "ServiceRequest", resource,
                           match=token("identifier", key["system"], key["value"]), mode=mode))


def _priority(order: Order) -> str | None:
    """TQ1-9, else ORC-7.6 / OBR-27.6 (TQ priority; table 0485 as local.json Priority)."""
    codes = [s.value(9) for s in order.timing]
    codes += [s.value(n, 6) for s, n in ((order.orc, 7), (order.obr, 27)) if s is not None]
    for code in codes:
        if code:
            return tables.code("Priority", code.upper())
    return None


def _occurrence(ctx: Context, order: Order) -> str | None:
    """TQ1-7 (start), else ORC-7.4 / OBR-27.4 (TQ start date/time)."""
    for tq1 in order.timing:
        if tq1.value(7):
            return ctx.date_time(tq1, 7)
    for s, n in ((order.orc, 7), (order.obr, 27)):
        if s is not None and s.value(n, 4):
            return dt.date_time(s.value(n, 4), ctx.at(s, n, 4), ctx.zone)
    return None


def note_text(nte: Segment) -> str:
    """NTE-3 (FT, repeating) as text, repetitions as lines."""
    return "\n".join(nte.value(3, rep=r) for r in range(len(nte.reps(3)))).strip()


def specimen(ctx: Context, order: Order, spm: Segment | None, patient: Op) -> Op:
    """SPM -> Specimen (IG SPM[Specimen]); without SPM (v2.3/2.4), OBR-15 and OBR-7
    (IG OBR[Specimen]). Found by its id (SPM-2), else by the order's filler number."""
    obr = order.obr
    resource: dict[str, Any] = {"resourceType": "Specimen"}
    ids: list[dict[str, Any]] = []
    if spm is not None:
        eip = spm.composite(2)
        for n, kind in ((1, "PLAC"), (2, "FILL")):
            ei = eip.component(n)
            if ei[1]:
                ids.append(dt.identifier(ei[1], ctx.system("specimen", ei[2] or ei[3]), kind))
        kind_of = ctx.codeable(spm, 4)
        collected = ctx.date_time(spm, 17)
        received = ctx.date_time(spm, 18)
    else:
        assert obr is not None
        kind_of = dt.codeable(obr.composite(15).component(1), ctx.facility)
        collected = ctx.date_time(obr, 7)
        received = ctx.date_time(obr, 14)
    if not ids:
        placer, filler = numbers(ctx, order)
        base = filler or placer
        if base is None:
            raise ctx.at(obr or spm, 3, 1).error(  # type: ignore[arg-type]
                101, "the specimen has no id (SPM-2) and its order no number")
        ids.append(dt.identifier(base["value"], ctx.system("specimen", ""), "FILL"))
    resource["identifier"] = ids
    if kind_of:
        resource["type"] = kind_of
    resource["subject"] = {"reference": patient.ref}
    if received:
        resource["receivedTime"] = received
    if collected:
        resource["collection"] = {"collectedDateTime": collected}
    key = f"specimen:{ids[0]['system']}|{ids[0]['value']}"
    return ctx.plan.add(Op(key, "Specimen", resource,
                           match=token("identifier", ids[0]["system"], ids[0]["value"])))


def has_specimen(order: Order) -> bool:
    obr = order.obr
    return bool(order.specimens) or (obr is not None and bool(obr.value(15)))

