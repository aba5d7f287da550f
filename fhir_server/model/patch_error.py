"""The error both PATCH formats raise (http.html#patch): JSON Patch (RFC 6902) and FHIRPath
Patch (fhirpatch.html), turned into a 4xx OperationOutcome by the patch interaction."""

from __future__ import annotations

__all__ = ["PatchError"]


class PatchError(ValueError):
    """An invalid patch document, a failed ``test`` or a path that cannot be applied.

    ``expression`` is the JSON Pointer or FHIRPath the problem relates to, so the HTTP layer can
    put it into ``OperationOutcome.issue.expression``.
    """

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
