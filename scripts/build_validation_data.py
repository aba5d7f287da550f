"""Build the compact data the validator and the terminology service read at run time.

Run by developers when the packages change (the output is committed)::

    .venv/bin/python scripts/build_validation_data.py [R4.tgz [THO.tgz]]

Writes three gzip files into ``fhir_server/spec/`` (deterministic: sorted, mtime 0):

- ``structures.json.gz``: for every R4 resource type, complex type (with the SimpleQuantity and
  MoneyQuantity profiles, which elements use as types) and primitive type, its snapshot elements
  reduced to what validation checks: path, cardinality, types (Reference targets as type
  names), contentReference, fixed/pattern values, bindings (required, extensible, preferred,
  with a value set) and the invariants (key, severity, human, FHIRPath expression; a shared
  table, since ele-1 alone is on every element; ERRATA below corrects one); the regex of each
  primitive type; whether an element is in the summary.
- ``profiles.json.gz``: the R4 constraint StructureDefinitions (the resource profiles such as
  vitalsigns and the 393 extension definitions) with their differentials only, for
  ``$validate?profile=`` and for knowing which extensions R4 defines (and which are modifiers).
- ``terminology.json.gz``: the CodeSystems and ValueSets of R4 and of HL7 Terminology (THO),
  without narrative and publishing metadata. Where both define a url, R4's is kept: it is the
  version the R4 definitions bind to.
- ``conceptmaps.json.gz``: R4's 80 ConceptMaps (groups and scope only), for ``$translate``.
"""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO / ".." / "shared" / "fhir-spec"
DEFAULT_R4 = SHARED / "hl7.fhir.r4.examples-4.0.1.tgz"
DEFAULT_THO = SHARED / "hl7.terminology.r4-7.0.1.tgz"
OUT = REPO / "fhir_server" / "spec"

CORE = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
#: profiles of Quantity that elements name as their type (Observation.referenceRange.low ...)
QUANTITY_PROFILES = ("SimpleQuantity", "MoneyQuantity")
BINDINGS = ("required", "extensible", "preferred")
#: invariants of R4 that contradict R4 itself, as corrected later: app-4 names the status
#: 'no-show', which Appointment.status's required value set spells `noshow` (R4B/R5 fixed it)
ERRATA = {
    ("app-4", "Appointment.cancelationReason.exists() implies (Appointment.status='no-show' or "
              "Appointment.status='cancelled')"):
    "Appointment.cancelationReason.exists() implies (Appointment.status='noshow' or "
    "Appointment.status='cancelled')",
}  # fmt: skip
#: what an element definition keeps in profiles.json.gz (differentials)
DIFF_KEYS = (
    "id", "path", "sliceName", "min", "max", "type", "binding", "constraint", "slicing",
    "isModifier", "contentReference", "maxLength",
)  # fmt: skip
CS_KEYS = (
    "resourceType", "id", "url", "version", "name", "title", "status", "caseSensitive",
    "content", "hierarchyMeaning", "valueSet", "property", "filter", "supplements", "count",
    "compositional", "versionNeeded",
)  # fmt: skip
CONCEPT_KEYS = ("code", "display", "definition", "designation", "property")
VS_KEYS = ("resourceType", "id", "url", "version", "name", "title", "status", "immutable",
           "compose", "expansion")  # fmt: skip


def read_package(tgz: Path, prefixes: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    with tarfile.open(tgz, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and name.endswith(".json") and name.startswith(prefixes):
                fh = tar.extractfile(member)
                if fh is not None:
                    yield name, json.load(fh)


# -- structures ---------------------------------------------------------------------------------


def _type_name(t: dict[str, Any]) -> str:
    """An element type's FHIR name: System.String & co carry theirs in an extension."""
    code = str(t["code"])
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension") or ():
            if ext.get("url") == FHIR_TYPE:
                return str(ext["valueUrl"])
        return code.rsplit(".", 1)[-1].lower()
    for profile in t.get("profile") or ():
        name = profile.removeprefix(CORE)
        if name in QUANTITY_PROFILES:
            return name
    return code


def _types(element: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for t in element.get("type") or ():
        name = _type_name(t)
        targets = sorted(
            p.removeprefix(CORE) for p in t.get("targetProfile") or () if p.startswith(CORE)
        )
        out.append([name, targets] if name == "Reference" and targets else name)
    return out


def _choice(element: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return {key: value}
    return None


def compact_element(
    element: dict[str, Any], table: dict[tuple[str, str, str, str], int]
) -> dict[str, Any]:
    rec: dict[str, Any] = {"path": element["path"], "min": element.get("min", 0),
                           "max": element.get("max", "*")}  # fmt: skip
    if element.get("contentReference"):
        rec["contentReference"] = element["contentReference"].lstrip("#")
    types = _types(element)
    if types:
        rec["types"] = types
    for prefix in ("fixed", "pattern"):
        value = _choice(element, prefix)
        if value is not None:
            rec[prefix] = value
    binding = element.get("binding") or {}
    if binding.get("strength") in BINDINGS and binding.get("valueSet"):
        rec["binding"] = [binding["strength"], binding["valueSet"].split("|", 1)[0]]
    constraints = []
    for c in element.get("constraint") or ():
        if c.get("expression"):
            expression = ERRATA.get((c["key"], c["expression"]), c["expression"])
            key = (c["key"], c.get("severity", "error"), c.get("human", ""), expression)
            constraints.append(table.setdefault(key, len(table)))
    if constraints:
        rec["constraints"] = constraints
    if element.get("isSummary"):
        rec["summary"] = True
    if element.get("isModifier"):
        rec["modifier"] = True
    if element.get("maxLength"):
        rec["maxLength"] = element["maxLength"]
    return rec


def _regex(sd: dict[str, Any]) -> str | None:
    for element in sd["snapshot"]["element"]:
        if element["path"].endswith(".value"):
            for t in element.get("type") or ():
                for ext in t.get("extension") or ():
                    if ext.get("url") == REGEX:
                        return str(ext["valueString"])
    return None


def build_structures(sds: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[tuple[str, str, str, str], int] = {}
    types: dict[str, Any] = {}
    for sd in sds:
        derivation, kind = sd.get("derivation"), sd.get("kind")
        if kind not in ("resource", "complex-type", "primitive-type"):
            continue
        if derivation == "constraint" and sd["id"] not in QUANTITY_PROFILES:
            continue
        rec: dict[str, Any] = {"kind": kind, "abstract": bool(sd.get("abstract"))}
        if derivation == "constraint":
            rec["profileOf"] = sd["type"]  # its JSON name in a choice is the type's: doseQuantity
        if sd.get("baseDefinition"):
            rec["base"] = sd["baseDefinition"].removeprefix(CORE)
        if kind == "primitive-type":
            regex = _regex(sd)
            if regex:
                rec["regex"] = regex
        else:
            rec["elements"] = [compact_element(e, table) for e in sd["snapshot"]["element"]]
        types[sd["id"]] = rec
    constraints = [list(k) for k, _ in sorted(table.items(), key=lambda kv: kv[1])]
    return {"constraints": constraints, "types": dict(sorted(types.items()))}


def compact_profile(sd: dict[str, Any]) -> dict[str, Any]:
    rec = {k: sd[k] for k in ("resourceType", "id", "url", "version", "name", "kind", "type",
                              "derivation", "baseDefinition", "context") if k in sd}  # fmt: skip
    rec["differential"] = {
        "element": [
            {k: e[k] for k in DIFF_KEYS if k in e} | (_choice(e, "fixed") or {})
            | (_choice(e, "pattern") or {})
            for e in (sd.get("differential") or {}).get("element") or ()
        ]
    }
    root = (sd.get("snapshot") or {}).get("element") or [{}]
    if sd.get("type") == "Extension" and root[0].get("isModifier"):
        rec["modifier"] = True
    return rec


# -- terminology -----------------------------------------------------------------------------


def _concepts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in items:
        rec = {k: c[k] for k in CONCEPT_KEYS if k in c}
        if c.get("concept"):
            rec["concept"] = _concepts(c["concept"])
        out.append(rec)
    return out


def compact_terminology(r: dict[str, Any]) -> dict[str, Any]:
    if r["resourceType"] == "ValueSet":
        return {k: r[k] for k in VS_KEYS if k in r}
    rec = {k: r[k] for k in CS_KEYS if k in r}
    if r.get("concept"):
        rec["concept"] = _concepts(r["concept"])
    return rec


def build_terminology(r4: list[dict[str, Any]], tho: list[dict[str, Any]]) -> list[Any]:
    seen = {(r["resourceType"], r["url"]) for r in r4}
    kept = r4 + [r for r in tho if (r["resourceType"], r["url"]) not in seen]
    records = [compact_terminology(r) for r in kept if r.get("url")]
    return sorted(records, key=lambda r: (r["resourceType"], r["url"], r.get("version") or ""))


CM_KEYS = ("resourceType", "url", "version", "name", "sourceUri", "sourceCanonical",
           "targetUri", "targetCanonical", "group")


def build_conceptmaps(r4: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """R4's ConceptMaps for $translate, without narrative and descriptive metadata."""
    maps = [{k: r[k] for k in CM_KEYS if k in r} for r in r4 if r.get("url")]
    return sorted(maps, key=lambda r: r["url"])


def write_gz(name: str, data: Any) -> int:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    blob = gzip.compress(raw.encode(), compresslevel=9, mtime=0)
    (OUT / name).write_bytes(blob)
    return len(blob)


def main(argv: list[str]) -> int:
    r4_tgz = Path(argv[1]) if len(argv) > 1 else DEFAULT_R4
    tho_tgz = Path(argv[2]) if len(argv) > 2 else DEFAULT_THO
    sds = [r for _, r in read_package(r4_tgz, ("StructureDefinition-",))]
    structures = build_structures(sds)
    profiles = [compact_profile(sd) for sd in sds if sd.get("derivation") == "constraint"
                and sd["id"] not in QUANTITY_PROFILES]  # fmt: skip
    kinds = ("CodeSystem-", "ValueSet-")
    r4 = [r for _, r in read_package(r4_tgz, kinds)]
    tho = [r for _, r in read_package(tho_tgz, kinds)]
    terminology = build_terminology(r4, tho)
    conceptmaps = build_conceptmaps([r for _, r in read_package(r4_tgz, ("ConceptMap-",))])
    sizes = [
        write_gz("structures.json.gz", structures),
        write_gz("profiles.json.gz", sorted(profiles, key=lambda p: p["url"])),
        write_gz("terminology.json.gz", terminology),
        write_gz("conceptmaps.json.gz", conceptmaps),
    ]
    print(
        f"{len(structures['types'])} types, {len(structures['constraints'])} invariants; "
        f"{len(profiles)} R4 profiles; {len(terminology)} CodeSystems and ValueSets; "
        f"{len(conceptmaps)} ConceptMaps; "
        f"{', '.join(f'{s / 1e6:.2f} MB' for s in sizes)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
