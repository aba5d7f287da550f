"""The core's operations: $validate, the terminology operations, the patient-centred ones
($match, ...) and $reindex; features add theirs."""

from . import everything, export, link, match, reindex, terminology, validate
from .registry import Operations


def core() -> Operations:
    """A fresh table holding the core's operations."""
    table = Operations()
    table.extend(validate.OPERATIONS)
    table.extend(terminology.OPERATIONS)
    table.extend(match.OPERATIONS)
    table.extend(link.OPERATIONS)
    table.extend(everything.OPERATIONS)
    table.extend(export.OPERATIONS)
    table.extend(reindex.OPERATIONS)
    return table
