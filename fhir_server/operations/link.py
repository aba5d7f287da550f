"""Patient/$link and Patient/$unlink: linking two Patient records of one person by hand, both
records changed in one transaction through the ordinary update (validation, policy, history).

Links follow R4 Patient.link.type (valueset-link-type.html): `seealso` and `refer` join two
records that both stay in use (each hospital's record of the person: each points at the other);
`replaced-by` merges the source into the target (the source points forward and is made
inactive, the target points back with `replaces`), as an HL7 v2 A40 merge does."""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..interactions import read, write
from ..interactions.hooks import transaction
from ..model import literal
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
LINK = "https://yilian.health/fhir/OperationDefinition/Patient-link"
UNLINK = "https://yilian.health/fhir/OperationDefinition/Patient-unlink"
#: the link type each side gets: (source's, target's)
KINDS = {
    "seealso": ("seealso", "seealso"),
    "refer": ("refer", "refer"),
    "replaced-by": ("replaced-by", "replaces"),
}


@OPERATIONS.operation("$link", "type", ("Patient",), definition=LINK)
def link(call: Call) -> Outcome:
    """Link `source` to `target` with `type` (default seealso); answers both records."""
    kind = call.value("type") or "seealso"
    if kind not in KINDS:
        known = ", ".join(KINDS)
        raise error(400, "code-invalid", f"Link type must be one of {known}, not '{kind}'", "type")
    source_id, target_id = _pair(call)
    mine, theirs = KINDS[kind]

    def change(source: dict[str, Any], target: dict[str, Any]) -> None:
        for patient, other_id, role in ((source, target_id, "source"),
                                        (target, source_id, "target")):  # fmt: skip
            merged = [x for x in patient.get("link") or []
                      if x.get("type") == "replaced-by" and _target(x) != other_id]  # fmt: skip
            if merged:
                into = (merged[0].get("other") or {}).get("reference")
                raise error(409, "business-rule",
                            f"Patient/{patient['id']} was merged into {into}: link that record "
                            "instead", role)  # fmt: skip
        _set_link(source, target_id, mine)
        _set_link(target, source_id, theirs)
        if kind == "replaced-by":
            source["active"] = False

    return _apply(call, source_id, target_id, change)


@OPERATIONS.operation("$unlink", "type", ("Patient",), definition=UNLINK)
def unlink(call: Call) -> Outcome:
    """Remove every link between `source` and `target`, from both records (a merged record's
    `active` is left as it is: reactivating it is a decision of its own)."""
    source_id, target_id = _pair(call)

    def change(source: dict[str, Any], target: dict[str, Any]) -> None:
        _drop_links(source, target_id)
        _drop_links(target, source_id)

    return _apply(call, source_id, target_id, change)


def _pair(call: Call) -> tuple[str, str]:
    ids = []
    for name in ("source", "target"):
        value = call.value(name)
        reference = value.get("reference") if isinstance(value, dict) else value
        if not isinstance(reference, str) or not reference.startswith("Patient/"):
            raise error(400, "required", f"'{name}' must be a Reference to a Patient", name)
        rid = reference.removeprefix(call.ctx.base_url + "/").removeprefix("Patient/")
        if "/" in rid or not rid:
            raise error(400, "invalid", f"'{name}' must be Patient/[id], not '{reference}'", name)
        ids.append(rid)
    if ids[0] == ids[1]:
        raise error(400, "invalid", "A Patient cannot be linked to itself", "target")
    return ids[0], ids[1]


def _apply(call: Call, source_id: str, target_id: str, change: Any) -> Outcome:
    services, ctx = call.services, call.ctx
    with transaction(services, ctx) as session:
        records = []
        for rid in (source_id, target_id):
            stored = read.read_as(session, services, ctx, "Patient", rid)
            assert stored.json is not None
            records.append(literal.loads(stored.json))  # numbers as written
        change(*records)
        results = [
            write.update(session, services, ctx, "Patient", r["id"], services.validator(r))
            for r in records
        ]
    entries = [
        {"fullUrl": f"{ctx.base_url}/{s.type}/{s.id}", "resource": literal.loads(s.json)}
        for s in (r.stored for r in results)
        if s is not None and s.json is not None
    ]
    return Outcome({"resourceType": "Bundle", "type": "collection", "entry": entries})


def _drop_links(patient: dict[str, Any], other: str) -> None:
    """Remove the links of `patient` to Patient/`other`."""
    rest = [x for x in patient.get("link") or [] if _target(x) != other]
    if rest:
        patient["link"] = rest
    else:
        patient.pop("link", None)


def _set_link(patient: dict[str, Any], other: str, kind: str) -> None:
    """One link to `other`, of `kind` (a pair of records has one relationship)."""
    _drop_links(patient, other)
    patient.setdefault("link", []).append({"other": {"reference": f"Patient/{other}"},
                                           "type": kind})  # fmt: skip


def _target(link: dict[str, Any]) -> str | None:
    reference = (link.get("other") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/"):
        return reference.removeprefix("Patient/")
    return None
