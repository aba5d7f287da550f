"""JSON Patch (RFC 6902, with JSON Pointer, RFC 6901) over FHIR JSON resources (http.html#patch).
Pure: the input is deep-copied and left untouched when a patch fails (patches are atomic);
validating the patched resource is the caller's job."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

from fhir_server.model.patch_error import PatchError

__all__ = ["apply_json_patch"]

JSON = Any

_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def apply_json_patch(resource: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch document to a resource and return the patched copy.

    Operations run in order and the patch is atomic (RFC 6902 section 5): any failure, including
    a failed ``test`` (section 4.6), raises :class:`PatchError`. Unknown members of an operation
    object are ignored (section 4).
    """
    if not isinstance(operations, list):
        raise PatchError("JSON Patch document must be an array of operations")
    doc: JSON = copy.deepcopy(resource)
    for number, op in enumerate(operations):
        doc = _json_patch_op(doc, op, number)
    if not isinstance(doc, dict):
        raise PatchError("patched document is not a JSON object", "")
    return doc


def _json_patch_op(doc: JSON, op: Any, number: int) -> JSON:
    """Apply one operation object (RFC 6902 section 4) and return the new document root."""
    if not isinstance(op, dict):
        raise PatchError(f"operation {number} is not a JSON object")
    kind = op.get("op")
    path = _member(op, "path", number)
    tokens = _parse_pointer(path)
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"operation {number} ({kind}) has no 'value'", path)
    if kind == "add":
        return _pointer_add(doc, tokens, copy.deepcopy(op["value"]), path)
    if kind == "remove":
        _pointer_remove(doc, tokens, path)
        return doc
    if kind == "replace":
        _pointer_get(doc, tokens, path)  # the target must exist (section 4.3)
        if not tokens:
            return copy.deepcopy(op["value"])
        _pointer_remove(doc, tokens, path)
        return _pointer_add(doc, tokens, copy.deepcopy(op["value"]), path)
    if kind in ("move", "copy"):
        source = _member(op, "from", number)
        from_tokens = _parse_pointer(source)
        value = _pointer_get(doc, from_tokens, source)
        if kind == "copy":
            return _pointer_add(doc, tokens, copy.deepcopy(value), path)
        if from_tokens == tokens:
            return doc
        if tokens[: len(from_tokens)] == from_tokens:  # section 4.4: no move into own child
            raise PatchError(f"cannot move {source} into one of its children", path)
        _pointer_remove(doc, from_tokens, source)
        return _pointer_add(doc, tokens, value, path)
    if kind == "test":
        if not _json_equal(_pointer_get(doc, tokens, path), op["value"]):
            raise PatchError(f"test failed: value at {path!r} is not equal", path)
        return doc
    raise PatchError(f"operation {number} has an unknown 'op': {kind!r}")


def _member(op: dict[str, Any], name: str, number: int) -> str:
    value = op.get(name)
    if not isinstance(value, str):
        raise PatchError(f"operation {number} needs a string '{name}'")
    return value


def _parse_pointer(pointer: str) -> list[str]:
    """Split a JSON Pointer into reference tokens (RFC 6901 sections 3-4: ``~1`` before ``~0``)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON Pointer {pointer!r}: must start with '/'", pointer)
    if re.search(r"~(?![01])", pointer):
        raise PatchError(f"invalid JSON Pointer {pointer!r}: bad '~' escape", pointer)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _array_index(token: str, length: int, *, for_add: bool, pointer: str) -> int:
    """Index into an array (RFC 6901 section 4; ``-`` is past the end, RFC 6902 section 4.1)."""
    if for_add and token == "-":
        return length
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError(f"invalid array index {token!r}", pointer)
    index = int(token)
    if index > length or (index == length and not for_add):
        raise PatchError(f"array index {index} out of bounds", pointer)
    return index


def _pointer_get(doc: JSON, tokens: list[str], pointer: str) -> JSON:
    """Resolve tokens (RFC 6901 section 4); a missing member names the first absent prefix,
    since RFC 6902 section 4.1 does not create missing parents recursively."""
    node = doc
    for depth, token in enumerate(tokens):
        if isinstance(node, list):
            node = node[_array_index(token, len(node), for_add=False, pointer=pointer)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            missing = "".join(
                "/" + t.replace("~", "~0").replace("/", "~1") for t in tokens[: depth + 1]
            )
            raise PatchError(f"path {missing!r} does not exist", pointer)
    return node


def _pointer_add(doc: JSON, tokens: list[str], value: JSON, pointer: str) -> JSON:
    """RFC 6902 section 4.1: the parent must exist; objects set a member, arrays insert."""
    if not tokens:
        return value
    parent = _pointer_get(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), for_add=True, pointer=pointer), value)
    else:
        raise PatchError(f"cannot add at {pointer!r}: parent is not a container", pointer)
    return doc


def _pointer_remove(doc: JSON, tokens: list[str], pointer: str) -> None:
    if not tokens:
        raise PatchError("cannot remove the whole document", pointer)
    parent = _pointer_get(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} does not exist", pointer)
        del parent[last]
    elif isinstance(parent, list):
        del parent[_array_index(last, len(parent), for_add=False, pointer=pointer)]
    else:
        raise PatchError(f"path {pointer!r} does not exist", pointer)


def _json_equal(a: JSON, b: JSON) -> bool:
    """JSON equality for ``test`` (RFC 6902 section 4.6): types must match, so "10" != 10 and,
    unlike Python's ``==``, true != 1; numbers compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float | Decimal) and isinstance(b, int | float | Decimal):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
