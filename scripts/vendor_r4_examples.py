"""Vendor every example resource of the R4 package for the round-trip tests.

    .venv/bin/python scripts/vendor_r4_examples.py [path/to/hl7.fhir.r4.examples-4.0.1.tgz]

The examples already in ``tests/data/r4-examples/`` (one file each, used by name by the search
tests) stay there; every other example goes, byte for byte as HL7 publishes it (the number
literals are what the tests compare), into ``tests/data/r4-examples-more.tar.xz``: about
1.4 MB instead of 8 MB of files. Examples are the package's ``Type-id.json`` files except the
conformance resources (their own kinds below) and the spec's definition Bundles (the same
conformance resources again, 110 MB).

It also copies HL7's own FHIR XML test resources (fhir-test-cases, Apache-2.0) into
``tests/data/xml/``: XML written by HL7, not by us, for the XML tests.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TGZ = REPO / ".." / "shared" / "fhir-spec" / "hl7.fhir.r4.examples-4.0.1.tgz"
SINGLES = REPO / "tests" / "data" / "r4-examples"
ARCHIVE = REPO / "tests" / "data" / "r4-examples-more.tar.xz"
TEST_CASES = REPO / ".." / "shared" / "fhir-test-cases" / "r4"
XML_DIR = REPO / "tests" / "data" / "xml"
XML_FILES = (
    "patient-example.xml", "questionnaire-example.xml", "observation-example.xml",
)  # fmt: skip

CONFORMANCE = (
    "SearchParameter", "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap",
    "OperationDefinition", "CompartmentDefinition",
)  # fmt: skip
DEFINITION_BUNDLES = frozenset(
    f"Bundle-{name}.json"
    for name in (
        "conceptmaps", "dataelements", "extensions", "profiles-others", "resources",
        "searchParams", "terminologies", "types", "v2-valuesets", "v3-valuesets",
        "valueset-expansions", "valuesets",
    )
)  # fmt: skip


def is_example(name: str) -> bool:
    kind, dash, _ = name.partition("-")
    return (
        bool(dash)
        and name.endswith(".json")
        and kind[:1].isupper()
        and kind not in CONFORMANCE
        and name not in DEFINITION_BUNDLES
    )


def main(tgz: Path = DEFAULT_TGZ) -> None:
    present = {p.name for p in SINGLES.glob("*.json")}
    found: dict[str, bytes] = {}
    with tarfile.open(tgz, "r:gz") as package:
        for member in package.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and member.name.count("/") == 1 and is_example(name):
                data = package.extractfile(member)
                assert data is not None
                found[name] = data.read()
    missing = sorted(present - set(found))
    if missing:
        raise SystemExit(f"not in the package: {missing}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as out:
        for name in sorted(set(found) - present):
            info = tarfile.TarInfo(name)  # no owner, no time: the archive is reproducible
            info.size = len(found[name])
            out.addfile(info, io.BytesIO(found[name]))
    ARCHIVE.write_bytes(buffer.getvalue())
    print(f"{len(found)} examples: {len(present)} in {SINGLES.name}/, "
          f"{len(found) - len(present)} in {ARCHIVE.name} ({len(buffer.getvalue()):,} bytes)")
    XML_DIR.mkdir(exist_ok=True)
    for name in XML_FILES:
        (XML_DIR / name).write_bytes((TEST_CASES / name).read_bytes())
    print(f"{len(XML_FILES)} HL7 XML test resources in {XML_DIR.relative_to(REPO)}/")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TGZ)
