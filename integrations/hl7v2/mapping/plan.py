"""What mapping a message produces: a plan of resources to write in one transaction, each with
how it is matched to what is stored (the v2-to-FHIR IG's implementation considerations leave
identity to the implementer: we match on business identifiers, so a replay writes nothing new).

Resources of the plan refer to each other by placeholders (`urn:hl7v2:<key>`), replaced by
`Type/id` as the writer learns the ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from ..ack import Err

if TYPE_CHECKING:  # typing only: the planner's rows and criteria travel with the plan
    from fhir_server.interactions.search import Criteria
    from fhir_server.search.early import Early

PLACEHOLDER = "urn:hl7v2:"

#: how an op meets a stored resource found by its `match` (nothing found: it is created, except
#: in mode `existing`):
#: upsert: the message is the newer truth: its elements replace the stored ones, others kept;
#: keep: the stored resource stands (a lab result does not rewrite the patient's registration);
#: existing: like upsert, but only a stored resource is changed (the record an A40 retires)
Mode = Literal["upsert", "keep", "existing"]


class MappingError(Exception):
    """The message cannot be mapped; `err` says where (for the ERR segment of an AE)."""

    def __init__(self, err: Err) -> None:
        super().__init__(str(err))
        self.err = err


@dataclass
class Op:
    """One resource of the plan."""

    key: str
    rtype: str
    resource: dict[str, Any]
    #: search query finding the stored resource (business identifier), None: never matched
    match: str | None = None
    #: `match` parsed (worker.plan_of, before the write lock)
    criteria: Criteria | None = None
    mode: Mode = "upsert"
    #: a fixed id (MessageHeader: one per message, so a replay replaces it)
    rid: str | None = None
    #: a target of the message's Provenance (everything but the MessageHeader itself)
    provenance: bool = True
    #: upsert: top-level lists the stored and the new values are united in (identifier, link)
    merge: tuple[str, ...] = ("identifier",)
    #: upsert: top-level objects merged key by key (a discharge brings period.end only)
    combine: tuple[str, ...] = ()
    #: upsert: top-level elements whose stored value stands (A08 says nothing of status)
    keep: tuple[str, ...] = ()
    #: a stored Patient found that was merged away (link replaced-by) stands for the one that
    #: replaced it: messages still naming an old record reach the surviving one
    follow: bool = False
    #: the resource's index rows that its references do not decide, and its JSON text
    #: (worker.plan_of, in the planning process: apply.resolve_fast replaces placeholders
    #: in it)
    early: Early | None = None
    text: bytes | None = None

    @property
    def ref(self) -> str:
        return PLACEHOLDER + self.key


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    #: the message's Provenance, without its targets (every resource written) and time
    provenance: dict[str, Any] = field(default_factory=dict)
    #: a Provenance of its own for what some ops do together, written when they changed
    #: anything (A40: the merge of two patient records), with the keys of those ops
    activity: dict[str, Any] | None = None
    activity_targets: tuple[str, ...] = ()
    #: every op's resource passed the Validator (before the write lock; worker.plan_of)
    validated: bool = False

    def add(self, op: Op) -> Op:
        for known in self.ops:
            if known.key == op.key:
                return known
        self.ops.append(op)
        return op

    def get(self, key: str) -> Op | None:
        return next((op for op in self.ops if op.key == key), None)


def reference(key: str, display: str | None = None) -> dict[str, str]:
    out = {"reference": PLACEHOLDER + key}
    if display:
        out["display"] = display
    return out


def search_value(value: str) -> str:
    """A value inside a search parameter (search.html#escaping) and a URL query."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,")
    return quote(escaped.replace("$", "\\$"), safe="")


@lru_cache(maxsize=4096)
def token(name: str, system: str, value: str) -> str:
    """`name=system|value`, escaped (remembered: the same doctors, wards and insurers come in
    message after message)."""
    return f"{name}={search_value(system)}|{search_value(value)}"
