"""Search parameters written over REST: checked before they are stored, and `reindex`, which
makes the index rows of stored resources again with the parameters in use (as HAPI's
$reindex: a new parameter applies to what is written after it, and to the rest once
reindexed)."""

from __future__ import annotations

from ..errors import error
from ..model import literal
from ..model.validate import Validated
from ..search.fhirpath import compile_expression
from ..search.registry import COMMON_BASES
from ..services import Services
from ..spec import RESOURCE_TYPES
from .hooks import Change, Effect
from .write import prepare

#: resources whose index rows are made again in one write transaction
BATCH = 500
_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri")


def check_search_parameter(change: Change) -> Effect | None:
    """A SearchParameter the indexer could not run is refused (422) before it is stored:
    every write of its base types would fail. Its bases must be resource types, its type one
    of R4's, and its expression must compile for each base (search/fhirpath.py)."""
    sp = change.resource
    if sp is None or sp.get("status") == "retired":
        return None
    kind = sp.get("type")
    bases = [b for b in sp.get("base") or [] if b not in COMMON_BASES]
    unknown = [b for b in bases if b not in RESOURCE_TYPES]
    if unknown:
        raise error(422, "processing", f"Unknown base resource type(s) {unknown}",
                    "SearchParameter.base")  # fmt: skip
    if kind not in _TYPES and kind != "special":
        raise error(422, "processing", f"Search parameter type '{kind}' is not supported",
                    "SearchParameter.type")  # fmt: skip
    expression = sp.get("expression")
    if not isinstance(expression, str):
        return None
    for base in bases:
        try:
            compile_expression(expression, base)
        except Exception as exc:  # fhirpathpy raises its parser's own exceptions
            raise error(
                422, "processing", f"The expression cannot be evaluated on {base}: {exc}",
                "SearchParameter.expression",
            ) from None  # fmt: skip
    return None


def reindex(services: Services, rtype: str) -> int:
    """The index rows of every current `rtype` made again; returns how many resources. Reads
    and indexes a batch outside the write lock, then replaces its rows in one short write
    transaction, skipping resources written meanwhile (their write indexed them already)."""
    done = after = 0
    while True:
        batch = services.store.reader().current_rows(rtype, after, BATCH)
        if not batch:
            return done
        versions = []
        for rid, stored in batch:
            assert stored.json is not None
            resource = Validated(literal.loads(stored.json))
            version = prepare(services, rtype, stored.id, resource, stored.version,
                              stored.last_updated, stored.method)  # fmt: skip
            versions.append((rid, version))
        with services.store.write() as session:
            session.replace_index(versions)
        done += len(batch)
        after = batch[-1][0]
