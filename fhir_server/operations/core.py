"""The core's operations: $validate and the terminology operations (features add theirs)."""

from . import terminology, validate
from .registry import Operations


def core() -> Operations:
    """A fresh table holding the core's operations."""
    table = Operations()
    table.extend(validate.OPERATIONS)
    table.extend(terminology.OPERATIONS)
    return table
