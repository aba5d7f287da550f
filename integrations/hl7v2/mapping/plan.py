"""What mapping a message produces: a plan of resources to write in one transaction, each with
how it is matched to what is stored (the v2-to-FHIR IG's implementation considerations leave
identity to the implementer: we match on business identifiers, so a replay writes nothing new).

Resources of the plan refer to each other by stand-ins (`Type/hl7v2-stand-in-<n>`, n the op's
place in the plan), replaced by `Type/id` as the writer learns the ids. A stand-in is a relative
reference of the target's type, so the planner indexes the references too: their rows are those
of the written resource but for the id (search/early.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from ..ack import Err

if TYPE_CHECKING:  # typing only: the planner's rows and criteria travel with the plan
    from fhir_server.interactions.search import Criteria
    from fhir_server.search.early import Early

#: the id of an op's stand-in, before its place in the plan
STAND_IN = "hl7v2-stand-in-"

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
    #: the resource, stand-ins in its references (empty in the mapper's process: `text`)
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
    #: the resource's index rows (those of its references with stand-in ids) and its JSON
    #: text (worker.plan_of, in the planning process: apply.resolve_fast replaces the
    #: stand-ins in it)
    early: Early | None = None
    text: bytes | None = None
    #: its place in the plan (Plan.add)
    n: int = -1

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to the mapper's process) without `resource` once `text` holds it: the
        writer reads the text, and unpickling the objects again was a third of the plans'
        unpickling, on the writer's interpreter lock."""
        state = dict(self.__dict__)
        if self.text is not None:
            state["resource"] = {}
        return state

    @property
    def stand_in(self) -> str:
        """The id that stands for the op's until the writer knows it."""
        assert self.n >= 0, "an op gets its stand-in id when it is added to the plan"
        return f"{STAND_IN}{self.n}"

    @property
    def ref(self) -> str:
        """How the plan's resources refer to this one (`Type/stand-in`)."""
        return f"{self.rtype}/{self.stand_in}"


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    #: the message's Provenance, without its targets (every resource written) and time
    provenance: dict[str, Any] = field(default_factory=dict)
    #: a Provenance of its own for what some ops do together, written when they changed
    #: anything (A40: the merge of two patient records), with the keys of those ops
    activity: dict[str, Any] | None = None
    activity_targets: tuple[str, ...] = ()
    #: every op's resource and the Provenance templates passed the Validator (before the
    #: write lock; worker.plan_of)
    validated: bool = False
    #: the rows of the Provenances (`provenance`, `activity`) as planned with one target: those
    #: no reference decides stand (Early.completed)
    provenance_early: Early | None = None
    activity_early: Early | None = None

    def add(self, op: Op) -> Op:
        for known in self.ops:
            if known.key == op.key:
                return known
        op.n = len(self.ops)
        self.ops.append(op)
        return op

    def get(self, key: str) -> Op | None:
        return next((op for op in self.ops if op.key == key), None)


def reference(op: Op, display: str | None = None) -> dict[str, str]:
    out = {"reference": op.ref}
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
