"""Convert HL7's FHIRPath Patch test cases (FHIR XML) into FHIR JSON.

Source: ``fhir-test-cases/r4/patch/fhir-patch-tests.xml`` (HL7, Apache-2.0). Output:
``tests/data/patch/fhir-patch-tests.json``, a list of
``{"name", "mode", "input", "diff", "output" | "error"}`` objects.

Why a hand-written converter rather than ``fhir.resources``' ``model_validate_xml``: the latter
(fhir.resources 8.3 / fhir_core 1.1) silently drops the ``id`` attribute of complex elements
(e.g. ``<maritalStatus id="1">``), which the "Replace Complex" case depends on. This script is
a generic FHIR XML -> JSON mapping (http://hl7.org/fhir/R4/xml.html, /json.html) that only asks
the R4B models which elements repeat, which are primitives, and what JSON type a primitive has.

Stdlib only; run with ``python scripts/convert_fhirpath_patch_tests.py [SRC] [DEST]``.
"""

from __future__ import annotations

import decimal
import importlib
import json
import sys
import typing
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic.fields import FieldInfo

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = Path("/work/shared/fhir-test-cases/r4/patch/fhir-patch-tests.xml")
DEFAULT_DEST = ROOT / "tests" / "data" / "patch" / "fhir-patch-tests.json"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


@cache
def _fields(klass: type) -> dict[str, FieldInfo]:
    """Model fields keyed by their FHIR JSON name (alias), e.g. ``class`` not ``class_fhir``."""
    return {(f.alias or k): f for k, f in klass.model_fields.items()}  # type: ignore[attr-defined]


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return typing.cast(type, getattr(importlib.import_module(module), name))


def _describe(annotation: Any) -> tuple[bool, str, Any]:
    """Return (is_list, kind, detail) for a field annotation.

    kind is "complex" (detail = model class), "resource", "xhtml" or "primitive"
    (detail = the Python base type, used to choose the JSON type of the value).
    """
    is_list = False
    stack = [annotation]
    while stack:
        ann = stack.pop(0)
        origin = typing.get_origin(ann)
        if origin is list:
            is_list = True
        if origin is typing.Annotated:
            base, *meta = typing.get_args(ann)
            if any(type(m).__name__ == "Xhtml" for m in meta):
                return is_list, "xhtml", str
            return is_list, "primitive", base
        model_path = getattr(ann, "_model_klass", None)
        if isinstance(model_path, str):
            klass = _import(model_path)
            if klass.__name__ in ("Resource", "DomainResource"):
                return is_list, "resource", None
            return is_list, "complex", klass
        if ann in (bool, int, str, decimal.Decimal):
            return is_list, "primitive", ann
        stack.extend(typing.get_args(ann))
    raise ValueError(f"cannot describe {annotation!r}")


def _primitive(text: str, base: Any) -> Any:
    """FHIR JSON representation of a primitive ``value`` attribute (json.html#primitive)."""
    if base is bool:
        return text == "true"
    if base is int:
        return int(text)
    if base is decimal.Decimal:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return text


def _xhtml(el: ET.Element) -> str:
    ET.register_namespace("", XHTML_NS)
    out = ET.tostring(el, encoding="unicode", short_empty_elements=True)
    # ElementTree serializes the tail too; the JSON div is just the element.
    return out[: len(out) - len(el.tail or "")] if el.tail and out.endswith(el.tail) else out


def convert_resource(el: ET.Element) -> dict[str, Any]:
    """Convert a FHIR XML resource element to a FHIR JSON dict."""
    name = _local(el.tag)
    out: dict[str, Any] = {"resourceType": name}
    out.update(_convert_children(el, get_fhir_model_class(name)))
    return out


def _convert_complex(el: ET.Element, klass: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in ("id", "url"):  # the only XML attributes on FHIR complex elements
        if attr in el.attrib:
            out[attr] = el.attrib[attr]
    out.update(_convert_children(el, klass))
    return out


def _convert_children(el: ET.Element, klass: type) -> dict[str, Any]:
    fields = _fields(klass)
    out: dict[str, Any] = {}
    # primitives need parallel arrays for value and _value (json.html#primitive)
    prim_values: dict[str, list[Any]] = {}
    prim_exts: dict[str, list[Any]] = {}
    for child in el:
        if not isinstance(child.tag, str) or child.tag is ET.Comment:  # comments
            continue
        if _ns(child.tag) not in (FHIR_NS, XHTML_NS):
            raise ValueError(f"unexpected namespace in {child.tag}")
        name = _local(child.tag)
        if name not in fields:
            raise ValueError(f"{klass.__name__} has no element {name}")
        is_list, kind, detail = _describe(fields[name].annotation)
        if kind == "primitive":
            value = _primitive(child.attrib["value"], detail) if "value" in child.attrib else None
            ext = _convert_complex(child, _import("fhir.resources.R4B.element.Element"))
            out.setdefault(name, None)  # placeholder keeps document order
            prim_values.setdefault(name, []).append(value)
            prim_exts.setdefault(name, []).append(ext or None)
            continue
        if kind == "xhtml":
            item: Any = _xhtml(child)
        elif kind == "resource":
            inner = [c for c in child if isinstance(c.tag, str) and c.tag is not ET.Comment]
            item = convert_resource(inner[0])
        else:
            item = _convert_complex(child, detail)
        if is_list:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    for name, values in prim_values.items():
        is_list = _describe(fields[name].annotation)[0]
        exts = prim_exts[name]
        if any(v is not None for v in values):
            out[name] = values if is_list else values[0]
        else:
            del out[name]
        if any(e is not None for e in exts):
            out["_" + name] = exts if is_list else exts[0]
    return out


def convert_cases(src: Path) -> list[dict[str, Any]]:
    """Convert every ``<case>`` of the test file, keeping its name, mode and expected error."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=False))
    root = ET.parse(src, parser=parser).getroot()
    cases: list[dict[str, Any]] = []
    for case in root.iter("case"):
        item: dict[str, Any] = {"name": case.get("name"), "mode": case.get("mode")}
        for part in ("input", "diff", "output"):
            holder = case.find(part)
            if holder is not None:
                (res,) = [c for c in holder if isinstance(c.tag, str)]
                item[part] = resource = convert_resource(res)
                # sanity check: the JSON must be valid for the R4B model
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        error = case.find("error")
        if error is not None:
            item["error"] = error.get("msg")
        cases.append(item)
    return cases


def main(argv: list[str]) -> None:
    src = Path(argv[1]) if len(argv) > 1 else DEFAULT_SRC
    dest = Path(argv[2]) if len(argv) > 2 else DEFAULT_DEST
    cases = convert_cases(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {dest}")


if __name__ == "__main__":
    main(sys.argv)
