"""Build the compact R4 definition files shipped in ``fhir_server/spec/``.

Run once by developers (the output is committed)::

    .venv/bin/python scripts/build_spec_data.py [path/to/hl7.fhir.r4.examples-4.0.1.tgz]

The server never reads the 30 MB spec package at start-up; it loads these small, deterministic
JSON files instead (sorted keys, sorted records, one record per line so diffs stay readable).

Choices:
- SearchParameters marked ``experimental`` are dropped: in the R4 package they are the
  ``example*`` demos and extension-defined parameters (several without base or expression).
  Put any of them in ``profiles/`` if wanted.
- ``_list``, ``_has`` and ``_type`` have no SearchParameter resource in R4 but apply to all types;
  they are added as ``special`` records on base ``Resource`` with a synthetic url.
- The ``CompartmentDefinition-example`` demo is dropped.
- ``elements.json``: for every resource, complex type and backbone element of R4, its child
  elements in definition order (the order FHIR XML requires) with their types, whether they
  repeat and whether XML writes them as attributes (``Element.id``, ``Extension.url``);
  ``@Path`` types name a backbone element (or a contentReference), ``*`` the open type list.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TGZ = REPO / ".." / "shared" / "fhir-spec" / "hl7.fhir.r4.examples-4.0.1.tgz"
OUT = REPO / "fhir_server" / "spec"

# Parameters the R4 search page defines for every type but the package has no resource for.
SYNTHETIC_COMMON = [
    {
        "code": "_has",
        "type": "special",
        "base": ["Resource"],
        "url": "http://hl7.org/fhir/SearchParameter/Resource-has",
    },
    {
        "code": "_list",
        "type": "special",
        "base": ["Resource"],
        "url": "http://hl7.org/fhir/SearchParameter/Resource-list",
    },
    {
        "code": "_type",
        "type": "special",
        "base": ["Resource"],
        "url": "http://hl7.org/fhir/SearchParameter/Resource-type",
    },
]


def _read_package(tgz: Path) -> dict[str, dict[str, Any]]:
    """Return {file name: resource} for the three resource kinds we need."""
    wanted = ("SearchParameter-", "CompartmentDefinition-", "StructureDefinition-")
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not name.endswith(".json") or not name.startswith(wanted):
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                out[name] = json.load(fh)
    return out


def compact_search_parameter(sp: dict[str, Any]) -> dict[str, Any]:
    """Keep only the fields the server uses (no narrative, xpath, contacts, descriptions)."""
    rec: dict[str, Any] = {
        "code": sp["code"],
        "type": sp["type"],
        "url": sp["url"],
        "base": sorted(sp.get("base", [])),
    }
    if sp.get("expression"):
        rec["expression"] = sp["expression"]
    if sp.get("target"):
        rec["target"] = sorted(sp["target"])
    for key in ("modifier", "comparator", "chain"):
        if sp.get(key):
            rec[key] = list(sp[key])
    for key in ("multipleOr", "multipleAnd"):
        if key in sp:
            rec[key] = sp[key]
    if sp.get("component"):
        rec["component"] = [
            {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
        ]
    return rec


def build_search_parameters(files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    records = [
        compact_search_parameter(res)
        for name, res in files.items()
        if name.startswith("SearchParameter-") and not res.get("experimental")
    ]
    records.extend(SYNTHETIC_COMMON)
    records.sort(key=lambda r: (r["url"], r["code"]))
    return records


def build_resource_types(files: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    types = sorted(
        res["type"]
        for name, res in files.items()
        if name.startswith("StructureDefinition-")
        and res.get("kind") == "resource"
        and res.get("derivation") == "specialization"
        and not res.get("abstract")
    )
    missing: list[str] = []
    try:
        from fhir.resources import R4B
    except ImportError:  # still write the type list; the caller sees the warning
        print("warning: fhir.resources not importable; missing_in_r4b left empty", file=sys.stderr)
    else:
        for t in types:
            try:
                R4B.get_fhir_model_class(t)
            except (ValueError, KeyError, AttributeError, ImportError):
                missing.append(t)
    return {"types": types, "missing_in_r4b": missing}


def build_compartments(files: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for name, res in files.items():
        if not name.startswith("CompartmentDefinition-") or res.get("id") == "example":
            continue
        members = {r["code"]: list(r["param"]) for r in res.get("resource", []) if r.get("param")}
        out[res["code"]] = dict(sorted(members.items()))
    return dict(sorted(out.items()))


SYSTEM_TYPE = "http://hl7.org/fhirpath/System."


def _type_code(t: dict[str, Any]) -> str:
    """The FHIR type of an element type; `System.String` ids and urls name theirs in an
    extension (structuredefinition-fhir-type)."""
    code: str = t["code"]
    if code.startswith(SYSTEM_TYPE):
        for ext in t.get("extension", []):
            if ext.get("valueUrl"):
                return str(ext["valueUrl"])
        return code[len(SYSTEM_TYPE) :].lower()
    return code


def build_elements(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"primitives": [...], "open": [...], "types": {path: [[name, types, repeats, attr]]}}
    from the snapshots of the R4 base definitions (derivation specialization)."""
    primitives: list[str] = []
    types: dict[str, list[list[Any]]] = {}
    open_types: list[str] = []
    for _, sd in sorted(files.items()):
        if not sd["url"].startswith("http://hl7.org/fhir/StructureDefinition/"):
            continue
        if sd.get("derivation") != "specialization":
            continue
        if sd["kind"] == "primitive-type":
            primitives.append(sd["type"])
            continue
        if sd["kind"] not in ("resource", "complex-type"):
            continue
        elements = sd["snapshot"]["element"]
        paths = {e["path"] for e in elements}
        for e in elements[1:]:
            path = e["path"]
            parent, _, name = path.rpartition(".")
            if e.get("contentReference"):
                codes = ["@" + e["contentReference"].lstrip("#")]
            elif f"{path}.id" in paths:
                codes = ["@" + path]
            else:
                codes = [_type_code(t) for t in e.get("type", [])]
            if sd["type"] == "Extension" and name == "value[x]":
                open_types = codes
            record: list[Any] = [name, codes, 1 if e.get("max") != "1" else 0]
            if "xmlAttr" in (e.get("representation") or []):
                record.append(1)
            types.setdefault(parent, []).append(record)
    for records in types.values():
        for record in records:
            if record[1] == open_types:
                record[1] = ["*"]
    return {"primitives": sorted(primitives), "open": open_types, "types": types}


def _dump_elements(data: dict[str, Any]) -> str:
    """One type per line, so diffs stay readable."""
    dump = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    lines = [f"{dump(path)}:{dump(records)}" for path, records in sorted(data["types"].items())]
    return (
        f'{{"primitives":{dump(data["primitives"])},\n"open":{dump(data["open"])},\n'
        '"types":{\n' + ",\n".join(lines) + "\n}}\n"
    )


def _dump_lines(records: list[dict[str, Any]]) -> str:
    """A JSON array with one compact record per line: small, and diffs well."""
    lines = [
        json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for r in records
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main(argv: list[str]) -> int:
    tgz = Path(argv[1]) if len(argv) > 1 else DEFAULT_TGZ
    files = _read_package(tgz)
    OUT.mkdir(parents=True, exist_ok=True)
    params = build_search_parameters(files)
    (OUT / "search_parameters.json").write_text(_dump_lines(params), encoding="utf-8")
    types = build_resource_types(files)
    (OUT / "resource_types.json").write_text(
        json.dumps(types, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    compartments = build_compartments(files)
    (OUT / "compartments.json").write_text(
        json.dumps(compartments, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    elements = build_elements(files)
    (OUT / "elements.json").write_text(_dump_elements(elements), encoding="utf-8")
    print(
        f"{len(elements['types'])} element trees, "
        f"{len(params)} search parameters, {len(types['types'])} resource types "
        f"({len(types['missing_in_r4b'])} missing in R4B), {len(compartments)} compartments"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
