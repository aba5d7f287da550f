"""The terminology service over R4 and HL7 Terminology (THO), the API the validator and the
terminology operations use: expand, contains, validate_code, subsumes, lookup. Expectations are
the published code systems' own contents, cited per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.terminology import Terminology

ROOT = Path(__file__).resolve().parent.parent
TERM = Terminology.load([ROOT / "profiles", ROOT / "terminology"])
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
#: THO only (R4 has no such CodeSystem): HL7 v3 AddressUse, hierarchical by nested concepts
ADDRESS_USE = "http://terminology.hl7.org/CodeSystem/v3-PostalAddressUse"
#: THO only, hierarchical by `subsumedBy` properties: the HL7 v3 data types
DATA_TYPE = "http://terminology.hl7.org/CodeSystem/v3-DataType"


def test_required_value_set_of_r4_expands_to_its_codes() -> None:
    # administrative-gender (R4 valueset-administrative-gender): male | female | other | unknown
    codes = {(s, c) for s, c, _ in TERM.expand(GENDER_VS) or []}
    assert codes == {(GENDER, c) for c in ("male", "female", "other", "unknown")}
    assert TERM.contains(GENDER_VS, GENDER, "female") is True
    assert TERM.contains(GENDER_VS, None, "robot") is False
    verdict = TERM.validate_code(GENDER_VS, GENDER, "male", "Male")
    assert verdict is not None and verdict[0]


def test_value_sets_over_systems_not_held_cannot_be_enumerated() -> None:
    # observation-codes includes all of LOINC: not held here, so not checkable (None)
    assert TERM.expand("http://hl7.org/fhir/ValueSet/observation-codes") is None
    assert TERM.contains("http://hl7.org/fhir/ValueSet/observation-codes", None, "x") is None
    assert TERM.code_system("http://snomed.info/sct") is None  # R4's stub has no content


@pytest.mark.parametrize(
    ("system", "a", "b", "outcome"),
    [
        # v3 AddressUse: HP (primary home) and HV (vacation home) specialise H (home)
        (ADDRESS_USE, "H", "HP", "subsumes"),
        (ADDRESS_USE, "HV", "H", "subsumed-by"),
        (ADDRESS_USE, "HP", "WP", "not-subsumed"),
        (ADDRESS_USE, "H", "H", "equivalent"),
        # DIR and PUB specialise WP (work place), itself under the abstract _AddressUse
        (ADDRESS_USE, "_AddressUse", "DIR", "subsumes"),
        # v3 data types: PQ (physical quantity) and INT specialise QTY, CE specialises CD
        (DATA_TYPE, "QTY", "PQ", "subsumes"),
        (DATA_TYPE, "ANY", "INT", "subsumes"),
        (DATA_TYPE, "CE", "CD", "subsumed-by"),
        (DATA_TYPE, "PQ", "CD", "not-subsumed"),
    ],
)
def test_subsumes_in_tho_hierarchies(system: str, a: str, b: str, outcome: str) -> None:
    assert TERM.subsumes(system, a, b) == outcome


def test_subsumes_unknown_code_or_system_is_none() -> None:
    assert TERM.subsumes(ADDRESS_USE, "H", "nope") is None
    assert TERM.subsumes("http://example.org/cs", "a", "b") is None


def test_compose_filters_over_a_hierarchy() -> None:
    def codes(*include: dict[str, object]) -> set[str]:
        url = "http://example.org/vs"
        vs = {"resourceType": "ValueSet", "url": url, "compose": {"include": list(include)}}
        return {c for _, c, _ in Terminology([vs], base=True).expand(url) or []}

    home = {"property": "concept", "value": "H"}
    assert codes({"system": ADDRESS_USE, "filter": [{**home, "op": "is-a"}]}) == {"H", "HP", "HV"}
    assert codes({"system": ADDRESS_USE, "filter": [{**home, "op": "descendent-of"}]}) == {
        "HP", "HV"
    }
    everything = {"_AddressUse", "BAD", "H", "HP", "HV", "TMP", "WP", "DIR", "PUB", "BIR",
                  "PHYS", "PST"}  # fmt: skip
    assert codes({"system": ADDRESS_USE, "filter": [{**home, "op": "is-not-a"}]}) == (
        everything - {"H", "HP", "HV"}
    )
    assert codes({"system": ADDRESS_USE, "filter": [
        {"property": "concept", "op": "in", "value": "PHYS,PST"}]}) == {"PHYS", "PST"}  # fmt: skip


def test_lookup_of_an_r4_code() -> None:
    # R4 CodeSystem observation-status: `final` is displayed "Final"
    found = TERM.lookup("http://hl7.org/fhir/observation-status", "final")
    assert found is not None and found["display"] == "Final"
    assert TERM.lookup("http://hl7.org/fhir/observation-status", "done") is None


def test_our_code_systems_win_over_the_base_for_the_same_url() -> None:
    ours = {"resourceType": "CodeSystem", "url": GENDER, "content": "complete",
            "concept": [{"code": "only-this"}]}  # fmt: skip
    term = Terminology([ours], base=True)
    assert term.lookup(GENDER, "only-this") is not None
    assert term.lookup(GENDER, "male") is None
