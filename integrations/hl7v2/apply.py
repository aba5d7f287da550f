"""Writing a message's plan through the FHIR write path (interactions/write: validation, write
hooks, history, indexes) inside the caller's write transaction, in a savepoint of its own: a
message that fails half way writes nothing, whatever the other messages committed with it do.
The mapper settles its inbox record in the same transaction, so a message is never marked mapped
without its resources, nor mapped twice."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.interactions import write
from fhir_server.interactions.search import find
from fhir_server.model import literal
from fhir_server.model.resource import now, without_stamps
from fhir_server.model.validate import Validated
from fhir_server.search.early import Early
from fhir_server.services import Services

from .ack import Err
from .mapping.plan import STAND_IN, MappingError, Op, Plan

if TYPE_CHECKING:  # typing only: the write transaction's session
    from fhir_server.storage.contract import Session


@dataclass
class Applied:
    """What a message wrote: the new versions (`Type/id/_history/n`) and, by plan key, the
    resource each op stands for (`Type/id`, also when nothing changed)."""

    written: list[str] = field(default_factory=list)
    resources: dict[str, str] = field(default_factory=dict)


def apply(session: Session, services: Services, ctx: RequestContext, plan: Plan) -> Applied:
    """Write the plan in `session` (all of it or, raising MappingError, none of it). Updates
    are written as they come; the new resources, and the Provenance naming them, are created
    together at the end (write.create_many: new ids only), each at version 1."""
    applied = Applied()
    try:
        with session.savepoint():
            found = _identify(session, services, ctx, plan)
            ids = {op.ref: found[op.key][0] for op in plan.ops}  # stand-in -> Type/id
            # every stand-in has its target: the planner's work stands (see _write)
            exact = plan.validated and None not in ids.values()
            real = {op.stand_in: str(found[op.key][0]).partition("/")[2]
                    for op in plan.ops} if exact else None  # fmt: skip
            changed: dict[str, str] = {}  # op key -> its new version
            creates: list[tuple[str, str, Validated, Early | None]] = []
            for op in plan.ops:
                ref, stored = found[op.key]
                if ref is None:  # mode `existing` and nothing stored: nothing to change
                    continue
                applied.resources[op.key] = ref
                if stored is not None and op.mode == "keep":
                    continue
                version = _write(session, services, ctx, op, ref, stored, ids, real, creates)
                if version:
                    changed[op.key] = version
                    applied.written.append(version)
            targets = [changed[op.key] for op in plan.ops if op.provenance and op.key in changed]
            if targets:
                creates.append(_provenance(services, plan.provenance, targets, ids,
                                           plan.provenance_early if exact else None))
            if plan.activity and set(changed) & set(plan.activity_targets):
                both = [changed.get(key) or applied.resources[key]
                        for key in plan.activity_targets if key in applied.resources]
                creates.append(_provenance(services, plan.activity, both, ids,
                                           plan.activity_early if exact else None))
            write.create_many(session, services, ctx, [c[:3] for c in creates],
                              [c[3] for c in creates])  # fmt: skip
    except FhirError as exc:
        raise mapping_error(exc) from None
    return applied


def _identify(
    session: Session, services: Services, ctx: RequestContext, plan: Plan
) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """Each op's resource (`Type/id`) and its stored JSON, before anything is written (ops
    refer to each other both ways: an A40's two Patients link to each other). A new resource
    gets a new id; an op of mode `existing` with nothing stored gets None."""
    out: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
    for op in plan.ops:
        rid = op.rid
        if rid is None and op.match is not None:
            matches = find(session, services, ctx, op.rtype, op.criteria or op.match)
            if len(matches) > 1:
                raise MappingError(Err(205, f"{op.rtype}?{op.match} matches several stored "
                                            f"{op.rtype} resources"))  # fmt: skip
            rid = matches[0][1] if matches else None
        stored = _stored(session, op.rtype, rid) if rid else None
        if stored is not None and op.follow:
            rid, stored = _survivor(session, op.rtype, rid, stored)  # type: ignore[arg-type]
        if rid is None and op.mode == "existing":
            out[op.key] = (None, None)
            continue
        out[op.key] = (f"{op.rtype}/{rid or write.new_id()}", stored)
    return out


def _stored(session: Session, rtype: str, rid: str) -> dict[str, Any] | None:
    current = session.current(rtype, rid)
    if current is None or current[1].deleted or current[1].json is None:
        return None
    loaded: dict[str, Any] = literal.loads(current[1].json)  # numbers as they were written
    return loaded


def _survivor(session: Session, rtype: str, rid: str, stored: dict[str, Any]
              ) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Follow `link` replaced-by (a merged record) to the record that replaced it."""
    for _ in range(5):
        forward = [link["other"].get("reference", "") for link in stored.get("link") or ()
                   if link.get("type") == "replaced-by"]  # fmt: skip
        if not forward or not forward[0].startswith(f"{rtype}/"):
            break
        target = _stored(session, rtype, forward[0].split("/", 1)[1])
        if target is None:
            break
        rid, stored = forward[0].split("/", 1)[1], target
    return rid, stored


def _write(session: Session, services: Services, ctx: RequestContext, op: Op, ref: str,
           stored: dict[str, Any] | None, ids: dict[str, str | None],
           real: dict[str, str] | None,
           creates: list[tuple[str, str, Validated, Early | None]]) -> str | None:  # fmt: skip
    """Update one resource, or add its create to `creates`; its new version reference, None
    when unchanged. When every stand-in has its target (`real`: the stand-in ids' real ones;
    else `resolve` leaves objects out), a new resource the worker validated before the write
    lock (stand-ins in its references) is the same resource with the references' ids
    replaced and an id of its own: still valid, so it is not validated again under the lock,
    and its index rows, which the worker computed too (`op.early`), stand once given the
    real ids; a merged one is validated and indexed again. A fixed id (the MessageHeader's)
    may have been deleted over REST: it is written as a PUT is, update-as-create continuing
    its versions (http.html#update)."""
    rtype, rid = ref.split("/", 1)
    body = resolve_fast(op, ids)
    if stored is not None:
        body = merged(stored, body, op)
    body["id"] = rid
    resource = Validated(body) if real is not None and stored is None else services.validator(body)
    if stored is None and (op.rid is None or session.current(rtype, rid) is None):
        early = op.early.bound(real) if real is not None and op.early is not None else None
        creates.append((rtype, rid, resource, early))
        return f"{ref}/_history/1"
    result = write.update(session, services, ctx, rtype, rid, resource)
    assert result.stored is not None
    if stored and str(result.stored.version) == (stored.get("meta") or {}).get("versionId"):
        return None
    return f"{ref}/_history/{result.stored.version}"


def merged(stored: dict[str, Any], new: dict[str, Any], op: Op) -> dict[str, Any]:
    """The stored resource updated by the message: its elements replaced by the message's,
    except the lists it unites (identifiers and links, stable in order so an unchanged
    message makes no new version), the objects it merges key by key and those the stored
    value keeps. The narrative goes: it described the old version."""
    out = {k: v for k, v in without_stamps(stored).items() if k not in ("text", "id")}
    for key, value in new.items():
        old = out.get(key)
        if key in op.keep and old is not None:
            continue
        if key in op.merge and isinstance(old, list) and isinstance(value, list):
            out[key] = _union(old, value)
        elif key in op.combine and isinstance(old, dict) and isinstance(value, dict):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


def _union(old: list[Any], new: list[Any]) -> list[Any]:
    """Old items in their order, each replaced by the new item with its key; then new ones."""
    fresh = {_key(item): item for item in new}
    out = [fresh.pop(_key(item), item) for item in old]
    return out + [item for item in new if _key(item) in fresh]


def _key(item: Any) -> str:
    if isinstance(item, dict) and "value" in item:  # Identifier
        return f"{item.get('system')}|{item['value']}"
    if isinstance(item, dict) and isinstance(item.get("other"), dict):  # Patient.link
        return str(item["other"].get("reference"))
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()


#: a stand-in reference in JSON text (plan.Op.ref): the whole string
_STAND_IN = re.compile(rb'"[A-Z][A-Za-z]*/' + re.escape(STAND_IN.encode()) + rb'[0-9]+"')


def resolve_fast(op: Op, ids: dict[str, str | None]) -> dict[str, Any]:
    """`resolve` of the op's resource as a replacement in its JSON text (the planner wrote
    it: `op.text`) when every stand-in has a target (stand-ins are whole JSON strings, so
    nothing else can match); the walk otherwise."""
    text = original = op.text if op.text is not None else orjson.dumps(op.resource)
    for quoted in set(_STAND_IN.findall(text)):
        target = ids.get(quoted[1:-1].decode())
        if target is None:
            return resolve(orjson.loads(original), ids) or {}
        # `Type/id`: letters, digits, '-', '.' and '/' (http.html#id), nothing to escape
        text = text.replace(quoted, b'"' + target.encode() + b'"')
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


def resolve(node: Any, ids: dict[str, str | None]) -> Any:
    """Stand-ins (`ids`' keys) -> `Type/id`. An object referring to an op that writes nothing
    (an A40's unknown old record) is left out, with the list item holding it."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in ids:
            target = ids[ref]
            return {**node, "reference": target} if target else None
        out = {}
        for key, value in node.items():
            done = resolve(value, ids)
            if done is None and value is not None:
                return None
            if done == [] and value != []:
                continue
            out[key] = done
        return out
    if isinstance(node, list):
        return [x for x in (resolve(v, ids) for v in node) if x is not None]
    return node


def provenance(services: Services, template: dict[str, Any], targets: list[str],
               ids: dict[str, str | None], validate: bool
               ) -> tuple[str, str, Validated]:  # fmt: skip
    """The create of a Provenance naming `targets`, recorded when the template says (the
    planner's time) or now; not `validate`d when the planner validated its template with the
    same references but for their ids (worker.plan_of)."""
    body = (resolve(template, ids) or {}) if ids else dict(template)  # no ids: nothing to do
    body["target"] = [{"reference": t} for t in targets]
    body.setdefault("recorded", now())
    resource = services.validator(body) if validate else Validated(body)
    return "Provenance", write.new_id(), resource


def _provenance(services: Services, template: dict[str, Any], targets: list[str],
                ids: dict[str, str | None], planned: Early | None
                ) -> tuple[str, str, Validated, Early | None]:  # fmt: skip
    """provenance(), with its rows when the planner's stand (`planned`: then it validated
    the template too)."""
    rtype, rid, resource = provenance(services, template, targets, ids, planned is None)
    early = planned.completed(rtype, resource, services.registry) if planned else None
    return rtype, rid, resource, early


def mapping_error(exc: FhirError) -> MappingError:
    """A refusal of the write path (validation, a feature's rule) as the mapping's error."""
    issue = exc.issues[0] if exc.issues else None
    text = issue.diagnostics if issue else str(exc)
    where = f" ({issue.expression})" if issue and issue.expression else ""
    return MappingError(Err(207 if exc.status >= 500 else 102, f"{text}{where}"))
