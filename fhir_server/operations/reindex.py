"""$reindex: the index rows of stored resources made again with the search parameters in use
(after a SearchParameter was written over REST; as HAPI's $reindex). POST /Type/$reindex for
one type, POST /$reindex for every type. Not in the SMART operation table: with authorization
on, an operator runs `fhir-server reindex` instead."""

from __future__ import annotations

from ..errors import information
from ..interactions.reindex import reindex
from ..spec import RESOURCE_TYPES
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
DEFINITION = "https://yilian.health/fhir/OperationDefinition/reindex"


@OPERATIONS.operation("$reindex", "type", definition=DEFINITION)
@OPERATIONS.operation("$reindex", "system", definition=DEFINITION)
def reindex_operation(call: Call) -> Outcome:
    types = [call.rtype] if call.rtype else sorted(RESOURCE_TYPES)
    counts = {t: reindex(call.services, t) for t in types}
    done = ", ".join(f"{n} {t}" for t, n in counts.items() if n) or "no resources"
    return Outcome(information(f"Reindexed {done}"))
