"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html) over FHIR JSON resources, the second
PATCH format of http.html#patch. Pure: the input is deep-copied and left untouched when a patch
fails (patches are atomic); validating the patched resource is the caller's job."""

from __future__ import annotations

import copy
import importlib
import re
import typing
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as _fhirpath_models

from fhir_server.model.patch_error import PatchError

__all__ = ["apply_fhirpath_patch"]

JSON = Any
Key = str | int
Path = tuple[Key, ...]

_OPERATION_PARTS = {"type", "path", "name", "value", "index", "source", "destination"}
# fhirpath.js-style model: needed so that choice elements (Observation.value) resolve.
_FHIRPATH_MODEL = _fhirpath_models["r4"]
_EXTENSION_FN = re.compile(r"(^|\.)extension\(\s*('(?:[^'\\]|\\.)*')\s*\)")
_TRAILING_NAME = re.compile(r"^(?:(.*)\.)?(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)\s*$", re.DOTALL)
_LITERALS = re.compile(r"('(?:[^'\\]|\\.)*'|`[^`]*`)")
# element names that are FHIRPath keywords, e.g. Narrative.div (fhirpath.html#keywords)
_KEYWORD_MEMBER = re.compile(
    r"\.\s*(div|mod|and|or|xor|implies|as|is|in|contains|true|false)\b(?!\s*\()"
)
_PROP_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch ``Parameters`` resource and return the patched copy.

    Each ``operation`` parameter (fhirpatch.html "Parameters"/"Operations") is applied in order:
    ``add`` (path = the container, plus ``name`` and ``value``), ``insert`` (path = the list,
    ``index``, ``value``), ``delete`` (a path matching nothing is a no-op), ``replace`` (path
    must match exactly one element) and ``move`` (path = the list, ``source``, ``destination``).
    Paths are evaluated with fhirpathpy; the R4B models supply cardinality (does ``add`` create
    an array?) and the structure of anonymous (backbone) values given as nested parts.
    """
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise PatchError("FHIRPath Patch body must be a Parameters resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise PatchError("resource to patch has no resourceType")
    doc = copy.deepcopy(resource)
    params = parameters.get("parameter", [])
    if not isinstance(params, list):
        raise PatchError("Parameters.parameter must be an array", "Parameters.parameter")
    for number, param in enumerate(params):
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise PatchError(
                f"parameter {number} is not named 'operation'", f"Parameters.parameter[{number}]"
            )
        _FhirPathOperation(param, number).apply(doc)
    return doc


class _FhirPathOperation:
    """One parsed ``operation`` parameter (fhirpatch.html table of operation parts)."""

    def __init__(self, param: dict[str, Any], number: int) -> None:
        self.path = ""
        #: where the operation's parts are in the Parameters, for errors in their shape
        self.where = f"Parameters.parameter[{number}].part"
        self.parts: dict[str, dict[str, Any]] = {}
        self.index: dict[str, int] = {}
        parts = param.get("part", [])
        if not isinstance(parts, list):
            raise PatchError(f"operation {number}: part must be an array", self.where)
        for i, part in enumerate(parts):
            if not isinstance(part, dict):
                raise PatchError(f"operation {number}: a part must be an object", self._at(i))
            name = part.get("name")
            if name not in _OPERATION_PARTS:
                raise PatchError(f"operation {number}: unknown part {name!r}", self._at(i))
            if name in self.parts:
                raise PatchError(f"operation {number}: part {name!r} repeats", self._at(i))
            self.parts[name] = part
            self.index[name] = i
        self.type = self._string("type", required=True)
        self.path = self._string("path", required=True)

    def _at(self, index: int) -> str:
        return f"{self.where}[{index}]"

    def _string(self, name: str, *, required: bool = False) -> str:
        part = self.parts.get(name)
        values = [v for k, v in (part or {}).items() if k.startswith("value")]
        if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
            if required or part is not None:
                where = self.where if part is None else self._at(self.index[name])
                raise PatchError(f"operation part {name!r} is missing or not a string", where)
            return ""
        return values[0]

    def _integer(self, name: str) -> int:
        value = self.parts.get(name, {}).get("valueInteger")
        if not isinstance(value, int) or isinstance(value, bool):
            raise PatchError(f"{self.type} needs an integer {name!r} part", self.path)
        return value

    def apply(self, doc: dict[str, Any]) -> None:
        handler = {
            "add": self._add,
            "insert": self._insert,
            "delete": self._delete,
            "replace": self._replace,
            "move": self._move,
        }.get(self.type)
        if handler is None:
            raise PatchError(f"unknown FHIRPath Patch operation type {self.type!r}", self.path)
        handler(doc)

    # -- operations --------------------------------------------------------------------------

    def _add(self, doc: dict[str, Any]) -> None:
        """add: path selects exactly one container; the ``name`` child gets the value (appended
        when the element repeats; a non-repeating element must not already be present)."""
        name = self._string("name", required=True)
        container_path = self._single(doc, self.path, "adding")
        container = _get(doc, container_path)
        if not isinstance(container, dict):
            raise PatchError(f"cannot add {name!r} to a primitive at {self.path}", self.path)
        info = _child_info(doc, container_path, name, self._value_type())
        value, ext = self._value(info.klass)
        if info.is_list:
            _list_insert(container, info.key, len(container.get(info.key, [])), value, ext)
        elif info.key in container or "_" + info.key in container:
            raise PatchError(f"{name!r} already exists at {self.path}; use replace", self.path)
        else:
            _set(container, info.key, None, value, ext)

    def _insert(self, doc: dict[str, Any]) -> None:
        """insert: path names a list; the value goes in at ``index`` (0..len)."""
        container, info = self._list_target(doc)
        index = self._integer("index")
        length = len(container.get(info.key, []))
        if not 0 <= index <= length:
            raise PatchError(f"insert index {index} out of range 0..{length}", self.path)
        value, ext = self._value(info.klass)
        _list_insert(container, info.key, index, value, ext)

    def _delete(self, doc: dict[str, Any]) -> None:
        """delete: nothing matched is fine (no-op); more than one match is an error."""
        locations = _locate(doc, self.path)
        if not locations:
            return
        if len(locations) > 1:
            raise PatchError(
                f"delete path {self.path} matches {len(locations)} elements", self.path
            )
        if not locations[0]:
            raise PatchError("cannot delete the resource itself", self.path)
        _remove(doc, locations[0])

    def _replace(self, doc: dict[str, Any]) -> None:
        """replace: path must match exactly one element, which is replaced as a whole (a
        primitive's extensions included); a choice element may change its type."""
        location = self._single(doc, self.path, "replacing")
        if not location:
            raise PatchError("cannot replace the resource itself", self.path)
        *parent_path, last = location
        key_path = tuple(parent_path) if isinstance(last, str) else tuple(parent_path[:-1])
        key = last if isinstance(last, str) else parent_path[-1]
        index = None if isinstance(last, str) else last
        assert isinstance(key, str)
        container = _get(doc, key_path)
        info = _child_info(doc, key_path, _choice_base(doc, key_path, key), self._value_type())
        value, ext = self._value(info.klass)
        if info.key != key:  # choice type change, e.g. deceasedBoolean -> deceasedDateTime
            container.pop(key, None)
            container.pop("_" + key, None)
        _set(container, info.key, index, value, ext)

    def _move(self, doc: dict[str, Any]) -> None:
        """move: within the list named by path, take the item at ``source`` and re-insert it at
        ``destination`` (indices after removal, as in the HL7 test cases)."""
        container, info = self._list_target(doc)
        source, destination = self._integer("source"), self._integer("destination")
        length = len(container.get(info.key, []))
        for label, index in (("source", source), ("destination", destination)):
            if not 0 <= index < length:
                raise PatchError(f"move {label} {index} out of range 0..{length - 1}", self.path)
        values = container[info.key]
        exts = container.get("_" + info.key)
        values.insert(destination, values.pop(source))
        if isinstance(exts, list) and len(exts) == length:
            exts.insert(destination, exts.pop(source))

    # -- helpers -----------------------------------------------------------------------------

    def _single(self, doc: dict[str, Any], expression: str, doing: str) -> Path:
        locations = _locate(doc, expression)
        if not locations:
            raise PatchError(f"No content found at {expression} when {doing}", expression)
        if len(locations) > 1:
            raise PatchError(
                f"Multiple elements ({len(locations)}) found at {expression} when {doing}",
                expression,
            )
        return locations[0]

    def _list_target(self, doc: dict[str, Any]) -> tuple[dict[str, Any], _ChildInfo]:
        """For insert/move: split ``path`` into container expression and final element name."""
        match = _TRAILING_NAME.match(self.path)
        if not match:
            raise PatchError(f"{self.type} path must end with an element name", self.path)
        parent_expr, name = match.group(1), match.group(2).strip("`")
        parent_path = self._single(doc, parent_expr, self.type) if parent_expr else ()
        container = _get(doc, parent_path)
        if not isinstance(container, dict):
            raise PatchError(f"{self.type} target is not an element container", self.path)
        if parent_expr is None and name == doc["resourceType"]:
            raise PatchError(f"{self.type} path must name a list element", self.path)
        info = _child_info(doc, parent_path, _choice_base(doc, parent_path, name), None)
        if not info.is_list:
            raise PatchError(f"{self.type} needs a repeating element; {name!r} is not", self.path)
        if not isinstance(container.get(info.key, []), list):
            raise PatchError(f"{info.key!r} is not an array", self.path)
        return container, info

    def _value_type(self) -> str | None:
        """The FHIR type suffix of a ``value[x]`` part (for choice element names), if any."""
        part = self.parts.get("value", {})
        for key in part:
            if key.startswith("value") and len(key) > 5:
                return key[5:]
        return None

    def _value(self, klass: type | None) -> tuple[JSON, JSON]:
        part = self.parts.get("value")
        if part is None:
            raise PatchError(f"{self.type} needs a 'value' part", self.where)
        return _part_value(part, klass, self._at(self.index["value"]))


class _ChildInfo(typing.NamedTuple):
    key: str  # JSON property name (choice elements carry their type suffix)
    is_list: bool
    klass: type | None  # model class of a complex child, None for primitives


def _part_value(part: dict[str, Any], klass: type | None, path: str) -> tuple[JSON, JSON]:
    """Value of a Parameters part: ``value[x]`` (with ``_value[x]`` extensions), ``resource``,
    or -- for anonymous/backbone types -- nested parts, one per child element (fhirpatch.html
    "value" row). ``path`` is the part's location in the Parameters, for errors."""
    values = [(k, v) for k, v in part.items() if k.startswith("value")]
    if len(values) > 1:
        raise PatchError(f"part {part.get('name')!r} has several value[x]", path)
    if values:
        key, value = values[0]
        return copy.deepcopy(value), copy.deepcopy(part.get("_" + key))
    if "resource" in part:
        return copy.deepcopy(part["resource"]), None
    if "part" not in part:
        raise PatchError(f"part {part.get('name')!r} has no value", path)
    if not isinstance(part["part"], list):
        raise PatchError("a value's parts must be an array of parts", f"{path}.part")
    result: dict[str, Any] = {}
    fields = _fields(klass) if klass is not None else {}
    for i, sub in enumerate(part["part"]):
        at = f"{path}.part[{i}]"
        if not isinstance(sub, dict):
            raise PatchError("a nested value part must be an object", at)
        name = sub.get("name")
        if not isinstance(name, str):
            raise PatchError("nested value part without a name", f"{at}.name")
        suffix = next((k[5:] for k in sub if k.startswith("value") and len(k) > 5), None)
        if klass is not None:
            info = _field_child(klass, fields, name, suffix, f"{at}.name")
        else:
            info = _ChildInfo(name, name in result and isinstance(result[name], list), None)
        value, ext = _part_value(sub, info.klass, at)
        if info.is_list:
            _list_insert(result, info.key, len(result.get(info.key, [])), value, ext)
        elif info.key in result:
            raise PatchError(f"element {name!r} repeats but is not a list", at)
        else:
            _set(result, info.key, None, value, ext)
    return result, None


# -- locating elements -------------------------------------------------------------------------


def _locate(doc: dict[str, Any], expression: str) -> list[Path]:
    """Evaluate a FHIRPath and return the JSON location (keys and indices from the root) of
    each selected element, de-duplicated in document order of selection.

    fhirpathpy's raw ResourceNodes carry the full property path (``Patient.name[0].given[1]``);
    where that is missing (e.g. results of unions), complex results are found by identity.
    """
    try:
        nodes = fhirpathpy.evaluate(
            doc,
            _rewrite(expression),
            {"resource": doc, "rootResource": doc},
            _FHIRPATH_MODEL,
            {"returnRawData": True},
        )
    except Exception as exc:  # fhirpathpy raises bare Exceptions for syntax/arity errors
        raise PatchError(f"invalid FHIRPath expression: {exc}", expression) from exc
    identities: dict[int, Path] | None = None
    found: list[Path] = []
    for node in nodes:
        data = getattr(node, "data", node)
        location = _from_prop_name(doc, getattr(node, "propName", None), data)
        if location is None and data is doc:
            location = ()
        if location is None and isinstance(data, dict):
            if identities is None:
                identities = {id(v): p for p, v in _walk(doc, ())}
            location = identities.get(id(data))
        if location is None:
            raise PatchError(
                f"{expression} selects something that is not in the resource", expression
            )
        if location not in found:
            found.append(location)
    return found


def _rewrite(expression: str) -> str:
    """Adapt a patch path for fhirpathpy: quote keyword member names (``text.div`` is written
    unquoted in the HL7 tests and by most clients) and turn ``extension('url')`` into the
    equivalent ``extension.where(url = 'url')``, whose results keep their location."""
    pieces = _LITERALS.split(expression)  # odd indices are string literals / quoted names
    for i in range(0, len(pieces), 2):
        pieces[i] = _KEYWORD_MEMBER.sub(r".`\1`", pieces[i])
    return _EXTENSION_FN.sub(r"\1extension.where(url = \2)", "".join(pieces))


def _from_prop_name(doc: dict[str, Any], prop_name: Any, data: Any) -> Path | None:
    """Turn ``Patient.contact[0].name`` into ``("contact", 0, "name")``, resolving choice
    names (``Patient.deceased`` -> ``deceasedBoolean``); None if it does not check out."""
    if not isinstance(prop_name, str):
        return None
    root, _, rest = prop_name.partition(".")
    if root != doc["resourceType"] or not rest:
        return None
    path: list[Key] = []
    node: Any = doc
    for step in rest.split("."):
        match = _PROP_STEP.fullmatch(step)
        if not match or not isinstance(node, dict):
            return None
        key = _existing_key(node, match.group(1))
        if key is None:
            return None
        path.append(key)
        node = node.get(key)
        if match.group(2) is not None:
            index = int(match.group(2))
            if not isinstance(node, list) or index >= len(node):
                return None
            path.append(index)
            node = node[index]
    if isinstance(data, dict) and node is not data:
        return None
    return tuple(path)


def _existing_key(node: dict[str, Any], name: str) -> str | None:
    """The JSON key for element ``name``: itself, a choice variant (``valueQuantity``), or a
    primitive present only through its ``_name`` extension."""
    if name in node or "_" + name in node:
        return name
    for key in node:
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return key
    return None


def _choice_base(doc: dict[str, Any], parent: Path, key: str) -> str:
    """``deceasedBoolean`` -> ``deceased`` when the model says it is a choice element."""
    klass = _class_at(doc, parent)
    if klass is not None:
        field = _fields(klass).get(key)
        extra = field.json_schema_extra if field is not None else None
        if isinstance(extra, dict) and isinstance(extra.get("one_of_many"), str):
            return str(extra["one_of_many"])
    return key


def _walk(node: JSON, path: Path) -> Iterator[tuple[Path, JSON]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def _get(doc: JSON, path: Path) -> JSON:
    node = doc
    for key in path:
        node = node[key] if not isinstance(node, dict) or key in node else None
    return node


# -- mutation (keeping primitive ``_name`` extension arrays aligned, json.html#primitive) ------


def _set(container: dict[str, Any], key: str, index: int | None, value: JSON, ext: JSON) -> None:
    if index is None:
        container[key] = value
        if ext is None:
            container.pop("_" + key, None)
        else:
            container["_" + key] = ext
        return
    container[key][index] = value
    exts = container.get("_" + key)
    if isinstance(exts, list) and index < len(exts):
        exts[index] = ext
        if all(e is None for e in exts):
            del container["_" + key]
    elif ext is not None:
        container["_" + key] = [None] * len(container[key])
        container["_" + key][index] = ext


def _list_insert(container: dict[str, Any], key: str, index: int, value: JSON, ext: JSON) -> None:
    values = container.setdefault(key, [])
    if not isinstance(values, list):
        raise PatchError(f"{key!r} is not an array")
    exts = container.get("_" + key)
    if isinstance(exts, list) and len(exts) == len(values):
        exts.insert(index, ext)
    elif ext is not None:
        container["_" + key] = [None] * len(values)
        container["_" + key].insert(index, ext)
    values.insert(index, value)


def _remove(doc: dict[str, Any], location: Path) -> None:
    """Remove the element and then any ancestor left empty: FHIR JSON has no empty objects or
    arrays (json.html), so deleting ``contact[0].name.text`` also drops an empty ``name``."""
    *parent_path, last = location
    parent = _get(doc, tuple(parent_path))
    if isinstance(last, int):
        key = parent_path[-1]
        assert isinstance(key, str)
        grandparent = _get(doc, tuple(parent_path[:-1]))
        del parent[last]
        exts = grandparent.get("_" + key)
        if isinstance(exts, list) and last < len(exts):
            del exts[last]
            if all(e is None for e in exts):
                del grandparent["_" + key]
    else:
        parent.pop(last, None)
        parent.pop("_" + last, None)
    container_location = location[:-1]
    if container_location and not _get(doc, container_location):
        _remove(doc, container_location)  # recurses up to the first non-empty ancestor


# -- FHIR model information (fhir.resources R4B) --------------------------------------------


@cache
def _fields(klass: type) -> dict[str, Any]:
    """Pydantic fields of a model keyed by FHIR JSON name (``class``, not ``class_fhir``)."""
    model_fields = typing.cast(dict[str, Any], getattr(klass, "model_fields", {}))
    return {(f.alias or k): f for k, f in model_fields.items()}


def _describe(annotation: Any) -> tuple[bool, str, type | None]:
    """(repeats, kind, model class) of a field: kind is complex, resource or primitive."""
    is_list = False
    pending = [annotation]
    while pending:
        ann = pending.pop(0)
        origin = typing.get_origin(ann)
        if origin is list:
            is_list = True
        if origin is typing.Annotated or ann in (bool, int, str, Decimal):
            return is_list, "primitive", None
        model_path = getattr(ann, "_model_klass", None)
        if isinstance(model_path, str):
            module, _, name = model_path.rpartition(".")
            klass = getattr(importlib.import_module(module), name)
            if name in ("Resource", "DomainResource"):
                return is_list, "resource", None
            return is_list, "complex", klass
        pending.extend(typing.get_args(ann))
    return is_list, "primitive", None


def _model_class(resource_type: Any) -> type | None:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return typing.cast(type, get_fhir_model_class(str(resource_type)))
    except (ValueError, KeyError, ImportError):
        return None


def _class_at(doc: dict[str, Any], path: Path) -> type | None:
    """Model class of the complex element at ``path`` (None if unknown or primitive)."""
    klass = _model_class(doc["resourceType"])
    node: Any = doc
    for key in path:
        node = node[key]
        if isinstance(key, str):
            if klass is None:
                return None
            field = _fields(klass).get(key)
            if field is None:
                return None
            klass = _describe(field.annotation)[2]
        if isinstance(node, dict) and "resourceType" in node:
            klass = _model_class(node["resourceType"])
    return klass


def _child_info(
    doc: dict[str, Any], parent: Path, name: str, type_suffix: str | None
) -> _ChildInfo:
    """Key, cardinality and class of child element ``name`` of the element at ``parent``."""
    klass = _class_at(doc, parent)
    if klass is None:
        # Unknown model (should not happen for R4B resources): trust the data.
        container = _get(doc, parent)
        existing = container.get(name) if isinstance(container, dict) else None
        return _ChildInfo(name, isinstance(existing, list), None)
    return _field_child(klass, _fields(klass), name, type_suffix, name)


def _field_child(
    klass: type, fields: dict[str, Any], name: str, type_suffix: str | None, path: str
) -> _ChildInfo:
    field = fields.get(name)
    key = name
    if field is None and type_suffix:  # choice element: deceased + Boolean
        key = name + type_suffix[0].upper() + type_suffix[1:]
        field = fields.get(key)
        extra = field.json_schema_extra if field is not None else None
        if not isinstance(extra, dict) or extra.get("one_of_many") != name:
            field = None
    if field is None or name.startswith("_") or name == "resourceType":
        raise PatchError(f"{getattr(klass, '__name__', klass)} has no element {name!r}", path)
    is_list, kind, child_class = _describe(field.annotation)
    return _ChildInfo(key, is_list, child_class if kind == "complex" else None)
