"""Named operations (http://hl7.org/fhir/R4/operations.html) register themselves here; the
HTTP layer dispatches `$name` at system, type and instance level through one table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..context import RequestContext
from ..errors import error
from ..model.validate import check_depth

if TYPE_CHECKING:  # typing only: Services holds the operations table
    from ..services import Services


@dataclass(frozen=True)
class Call:
    """One invocation: where it was called, and its input as a Parameters resource (GET query
    parameters become valueString parameters). `body` is the request body as sent, for
    operations that also take a bare resource (e.g. $validate)."""

    services: Services
    ctx: RequestContext
    rtype: str | None
    rid: str | None
    method: str
    parameters: dict[str, Any]
    body: Any = None
    if_match: str | None = None

    def __post_init__(self) -> None:
        check_parameters(self.parameters.get("parameter"), "Parameters.parameter")

    def values(self, name: str) -> list[dict[str, Any]]:
        """Every parameter called `name` (each a Parameters.parameter object)."""
        return [p for p in self.parameters.get("parameter") or [] if p.get("name") == name]

    def value(self, name: str) -> Any:
        """The value[x] (or resource) of the first parameter called `name`, else None."""
        for p in self.values(name):
            if "resource" in p:
                return p["resource"]
            for key, v in p.items():
                if key.startswith("value"):
                    return v
            return p.get("part")
        return None


def operation_input(body: Any, query: list[tuple[str, str]]) -> dict[str, Any]:
    """The input of an invocation as one Parameters resource: the body if it is one, plus the
    query parameters as valueString parameters (operations.html#executing). 400 when the body
    nests too deeply or its parameters are not parameter objects."""
    if body is not None:
        check_depth(body)
    parameters = (
        body
        if isinstance(body, dict) and body.get("resourceType") == "Parameters"
        else {"resourceType": "Parameters"}
    )
    check_parameters(parameters.get("parameter"), "Parameters.parameter")
    given = list(parameters.get("parameter") or [])
    return {**parameters, "parameter": given + [{"name": k, "valueString": v} for k, v in query]}


def check_parameters(parameters: Any, where: str) -> None:
    """400 unless `parameters` (Parameters.parameter or a .part) is absent or a list of objects,
    each with a string name and parts of the same shape. Checked once here, so operation
    handlers can rely on the shape."""
    pending = [(parameters, where)]
    while pending:
        items, at = pending.pop()
        if items is None:
            continue
        if not isinstance(items, list):
            raise error(400, "structure", "Must be an array of parameter objects", at)
        for i, p in enumerate(items):
            if not isinstance(p, dict):
                raise error(400, "structure", "A parameter must be a JSON object", f"{at}[{i}]")
            if not isinstance(p.get("name"), str):
                raise error(400, "required", "A parameter needs a string name", f"{at}[{i}].name")
            pending.append((p.get("part"), f"{at}[{i}].part"))


@dataclass(frozen=True)
class Outcome:
    """What an operation answers: a FHIR resource (dict or JSON bytes), or a document in
    another media type (e.g. a printable slip)."""

    resource: dict[str, Any] | bytes | None = None
    status: int = 200
    content: bytes | None = None
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Outcome]


@dataclass(frozen=True)
class Operation:
    name: str
    level: str  # "system" | "type" | "instance"
    types: tuple[str, ...] | None
    methods: tuple[str, ...]
    handler: Handler
    definition: str

    def __post_init__(self) -> None:
        """Refuse, at start-up, an operation the CapabilityStatement could not list: R4's
        rest.resource.operation.definition is 1..1, the canonical URL of an
        OperationDefinition."""
        url = urlsplit(self.definition if isinstance(self.definition, str) else "")
        if not (url.scheme in ("http", "https") and url.netloc):
            raise ValueError(
                f"{self.name} ({self.level} level) needs definition=<the canonical URL of its "
                f"OperationDefinition>, got {self.definition!r}"
            )


class Operations:
    """A set of operations. The core's and each feature's are built at import time with the
    `operation` decorator; the app merges them into the one table of a Services."""

    def __init__(self) -> None:
        self._ops: list[Operation] = []

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._ops)

    def operation(
        self,
        name: str,
        level: str,
        types: tuple[str, ...] | None = None,
        methods: tuple[str, ...] = ("POST",),
        *,
        definition: str,
    ) -> Callable[[Handler], Handler]:
        """Decorator: register a handler for `$name` at `level` on `types` (None: every type),
        described by the OperationDefinition at the canonical URL `definition`."""

        def register(handler: Handler) -> Handler:
            self._ops.append(Operation(name, level, types, methods, handler, definition))
            return handler

        return register

    def extend(self, other: Iterable[Operation]) -> None:
        self._ops.extend(other)

    def replace(self, old: Operation, new: Operation) -> None:
        """Put `new` where `old` was: a feature taking over an operation name another one
        registered on the same type dispatches to it (e.g. Task/$accept of a referral and
        of a consultation)."""
        self._ops[self._ops.index(old)] = new

    def find(self, name: str, level: str, rtype: str | None, method: str) -> Operation:
        """The registered operation, or 404 (unknown) / 405 (method not allowed, with Allow)."""
        for op in self._ops:
            if op.name == name and op.level == level and (op.types is None or rtype in op.types):
                if method not in op.methods:
                    refused = error(405, "not-supported", f"{name} does not accept {method}")
                    refused.headers["Allow"] = ", ".join(op.methods)
                    raise refused
                return op
        where = f" on {rtype}" if rtype else ""
        raise error(
            404, "not-supported", f"Operation {name} is not supported at {level} level{where}"
        )
