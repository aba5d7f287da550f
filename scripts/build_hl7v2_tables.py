"""Regenerate integrations/hl7v2/tables/concept_maps.json from the HL7 v2-to-FHIR IG's mapping
tables (../shared/v2-to-fhir/mappings/codesystems/*.csv, IG 1.0.0, CC0 / Apache-2.0).

Only the vocabulary maps our segment maps use are kept, each as {v2 code: [FHIR code, display,
system]} (codes the IG leaves unmapped are left out), plus the event -> message structure table
(HL7 table 0354, the IG's `MessageStructure` map) as {"ADT^A04": "ADT_A01", ...}.

    .venv/bin/python scripts/build_hl7v2_tables.py [../shared/v2-to-fhir]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "integrations" / "hl7v2" / "tables" / "concept_maps.json"

#: the IG's concept maps our segment maps use (file name between "HL7 Concept Map_ " and
#: " - Sheet1.csv")
MAPS = (
    "AdministrativeSex",
    "AllergenType[AllergyIntoleranceCategory]",
    "AllergySeverity[AllergyIntolerance.criticality]",
    "AllergyType",
    "AddressType[Use]",
    "AdmissionType",
    "DiagnosisType",
    "DiagnosticServiceSectionID",
    "Event[EncounterStatus]",
    "FillerStatusCodes[Appointment]",
    "IdentifierType",
    "InterpretationCodes",
    "MaritalStatus",
    "NameType",
    "ObservationResultStatusCodesInterpretation",
    "OrderControlCode[ServiceRequest.status]",
    "OrderStatus",
    "Participation",
    "PatientClass[EncounterClass]",
    "PatientClass[EncounterStatus]",
    "ProviderRole",
    "Relationship",
    "ResultStatus[Non-Queries]",
    "TelecommunicationEquipmentType",
    "TelecommunicationUseCode",
)


def read_map(path: Path) -> dict[str, list[str]]:
    rows = list(csv.reader(path.open(encoding="utf-8")))
    header = rows[1]
    # the v2 code is column 0; the FHIR code is the second "Code" column, then its display
    # and system (some sheets have an unnamed column between code and display)
    code_cols = [i for i, h in enumerate(header) if h.strip().lower() == "code"]
    system_cols = [i for i, h in enumerate(header) if h.strip().lower() == "code system"]
    display_cols = [i for i, h in enumerate(header) if h.strip().lower() == "display"]
    target, system = code_cols[1], system_cols[1]
    display = display_cols[0] if display_cols else None
    out: dict[str, list[str]] = {}
    for row in rows[2:]:
        if len(row) <= system:
            continue
        source, code = row[0].strip(), row[target].strip()
        if not source or not code:
            continue
        shown = row[display].strip() if display is not None else ""
        if not shown and display is not None and target + 1 < display:
            shown = row[target + 1].strip()  # sheets that put the display beside the code
        out[source] = [code, shown, row[system].strip()]
    return out


def read_structures(path: Path) -> dict[str, str]:
    """Table 0354 as event -> structure: the row `ADT_A01, "A01, A04, A08, A13"` gives
    ADT^A01, ADT^A04, ADT^A08 and ADT^A13 the structure ADT_A01."""
    out: dict[str, str] = {}
    for row in list(csv.reader(path.open(encoding="utf-8")))[2:]:
        structure, events = row[0].strip(), row[1]
        kind = structure.partition("_")[0]
        for event in (e.strip() for e in events.split(",")):
            if len(event) == 3 and event[0].isalpha() and event[1:].isdigit():
                out.setdefault(f"{kind}^{event}", structure)
    return dict(sorted(out.items()))


def main(shared: Path) -> None:
    folder = shared / "mappings" / "codesystems"
    tables: dict[str, object] = {
        name: read_map(folder / f"HL7 Concept Map_ {name} - Sheet1.csv") for name in MAPS
    }
    tables["MessageStructure"] = read_structures(
        folder / "HL7 Concept Map_ MessageStructure - Sheet1.csv"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(tables, ensure_ascii=False, indent=1, sort_keys=True)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(tables)} tables)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "v2-to-fhir")
