"""Search by parameter type and modifier (http://hl7.org/fhir/R4/search.html) over the vendored
R4 examples in tests/data/r4-examples (CC0), loaded once per module into a fresh database.

Every expected result set was worked out by hand from the example files and is written out
literally, with the reason in a comment; none is computed with the server's code. Where the
examples hold nothing for a feature (meta tags/security/source, escaped characters, canonical
references with a version), the test PUTs its own resources of a type no other test counts.

Date values without a time zone are read in UTC, the server's time zone (search.html#date
leaves that to the server).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.services import Parts

EXAMPLES = Path(__file__).parent / "data" / "r4-examples"

#: the 26 Observation examples
ALL_OBSERVATIONS = {
    "656", "bgpanel", "blood-pressure", "bloodgroup", "bmd", "bmi-using-related", "bmi",
    "body-height", "body-length", "body-temperature", "date-lastmp", "example-TPMT-diplotype",
    "example-TPMT-haplotype-one", "example-TPMT-haplotype-two", "example-diplotype1",
    "example-genetics-3", "example-genetics-5", "example", "eye-color", "head-circumference",
    "heart-rate", "mbp", "respiratory-rate", "rhstatus", "trachcare", "vomiting",
}  # fmt: skip
#: the 12 Patient examples
ALL_PATIENTS = {
    "dicom", "example", "genetics-example1", "glossy", "ihe-pcd", "infant-mom", "newborn",
    "pat3", "pat4", "proband", "xcda", "xds",
}  # fmt: skip
#: Observations whose subject is Patient/example
OBS_OF_EXAMPLE = {
    "blood-pressure", "bmi", "bmi-using-related", "body-height", "body-length",
    "body-temperature", "example", "example-TPMT-diplotype", "example-TPMT-haplotype-one",
    "example-TPMT-haplotype-two", "example-genetics-3", "example-genetics-5", "eye-color",
    "head-circumference", "heart-rate", "mbp", "respiratory-rate",
}  # fmt: skip
#: Observations with effectiveDateTime 1999-07-02
OBS_1999 = {
    "bmi-using-related", "bmi", "body-height", "body-length", "body-temperature",
    "head-circumference", "heart-rate", "mbp", "respiratory-rate",
}  # fmt: skip
#: Observations with effectiveDateTime 2018-03-11T16:07:54+00:00
OBS_2018 = {"bgpanel", "bloodgroup", "rhstatus", "trachcare"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    """One server over all the R4 examples, PUT under their own ids."""
    services = make_services(tmp_path_factory.mktemp("search-types") / "db", parts)
    app = build_app(services.settings, services)
    with TestClient(app, raise_server_exceptions=False) as c:
        files = sorted(EXAMPLES.glob("*.json"))
        stored = 0
        for f in files:
            resource = json.loads(f.read_text(encoding="utf-8"))
            url = f"/fhir/{resource['resourceType']}/{resource['id']}"
            stored += c.put(url, json=resource).status_code in (200, 201)
        assert len(files) > 300
        assert stored >= 0.95 * len(files), f"only {stored} of {len(files)} examples loaded"
        yield c


def search(client: TestClient, query: str) -> dict[str, Any]:
    """GET /fhir/{query} ('Type?a=1&b=2'; values unencoded) on one page; no parameter may be
    ignored (a `search.mode = outcome` entry would mean the server dropped one)."""
    path, _, qs = query.partition("?")
    pairs = [tuple(p.split("=", 1)) for p in qs.split("&") if p]
    r = client.get(f"/fhir/{path}", params=[*pairs, ("_count", "1000")])
    assert r.status_code == 200, (query, r.text)
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle", bundle
    ignored = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert not ignored, (query, ignored)
    return bundle


def matches(client: TestClient, query: str) -> set[str]:
    """The ids of the matches; `total` must count exactly those."""
    bundle = search(client, query)
    found = [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(found) == len(set(found)), (query, found)
    assert bundle.get("total") == len(found), (query, bundle.get("total"), found)
    return set(found)


def included(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "include"
    }


def put(client: TestClient, resource: dict[str, Any]) -> None:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def test_examples_loaded(loaded: TestClient) -> None:
    assert matches(loaded, "Patient") == ALL_PATIENTS
    assert matches(loaded, "Observation") == ALL_OBSERVATIONS


# ---------------------------------------------------------------------------------------------
# number


def test_number_prefixes_and_implicit_precision(loaded: TestClient) -> None:
    # RiskAssessment.prediction.probabilityDecimal: cardiac 0.02, riskexample 0.000368;
    # breastcancer-risk, population and prognosis have no probability
    assert matches(loaded, "RiskAssessment?probability=0.02") == {"cardiac"}
    # 0.0004 covers [0.00035, 0.00045), which holds 0.000368; 0.0003 covers [0.00025, 0.00035)
    assert matches(loaded, "RiskAssessment?probability=0.0004") == {"riskexample"}
    assert matches(loaded, "RiskAssessment?probability=0.00037") == {"riskexample"}
    assert matches(loaded, "RiskAssessment?probability=0.0003") == set()
    assert matches(loaded, "RiskAssessment?probability=eq0.02") == {"cardiac"}
    assert matches(loaded, "RiskAssessment?probability=gt0.01") == {"cardiac"}
    assert matches(loaded, "RiskAssessment?probability=lt0.01") == {"riskexample"}
    assert matches(loaded, "RiskAssessment?probability=ge0.0003") == {"cardiac", "riskexample"}
    assert matches(loaded, "RiskAssessment?probability=le0.001") == {"riskexample"}
    assert matches(loaded, "RiskAssessment?probability=gt0.5") == set()
    # ne only matches resources that have a value
    assert matches(loaded, "RiskAssessment?probability=ne0.02") == {"riskexample"}
    assert matches(loaded, "RiskAssessment?probability:missing=true") == {
        "breastcancer-risk",
        "population",
        "prognosis",
    }
    assert matches(loaded, "RiskAssessment?probability:missing=false") == {
        "cardiac",
        "riskexample",
    }


def test_number_on_integers(loaded: TestClient) -> None:
    # MolecularSequence.referenceSeq.windowStart: example 22125500, graphic-example-2 0,
    # graphic-example-3 128273732, graphic-example-4 128273736, graphic-example-5 128273732
    ms = "MolecularSequence?window-start="
    assert matches(loaded, ms + "128273732") == {"graphic-example-3", "graphic-example-5"}
    assert matches(loaded, ms + "0") == {"graphic-example-2"}
    assert matches(loaded, ms + "gt128273732") == {"graphic-example-4"}
    assert matches(loaded, ms + "ge128273736") == {"graphic-example-4"}
    assert matches(loaded, ms + "lt22125501") == {"example", "graphic-example-2"}
    assert matches(loaded, ms + "le0") == {"graphic-example-2"}
    # variant.start: example 22125503, graphic-example-3 1282737234; the others have no variant
    assert matches(loaded, "MolecularSequence?variant-start=gt100000000") == {"graphic-example-3"}
    assert matches(loaded, "MolecularSequence?variant-start=22125503") == {"example"}


def test_number_integer_targets_are_exact(loaded: TestClient) -> None:
    # windowStart is an integer: 128273732 is exactly that number, inside the range
    # [128273731.95, 128273732.05) that the search value 128273732.0 stands for
    ms = "MolecularSequence?window-start="
    assert matches(loaded, ms + "128273732.0") == {"graphic-example-3", "graphic-example-5"}
    # 0 (graphic-example-2) is not >= 1
    assert matches(loaded, ms + "ge1") == {
        "example", "graphic-example-3", "graphic-example-4", "graphic-example-5",
    }  # fmt: skip
    assert matches(loaded, ms + "ge1&window-start=le128273732") == {
        "example",
        "graphic-example-3",
        "graphic-example-5",
    }
    # and 128273736 (graphic-example-4) is not <= 128273735
    assert matches(loaded, ms + "le128273735") == {
        "example", "graphic-example-2", "graphic-example-3", "graphic-example-5",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# date


def test_date_precision_on_birthdate(loaded: TestClient) -> None:
    # birthDate: example 1974-12-25, genetics-example1 1973-05-31, glossy and xcda 1932-09-24,
    # infant-mom 1995-10-12, newborn 2017-09-05, pat3 1982-01-23, pat4 1982-08-02,
    # proband 1966-04-04, xds 1956-05-27; dicom and ihe-pcd have none
    assert matches(loaded, "Patient?birthdate=1982") == {"pat3", "pat4"}
    assert matches(loaded, "Patient?birthdate=1982-08") == {"pat4"}
    assert matches(loaded, "Patient?birthdate=eq1932-09-24") == {"glossy", "xcda"}
    assert matches(loaded, "Patient?birthdate=1982-08-03") == set()
    assert matches(loaded, "Patient?birthdate:missing=true") == {"dicom", "ihe-pcd"}


def test_date_prefixes_on_birthdate(loaded: TestClient) -> None:
    assert matches(loaded, "Patient?birthdate=gt1982") == {"infant-mom", "newborn"}
    assert matches(loaded, "Patient?birthdate=lt1966-04-04") == {"glossy", "xcda", "xds"}
    assert matches(loaded, "Patient?birthdate=ge1982-08-02") == {"pat4", "infant-mom", "newborn"}
    assert matches(loaded, "Patient?birthdate=le1956-05-27") == {"glossy", "xcda", "xds"}
    # sa: starts after the end of the search range; eb: ends before its start
    assert matches(loaded, "Patient?birthdate=sa1982-01-23") == {"pat4", "infant-mom", "newborn"}
    assert matches(loaded, "Patient?birthdate=eb1973") == {"glossy", "xcda", "xds", "proband"}
    # ne: every birthDate outside 1982 (patients without one do not match)
    assert matches(loaded, "Patient?birthdate=ne1982") == {
        "example", "genetics-example1", "glossy", "infant-mom", "newborn", "proband", "xcda",
        "xds",
    }  # fmt: skip
    # Person.birthDate: example, grahame 1974-12-25; pp 1974-03-07; pd 1959; f002 1963
    assert matches(loaded, "Person?birthdate=1974") == {"example", "grahame", "pp"}
    assert matches(loaded, "RelatedPerson?birthdate=1963") == {"f002"}


def test_date_on_observation_effective(loaded: TestClient) -> None:
    assert matches(loaded, "Observation?date=1999-07-02") == OBS_1999
    assert matches(loaded, "Observation?date=2018-03-11") == OBS_2018
    # blood-pressure is the only one in 2012 (2012-09-17)
    assert matches(loaded, "Observation?date=2012") == {"blood-pressure"}
    assert matches(loaded, "Observation?date=ge2018") == OBS_2018
    assert matches(loaded, "Observation?date=sa2017") == OBS_2018
    assert matches(loaded, "Observation?date=eb2000") == OBS_1999
    assert matches(loaded, "Observation?date=le1999-07-02") == OBS_1999
    assert matches(loaded, "Observation?date=lt1999-07-02") == set()
    # ne: all Observations with an effective[x] outside that day
    assert matches(loaded, "Observation?date=ne1999-07-02") == {
        "656", "bgpanel", "blood-pressure", "bloodgroup", "date-lastmp", "example", "eye-color",
        "rhstatus", "trachcare", "vomiting",
    }  # fmt: skip
    # only `issued` (not indexed by `date`) or nothing: bmd and the genetics examples
    assert matches(loaded, "Observation?date:missing=true") == {
        "bmd", "example-TPMT-diplotype", "example-TPMT-haplotype-one",
        "example-TPMT-haplotype-two", "example-diplotype1", "example-genetics-3",
        "example-genetics-5",
    }  # fmt: skip
    # value-date: date-lastmp has valueDateTime 2016-12-30
    assert matches(loaded, "Observation?value-date=2016-12") == {"date-lastmp"}


def test_date_instants_with_time_zones(loaded: TestClient) -> None:
    # 656: 2017-05-03T15:54:26-04:00 is 19:54:26Z
    assert matches(loaded, "Observation?date=2017-05-03T19:54:26Z") == {"656"}
    assert matches(loaded, "Observation?date=2017-05-03T15:54:26-04:00") == {"656"}
    assert matches(loaded, "Observation?date=2017-05-03T15:54:26Z") == set()
    assert matches(loaded, "Observation?date=2017-05-03") == {"656"}
    # vomiting: 2016-05-18T22:33:22Z is 08:33:22 the next day at +10:00
    assert matches(loaded, "Observation?date=2016-05-19T08:33:22+10:00") == {"vomiting"}
    # eye-color (the whole day 2016-05-18) extends beyond 22:33:22Z, vomiting (that second) not
    assert matches(loaded, "Observation?date=gt2016-05-18T22:33:22Z") == {
        "eye-color", "656", *OBS_2018,
    }  # fmt: skip
    assert matches(loaded, "Observation?date=2016-05-18") == {"eye-color", "vomiting"}
    # QuestionnaireResponse.authored: bb 2013-02-19T14:15:00+10:00 (04:15Z), 3141 the same
    # wall-clock time at -05:00 (19:15Z), f201 2013-06-17T23:00Z, gcs 2014-12-11T04:44:16Z,
    # ussg-fht-answers 2008-01-17
    qr = "QuestionnaireResponse?authored="
    assert matches(loaded, qr + "2013-02-19T04:15:00Z") == {"bb"}
    assert matches(loaded, qr + "2013-02-19T14:15:00-05:00") == {"3141"}
    assert matches(loaded, qr + "2013-02-19") == {"bb", "3141"}
    assert matches(loaded, qr + "lt2013-02-19T12:00:00Z") == {"bb", "ussg-fht-answers"}
    assert matches(loaded, qr + "gt2013-02-19T12:00:00Z") == {"3141", "f201", "gcs"}
    # Patient.deceasedDateTime of pat3: 2015-02-14T13:42:00+10:00 is 03:42Z the same day
    assert matches(loaded, "Patient?death-date=2015-02-14") == {"pat3"}
    assert matches(loaded, "Patient?death-date=2015-02-14T03:42:00Z") == {"pat3"}


def test_date_on_periods(loaded: TestClient) -> None:
    # Encounter.period: home 2015-01-17T16:00:00+10:00 .. 16:30:00+10:00 (06:00Z-06:30:00Z),
    # emerg starts 2017-02-01T07:15:00+10:00 (2017-01-31T21:15Z) with no end;
    # example, f201, xcda have no period
    assert matches(loaded, "Encounter?date=2015-01-17") == {"home"}
    # the period is wider than the second: not contained
    assert matches(loaded, "Encounter?date=2015-01-17T06:00:00Z") == set()
    # an open-ended period is never inside a bounded range, but reaches every later one
    assert matches(loaded, "Encounter?date=2017-02-01") == set()
    assert matches(loaded, "Encounter?date=gt2020") == {"emerg"}
    assert matches(loaded, "Encounter?date=ge2017-02-01") == {"emerg"}
    # in UTC emerg starts on 31 January
    assert matches(loaded, "Encounter?date=lt2017-02-01") == {"emerg", "home"}
    assert matches(loaded, "Encounter?date=le2017-01-31") == {"emerg", "home"}
    assert matches(loaded, "Encounter?date=lt2017-02-01T07:15:00+10:00") == {"home"}
    # home ends within 06:30:00Z: ge that second overlaps, gt that second does not
    assert matches(loaded, "Encounter?date=ge2015-01-17T06:30:00Z") == {"home", "emerg"}
    assert matches(loaded, "Encounter?date=gt2015-01-17T06:30:00Z") == {"emerg"}
    assert matches(loaded, "Encounter?date=gt2015-01-17T16:29:59+10:00") == {"home", "emerg"}
    assert matches(loaded, "Encounter?date=sa2015-01-17") == {"emerg"}
    assert matches(loaded, "Encounter?date=sa2015-01-17T06:15:00Z") == {"emerg"}
    assert matches(loaded, "Encounter?date=eb2017") == {"home"}
    assert matches(loaded, "Encounter?date=eb2015-01-17T06:15:00Z") == set()
    assert matches(loaded, "Encounter?date=ne2015-01-17") == {"emerg"}
    assert matches(loaded, "Encounter?date:missing=true") == {"example", "f201", "xcda"}


def test_last_updated(loaded: TestClient) -> None:
    # the server sets meta.lastUpdated on write: the 2012/2014 values in the genetics-example1
    # and glossy files are not kept
    assert matches(loaded, "Patient?_lastUpdated=gt2020-01-01") == ALL_PATIENTS
    assert matches(loaded, "Patient?_lastUpdated=lt2020-01-01") == set()
    assert matches(loaded, "Patient?_lastUpdated=2014-11-13") == set()
    stamp = loaded.get("/fhir/Patient/xds").json()["meta"]["lastUpdated"]
    assert "xds" in matches(loaded, f"Patient?_lastUpdated=ge{stamp}")
    assert "xds" in matches(loaded, f"Patient?_lastUpdated=le{stamp}")
    assert "xds" not in matches(loaded, f"Patient?_lastUpdated=gt{stamp}")
    assert "xds" not in matches(loaded, f"Patient?_lastUpdated=lt{stamp}")


# ---------------------------------------------------------------------------------------------
# string


def test_string_prefix_and_case(loaded: TestClient) -> None:
    # Patient families: Chalmers/Windsor (example), Everywoman, Levin (glossy, xcda), BROOKS,
    # Solo/Organa (infant-mom), Notsowell (pat3, pat4), Doe (xds), MINT_TEST (dicom)
    assert matches(loaded, "Patient?family=notso") == {"pat3", "pat4"}
    assert matches(loaded, "Patient?family=LEVIN") == {"glossy", "xcda"}
    assert matches(loaded, "Patient?family=mint_") == {"dicom"}
    assert matches(loaded, "Patient?family=owell") == set()  # not a prefix
    # given: Simon (pat3) and Sandy (pat4) are the only ones starting with S
    assert matches(loaded, "Patient?given=s") == {"pat3", "pat4"}
    # name covers every part: Jim is the given name of the usual name of example
    assert matches(loaded, "Patient?name=jim") == {"example"}
    assert matches(loaded, "Patient?name=brooks") == {"ihe-pcd"}
    # maiden name Windsor of example, maiden name Organa of infant-mom
    assert matches(loaded, "Patient?name=windsor,organa") == {"example", "infant-mom"}
    # newborn and proband have no name at all
    assert matches(loaded, "Patient?family:missing=true") == {"newborn", "proband"}
    # Practitioner names: prefix Dr (example), suffix MD (xcda-author), text "Juri van Gelder"
    assert matches(loaded, "Practitioner?name=dr") == {"example"}
    assert matches(loaded, "Practitioner?name=md") == {"xcda-author"}
    assert matches(loaded, "Practitioner?name=juri") == {"f203"}
    assert matches(loaded, "Practitioner?family=hippo") == {"xcda-author"}


def test_string_accents_exact_contains(loaded: TestClient) -> None:
    # RelatedPerson/benedicte: family "du Marché", given "Bénédicte"
    assert matches(loaded, "RelatedPerson?name=benedicte") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?name=BÉNÉ") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?name=du marche") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?name:exact=Bénédicte") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?name:exact=Benedicte") == set()
    assert matches(loaded, "RelatedPerson?name:exact=bénédicte") == set()
    assert matches(loaded, "RelatedPerson?name:exact=Bénéd") == set()
    assert matches(loaded, "RelatedPerson?name:contains=arch") == {"benedicte"}
    assert matches(loaded, "Patient?family:exact=Levin") == {"glossy", "xcda"}
    assert matches(loaded, "Patient?family:exact=levin") == set()
    # Notsowell contains "owel"; Chalmers is the only name containing "alm"
    assert matches(loaded, "Patient?family:contains=owel") == {"pat3", "pat4"}
    assert matches(loaded, "Patient?name:contains=ALM") == {"example"}


def test_string_address_parts(loaded: TestClient) -> None:
    # example: 534 Erewhon St, PleasantVille, Vic 3999; xds: 100 Main St, Metropolis, Il 44130,
    # USA; genetics-example1: 2222 Home Street
    assert matches(loaded, "Patient?address=534") == {"example"}
    assert matches(loaded, "Patient?address=metropolis") == {"xds"}
    assert matches(loaded, "Patient?address=2222 home") == {"genetics-example1"}
    assert matches(loaded, "Patient?address:contains=erewhon") == {"example"}
    assert matches(loaded, "Patient?address-city=pleasant") == {"example"}
    assert matches(loaded, "Patient?address-state=IL") == {"xds"}
    assert matches(loaded, "Patient?address-postalcode=3999") == {"example"}
    assert matches(loaded, "Patient?address-country=usa") == {"xds"}
    # Practitioner f203 and f204 are both in "Den helder"
    assert matches(loaded, "Practitioner?address-city=den") == {"f203", "f204"}
    # RelatedPerson: benedicte in Paris (FRA), peter at 534 Erewhon St, PleasantVille 3999
    assert matches(loaded, "RelatedPerson?address-city=PARIS") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?address-country=fra") == {"benedicte"}
    assert matches(loaded, "RelatedPerson?address-postalcode=3999") == {"peter"}
    # Person example and grahame share the PleasantVille address
    assert matches(loaded, "Person?address-city=pleasantville") == {"example", "grahame"}


# ---------------------------------------------------------------------------------------------
# token


def test_token_code_and_coding(loaded: TestClient) -> None:
    # Observation.code codings (see the files): 8302-2 in body-height and body-length
    assert matches(loaded, "Observation?code=http://loinc.org|8302-2") == {
        "body-height",
        "body-length",
    }
    assert matches(loaded, "Observation?code=8302-2") == {"body-height", "body-length"}
    assert matches(loaded, "Observation?code=http://snomed.info/sct|8302-2") == set()
    # body-weight is coded with the acme system in Observation/example
    assert matches(
        loaded, "Observation?code=http://acme.org/devices/clinical-codes|body-weight"
    ) == {"example"}
    assert matches(loaded, "Observation?code=|body-weight") == set()
    genotype = {
        "example-TPMT-diplotype",
        "example-TPMT-haplotype-one",
        "example-TPMT-haplotype-two",
        "example-diplotype1",
    }
    assert matches(loaded, "Observation?code=http://snomed.info/sct|363779003") == genotype
    # every Observation with a SNOMED coding in code
    assert matches(loaded, "Observation?code=http://snomed.info/sct|") == genotype | {
        "example",
        "trachcare",
        "vomiting",
    }
    # every Observation with a LOINC coding in code
    assert matches(loaded, "Observation?code=http://loinc.org|") == {
        "bgpanel", "blood-pressure", "bloodgroup", "bmd", "bmi-using-related", "bmi",
        "body-height", "body-length", "body-temperature", "date-lastmp", "example",
        "head-circumference", "heart-rate", "mbp", "respiratory-rate", "rhstatus", "vomiting",
    }  # fmt: skip
    assert matches(loaded, "Observation?category=laboratory") == {
        "bgpanel",
        "bloodgroup",
        "rhstatus",
    }
    assert matches(loaded, "Observation?category=vital-signs") == {
        "blood-pressure", "bmi-using-related", "bmi", "body-height", "body-length",
        "body-temperature", "example", "head-circumference", "heart-rate", "mbp",
        "respiratory-rate",
    }  # fmt: skip
    assert matches(loaded, "Observation?value-concept=http://snomed.info/sct|112144000") == {
        "bloodgroup",
        "rhstatus",
    }
    assert matches(loaded, "Observation?value-concept:missing=false") == {
        "bloodgroup", "example-TPMT-haplotype-one", "example-TPMT-haplotype-two",
        "example-genetics-5", "rhstatus", "vomiting",
    }  # fmt: skip


def test_token_code_not_and_text(loaded: TestClient) -> None:
    # status: the two haplotype calls are `unknown`, every other Observation is `final`
    haplotypes = {"example-TPMT-haplotype-one", "example-TPMT-haplotype-two"}
    assert matches(loaded, "Observation?status=unknown") == haplotypes
    assert matches(loaded, "Observation?status:not=final") == haplotypes
    # :text matches CodeableConcept.text: "Blood Group" (bloodgroup, rhstatus) and "Blood Group
    # Panel" (bgpanel); "Blood pressure ..." does not start with it
    assert matches(loaded, "Observation?code:text=blood group") == {
        "bgpanel",
        "bloodgroup",
        "rhstatus",
    }
    # ... and Coding.display: Observation/example has no text; displays "Body Weight", ...
    assert matches(loaded, "Observation?code:text=body weight") == {"example"}


def test_token_text_searches_text_and_display(loaded: TestClient) -> None:
    # body-height has text "Body height"; body-length has text "Body Length" and a coding
    # displayed "Body height": :text searches CodeableConcept.text and Coding.display
    # (search.html#modifiers)
    assert matches(loaded, "Observation?code:text=body height") == {"body-height", "body-length"}


def test_token_boolean_and_code(loaded: TestClient) -> None:
    # active: true everywhere except infant-mom and newborn, which have no `active`
    no_active = {"infant-mom", "newborn"}
    assert matches(loaded, "Patient?active=true") == ALL_PATIENTS - no_active
    assert matches(loaded, "Patient?active=false") == set()
    assert matches(loaded, "Patient?active:missing=true") == no_active
    assert matches(loaded, "Patient?active:missing=false") == ALL_PATIENTS - no_active
    # :not includes the resources without a value
    assert matches(loaded, "Patient?active:not=true") == no_active
    female = {"genetics-example1", "infant-mom", "pat4", "proband"}
    assert matches(loaded, "Patient?gender=female") == female
    assert matches(loaded, "Patient?gender:missing=true") == {"ihe-pcd"}
    assert matches(loaded, "Patient?gender:not=male") == female | {"ihe-pcd"}
    # deceased: pat3 has a deceasedDateTime, pat4 deceasedBoolean true
    assert matches(loaded, "Patient?deceased=true") == {"pat3", "pat4"}


def test_token_identifier(loaded: TestClient) -> None:
    # example: urn:oid:1.2.36.146.595.217.0.1|12345 (type MR); xcda urn:oid:2.16.840.1.113883.19.5
    # |12345 (MR); pat3/pat4 urn:oid:0.1.2.3.4.5.6.7|123457/123458; ihe-pcd AB60001, no system;
    # genetics-example1 http://hl7.org/fhir/sid/us-ssn|444222222 (type SS)
    assert matches(loaded, "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345") == {"example"}
    assert matches(loaded, "Patient?identifier=12345") == {"example", "xcda"}
    assert matches(loaded, "Patient?identifier=urn:oid:0.1.2.3.4.5.6.7|") == {"pat3", "pat4"}
    assert matches(loaded, "Patient?identifier=|AB60001") == {"ihe-pcd"}
    assert matches(loaded, "Patient?identifier=|12345") == set()
    assert matches(loaded, "Patient?identifier=123457,123458") == {"pat3", "pat4"}
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert matches(loaded, f"Patient?identifier:of-type={v2}|MR|12345") == {"example", "xcda"}
    assert matches(loaded, f"Patient?identifier:of-type={v2}|SS|444222222") == {"genetics-example1"}
    assert matches(loaded, f"Patient?identifier:of-type={v2}|MR|444222222") == set()


def test_token_contact_point(loaded: TestClient) -> None:
    # Patient/example phones: (03) 5555 6473 (work), (03) 3410 5613 (mobile), (03) 5555 8834
    assert matches(loaded, "Patient?telecom=(03) 5555 6473") == {"example"}
    assert matches(loaded, "Patient?phone=(03) 3410 5613") == {"example"}
    assert matches(loaded, "Patient?phone=555-555-2003") == {"genetics-example1"}
    assert matches(loaded, "Patient?email=(03) 5555 6473") == set()
    # Person example and grahame share the work phone; only example has an email
    assert matches(loaded, "Person?telecom=(03) 5555 6473") == {"example", "grahame"}
    assert matches(loaded, "Person?email=Jim@example.org") == {"example"}
    assert matches(loaded, "Practitioner?email=john.doe@healthcare.example.org") == {"xcda1"}
    # RelatedPerson f001: phone 0690383372, email s.abels@kpn.nl; benedicte +33 (237) 998327
    assert matches(loaded, "RelatedPerson?email=s.abels@kpn.nl") == {"f001"}
    assert matches(loaded, "RelatedPerson?telecom=s.abels@kpn.nl") == {"f001"}
    assert matches(loaded, "RelatedPerson?phone=s.abels@kpn.nl") == set()
    assert matches(loaded, "RelatedPerson?phone=0690383372") == {"f001"}
    assert matches(loaded, "RelatedPerson?phone=+33 (237) 998327") == {"benedicte"}


# ---------------------------------------------------------------------------------------------
# reference


def test_reference_forms(loaded: TestClient) -> None:
    for value in (
        "Patient/example",
        "example",
        "http://testserver/fhir/Patient/example",
    ):
        assert matches(loaded, f"Observation?subject={value}") == OBS_OF_EXAMPLE, value
    assert matches(loaded, "Observation?subject:Patient=example") == OBS_OF_EXAMPLE
    assert matches(loaded, "Observation?subject:Group=example") == set()
    # subject Patient/infant (not stored itself)
    assert matches(loaded, "Observation?subject=Patient/infant") == {
        "bgpanel", "bloodgroup", "rhstatus", "trachcare", "vomiting",
    }  # fmt: skip
    assert matches(loaded, "Observation?patient=pat2") == {"bmd", "date-lastmp"}
    # performer Practitioner/example: blood-pressure, example-genetics-3, example-genetics-5;
    # 656's performer is Patient/PatientId-patientId
    performed = {"blood-pressure", "example-genetics-3", "example-genetics-5"}
    assert matches(loaded, "Observation?performer=Practitioner/example") == performed
    assert matches(loaded, "Observation?performer:Practitioner=example") == performed
    assert matches(loaded, "Observation?performer:Organization=example") == set()
    assert matches(loaded, "Observation?performer:Patient=PatientId-patientId") == {"656"}
    assert matches(loaded, "Observation?has-member=Observation/bloodgroup") == {"bgpanel"}
    assert matches(loaded, "Observation?derived-from=Observation/example") == {"bmi-using-related"}
    assert matches(loaded, "Encounter?practitioner=example") == {"home"}
    # an absolute reference to another server is matched by its URL
    assert matches(loaded, "QuestionnaireResponse?subject=http://hl7.org/fhir/Patient/proband") == {
        "ussg-fht-answers"
    }


def test_reference_missing_and_identifier(loaded: TestClient) -> None:
    # only trachcare has a focus, only example-diplotype1 a specimen
    assert matches(loaded, "Observation?focus:missing=false") == {"trachcare"}
    assert matches(loaded, "Observation?focus:missing=true") == ALL_OBSERVATIONS - {"trachcare"}
    assert matches(loaded, "Observation?specimen:missing=false") == {"example-diplotype1"}
    # managingOrganization absent on ihe-pcd, infant-mom, newborn, proband
    assert matches(loaded, "Patient?organization:missing=true") == {
        "ihe-pcd", "infant-mom", "newborn", "proband",
    }  # fmt: skip
    assert matches(loaded, "Patient?general-practitioner:missing=false") == {"glossy", "infant-mom"}
    # blood-pressure.basedOn is a logical reference: identifier https://acme.org/identifiers|1234
    assert matches(loaded, "Observation?based-on:identifier=https://acme.org/identifiers|1234") == {
        "blood-pressure"
    }
    assert matches(loaded, "Observation?based-on:identifier=1234") == {"blood-pressure"}
    assert (
        matches(loaded, "Observation?based-on:identifier=https://acme.org/identifiers|9") == set()
    )


def test_reference_canonical(loaded: TestClient) -> None:
    # MeasureReport.measure of hiv-indicators: http://ohie.org/Measure/hiv-indicators
    assert matches(loaded, "MeasureReport?measure=http://ohie.org/Measure/hiv-indicators") == {
        "hiv-indicators"
    }
    # canonical references with a version (search.html#versions)
    canon = "http://example.org/Questionnaire/canon"
    for rid, q in (
        ("canon-v1", f"{canon}|1.0"),
        ("canon-v2", f"{canon}|2.0"),
        ("canon-nov", canon),
        ("canon-other", f"{canon}ical|1.0"),
    ):
        put(
            loaded,
            {"resourceType": "QuestionnaireResponse", "id": rid, "status": "completed",
             "questionnaire": q},
        )  # fmt: skip
    assert matches(loaded, f"QuestionnaireResponse?questionnaire={canon}") == {
        "canon-v1",
        "canon-v2",
        "canon-nov",
    }
    assert matches(loaded, f"QuestionnaireResponse?questionnaire={canon}|2.0") == {"canon-v2"}
    assert matches(loaded, f"QuestionnaireResponse?questionnaire={canon}|3.0") == set()


def test_reference_canonical_relative(loaded: TestClient) -> None:
    # QuestionnaireResponse.questionnaire: gcs -> "Questionnaire/gcs", ussg-fht-answers ->
    # "Questionnaire/ussg-fht"; MeasureReport.measure of the three cms146 reports:
    # "Measure/CMS146". The search value is the stored canonical, character for character.
    assert matches(loaded, "QuestionnaireResponse?questionnaire=Questionnaire/gcs") == {"gcs"}
    assert matches(loaded, "MeasureReport?measure=Measure/CMS146") == {
        "measurereport-cms146-cat1-example",
        "measurereport-cms146-cat2-example",
        "measurereport-cms146-cat3-example",
    }


# ---------------------------------------------------------------------------------------------
# quantity


def test_quantity(loaded: TestClient) -> None:
    # valueQuantity: 656 820 265201, bmd 0.887 g/cm-2, bmi and bmi-using-related 16.2 kg/m2,
    # body-height 66.899999999999991 [in_i], body-length 25 cm, body-temperature 36.5 Cel,
    # example 185 [lb_av], head-circumference 51.2 cm, heart-rate 44 /min, mbp 80 mm[Hg],
    # respiratory-rate 26 /min
    vq = "Observation?value-quantity="
    assert matches(loaded, vq + "16.2") == {"bmi", "bmi-using-related"}
    assert matches(loaded, vq + "16.2|http://unitsofmeasure.org|kg/m2") == {
        "bmi",
        "bmi-using-related",
    }
    assert matches(loaded, vq + "16.2||kg/m2") == {"bmi", "bmi-using-related"}
    assert matches(loaded, vq + "16.2|http://unitsofmeasure.org|cm") == set()
    # 66.9 covers [66.85, 66.95); 44.0 covers [43.95, 44.05)
    assert matches(loaded, vq + "66.9") == {"body-height"}
    assert matches(loaded, vq + "44.0") == {"heart-rate"}
    # 16 covers [15.5, 16.5), which holds 16.2; 16.20 covers [16.195, 16.205); 17 nothing
    assert matches(loaded, vq + "16") == {"bmi", "bmi-using-related"}
    assert matches(loaded, vq + "16.20") == {"bmi", "bmi-using-related"}
    assert matches(loaded, vq + "17") == set()
    assert matches(loaded, vq + "gt100") == {"656", "example"}
    assert matches(loaded, vq + "ge185||[lb_av]") == {"example"}
    assert matches(loaded, vq + "gt100|http://unitsofmeasure.org|[lb_av]") == {"example"}
    assert matches(loaded, vq + "25|http://unitsofmeasure.org|cm") == {"body-length"}
    assert matches(loaded, vq + "820|urn:iso:std:iso:11073:10101|265201") == {"656"}
    # the unit may also be given as Quantity.unit
    assert matches(loaded, vq + "44||beats/minute") == {"heart-rate"}
    assert matches(loaded, "Observation?value-quantity:missing=false") == {
        "656", "bmd", "bmi-using-related", "bmi", "body-height", "body-length",
        "body-temperature", "example", "head-circumference", "heart-rate", "mbp",
        "respiratory-rate",
    }  # fmt: skip


def test_quantity_number_only_compares_the_stored_value(loaded: TestClient) -> None:
    # without a unit the number is compared with Quantity.value as written: only bmd (0.887)
    # is below 1; body-length is 25 cm and head-circumference 51.2 cm (not 0.25 or 0.512 m)
    vq = "Observation?value-quantity="
    assert matches(loaded, vq + "lt1") == {"bmd"}
    assert matches(loaded, vq + "0.25") == set()
    assert matches(loaded, vq + "0.512") == set()
    # le26: bmd 0.887, bmi 16.2 (twice), body-length 25, respiratory-rate 26 (not
    # head-circumference, 51.2 cm)
    assert matches(loaded, vq + "le26") == {
        "bmd", "bmi", "bmi-using-related", "body-length", "respiratory-rate",
    }  # fmt: skip
    # AND of two bounds on the same value: only heart-rate (44) lies between 40 and 50
    assert matches(loaded, vq + "gt40&value-quantity=lt50") == {"heart-rate"}
    # with a UCUM unit, comparing in canonical units is allowed: 25 cm is 0.25 m
    assert matches(loaded, vq + "25|http://unitsofmeasure.org|cm") == {"body-length"}


# ---------------------------------------------------------------------------------------------
# uri


def test_uri(loaded: TestClient) -> None:
    # Questionnaire.url: 3141, bb, f201 under http://hl7.org/fhir/Questionnaire/;
    # zika-virus-exposure-assessment under http://example.org/; phq-9-questionnaire has none
    hl7 = "http://hl7.org/fhir/Questionnaire"
    assert matches(loaded, f"Questionnaire?url={hl7}/bb") == {"bb"}
    assert matches(loaded, f"Questionnaire?url={hl7}") == set()
    assert matches(loaded, f"Questionnaire?url:below={hl7}") == {"3141", "bb", "f201"}
    assert matches(loaded, "Questionnaire?url:below=http://example.org") == {
        "zika-virus-exposure-assessment"
    }
    assert matches(loaded, f"Questionnaire?url:above={hl7}/bb/extra") == {"bb"}
    assert matches(loaded, "Questionnaire?url:missing=true") == {"phq-9-questionnaire"}
    # meta.profile (Resource _profile, a uri): the eight vital-signs Observations
    vitals = {
        "blood-pressure", "bmi", "body-height", "body-length", "body-temperature",
        "head-circumference", "heart-rate", "respiratory-rate",
    }  # fmt: skip
    profile = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    assert matches(loaded, f"Observation?_profile={profile}") == vitals
    assert matches(
        loaded, "Observation?_profile:below=http://hl7.org/fhir/StructureDefinition"
    ) == (vitals)
    assert matches(
        loaded, "Questionnaire?_profile=http://hl7.org/fhir/StructureDefinition/cqf-questionnaire"
    ) == {"phq-9-questionnaire"}


# ---------------------------------------------------------------------------------------------
# composite


def test_composite(loaded: TestClient) -> None:
    cvq = "Observation?code-value-quantity="
    assert matches(loaded, cvq + "http://loinc.org|8867-4$44") == {"heart-rate"}
    assert matches(loaded, cvq + "8867-4$gt40") == {"heart-rate"}
    assert matches(loaded, cvq + "8867-4$lt40") == set()
    assert matches(loaded, cvq + "39156-5$16.2|http://unitsofmeasure.org|kg/m2") == {
        "bmi",
        "bmi-using-related",
    }
    # the code of one Observation with the value of another
    assert matches(loaded, cvq + "8867-4$16.2") == set()
    # OR of two pairs
    assert matches(loaded, cvq + "8867-4$44,9279-1$26") == {"heart-rate", "respiratory-rate"}
    # blood-pressure components: 8480-6 (and SNOMED 271649006, acme bp-s) = 107 mm[Hg],
    # 8462-4 = 60 mm[Hg]
    ccvq = "Observation?component-code-value-quantity="
    assert matches(loaded, ccvq + "http://loinc.org|8480-6$107") == {"blood-pressure"}
    assert matches(loaded, ccvq + "8462-4$60") == {"blood-pressure"}
    assert matches(loaded, ccvq + "8480-6$gt100") == {"blood-pressure"}
    assert matches(
        loaded,
        ccvq + "http://acme.org/devices/clinical-codes|bp-s$107|http://unitsofmeasure.org|mm[Hg]",
    ) == {"blood-pressure"}
    # code of the systolic component, value of the diastolic one: no single component has both
    assert matches(loaded, ccvq + "http://loinc.org|8480-6$60") == set()
    assert matches(loaded, ccvq + "8462-4$107") == set()
    assert matches(loaded, "Observation?combo-code-value-quantity=8480-6$107") == {"blood-pressure"}
    # code + CodeableConcept value: bloodgroup and rhstatus (883-9, SNOMED 112144000)
    assert matches(
        loaded,
        "Observation?code-value-concept=http://loinc.org|883-9$http://snomed.info/sct|112144000",
    ) == {"bloodgroup", "rhstatus"}
    # MolecularSequence.variant: chromosome-variant-coordinate is chromosome$start$end, and
    # the chromosome is on referenceSeq; window coordinates: graphic-example-4 is chromosome 2
    # with window 128273736..128273740
    assert matches(
        loaded, "MolecularSequence?chromosome-window-coordinate=2$128273736$128273740"
    ) == {"graphic-example-4"}
    assert (
        matches(loaded, "MolecularSequence?chromosome-window-coordinate=2$128273732$128273740")
        == set()
    )


def test_combo_parameters_read_their_parts(loaded: TestClient) -> None:
    """R4's Observation combo-* parameters are the unions of their parts (combo-code is
    `Observation.code | Observation.component.code`), searched through the parts' rows. In the
    examples only blood-pressure has components: code 85354-9, components 8480-6 (also SNOMED
    271649006 and acme bp-s) = 107 mm[Hg] and 8462-4 = 60 mm[Hg]; heart-rate is 8867-4 = 44
    /min."""
    assert matches(loaded, "Observation?code=8480-6") == set()
    assert matches(loaded, "Observation?combo-code=8480-6") == {"blood-pressure"}
    assert matches(loaded, "Observation?combo-code=85354-9") == {"blood-pressure"}
    assert matches(loaded, "Observation?combo-code=8867-4,8462-4") == {
        "heart-rate", "blood-pressure",
    }  # fmt: skip
    assert matches(loaded, "Observation?combo-code:missing=true&code=8867-4") == set()
    assert matches(loaded, "Observation?value-quantity=107") == set()
    assert matches(loaded, "Observation?combo-value-quantity=107|http://unitsofmeasure.org|"
                           "mm[Hg]") == {"blood-pressure"}  # fmt: skip
    assert matches(loaded, "Observation?combo-value-quantity=44||/min") == {"heart-rate"}
    # a pair within the Observation or within one component, never across the two
    assert matches(loaded, "Observation?combo-code-value-quantity=8867-4$44") == {"heart-rate"}
    assert matches(loaded, "Observation?combo-code-value-quantity=85354-9$107") == set()
    assert matches(loaded, "Observation?combo-code-value-quantity=8462-4$107") == set()
    # sorted by the greatest code (search.html#sort): bp-s is a component's, so combo-code
    # puts blood-pressure first where code (85354-9 < 8867-4) puts it last
    both = "Observation?_id=blood-pressure,heart-rate&_sort="
    in_order = [e["resource"]["id"] for e in search(loaded, both + "-combo-code")["entry"]]
    assert in_order == ["blood-pressure", "heart-rate"]
    in_order = [e["resource"]["id"] for e in search(loaded, both + "-code")["entry"]]
    assert in_order == ["heart-rate", "blood-pressure"]
    # their rows are not stored: no index row names a union
    database = loaded.app.state.services.settings.database  # type: ignore[attr-defined]
    with closing(sqlite3.connect(database)) as db:
        stored = [db.execute(f"SELECT count(*) FROM idx_{table} WHERE param GLOB 'combo-*'"
                             ).fetchone()[0] for table in ("token", "quantity")]  # fmt: skip
    assert stored == [0, 0]


# ---------------------------------------------------------------------------------------------
# common parameters


def test_id(loaded: TestClient) -> None:
    assert matches(loaded, "Patient?_id=example,pat3") == {"example", "pat3"}
    assert matches(loaded, "Patient?_id=example&_id=pat3") == set()
    assert matches(loaded, "Patient?_id=nope") == set()
    # _id with another parameter: example has birthDate 1974-12-25
    assert matches(loaded, "Patient?_id=example,pat3&birthdate=1974") == {"example"}


def test_tag_security_source_profile(loaded: TestClient) -> None:
    # the examples carry no meta.tag/security/source: two Basic resources of our own
    tags, conf = (
        "http://example.org/tags",
        "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    )
    put(
        loaded,
        {
            "resourceType": "Basic",
            "id": "meta-1",
            "code": {"text": "meta test"},
            "meta": {
                "tag": [{"system": tags, "code": "vip"}],
                "security": [{"system": conf, "code": "R"}],
                "source": "http://example.org/source#feed1",
                "profile": ["http://example.org/StructureDefinition/basic-x"],
            },
        },
    )
    put(
        loaded,
        {
            "resourceType": "Basic",
            "id": "meta-2",
            "code": {"text": "meta test"},
            "meta": {
                "tag": [{"system": tags, "code": "routine"}, {"code": "untagged-system"}],
                "security": [{"system": conf, "code": "N"}],
                "source": "http://example.org/source#feed2",
            },
        },
    )
    mine = "&_id=meta-1,meta-2"
    assert matches(loaded, f"Basic?_tag={tags}|vip{mine}") == {"meta-1"}
    assert matches(loaded, f"Basic?_tag={tags}|{mine}") == {"meta-1", "meta-2"}
    assert matches(loaded, f"Basic?_tag=|untagged-system{mine}") == {"meta-2"}
    assert matches(loaded, f"Basic?_tag:not={tags}|vip{mine}") == {"meta-2"}
    assert matches(loaded, f"Basic?_security={conf}|R{mine}") == {"meta-1"}
    assert matches(loaded, f"Basic?_security=N{mine}") == {"meta-2"}
    assert matches(loaded, f"Basic?_source=http://example.org/source#feed2{mine}") == {"meta-2"}
    assert matches(
        loaded, f"Basic?_profile=http://example.org/StructureDefinition/basic-x{mine}"
    ) == {"meta-1"}
    assert matches(loaded, f"Basic?_profile:missing=true{mine}") == {"meta-2"}


# ---------------------------------------------------------------------------------------------
# OR, AND, escaping


def test_or_and(loaded: TestClient) -> None:
    assert matches(loaded, "Patient?family=levin,doe") == {"glossy", "xcda", "xds"}
    assert matches(loaded, "Patient?given=peter&family=chalmers") == {"example"}
    # AND of two values of a repeating element: both of example's names
    assert matches(loaded, "Patient?name=peter&name=jim") == {"example"}
    assert matches(loaded, "Patient?name=peter&name=simon") == set()
    # body-length has both 8302-2 and 8306-3
    assert matches(loaded, "Observation?code=8302-2&code=8306-3") == {"body-length"}
    assert matches(loaded, "Patient?birthdate=ge1970&birthdate=lt1980") == {
        "example",
        "genetics-example1",
    }
    assert matches(loaded, "Patient?birthdate=1974-12-25,1966") == {"example", "proband"}
    assert matches(loaded, "Patient?gender=female&birthdate=1982") == {"pat4"}


def test_escaping(loaded: TestClient) -> None:
    # RelatedPerson/benedicte line: "43, Place du Marché Sainte Catherine"
    assert matches(loaded, "RelatedPerson?address=43\\, place") == {"benedicte"}
    esc = "urn:test:escape"
    for rid, value in (
        ("esc-comma", "a,b"),
        ("esc-a", "a"),
        ("esc-pipe", "c|d"),
        ("esc-bs", "e\\f"),
    ):
        put(
            loaded,
            {"resourceType": "Basic", "id": rid, "code": {"text": "escape test"},
             "identifier": [{"system": esc, "value": value}]},
        )  # fmt: skip
    assert matches(loaded, f"Basic?identifier={esc}|a\\,b") == {"esc-comma"}
    assert matches(loaded, f"Basic?identifier={esc}|a,{esc}|b") == {"esc-a"}
    assert matches(loaded, f"Basic?identifier={esc}|c\\|d") == {"esc-pipe"}
    assert matches(loaded, "Basic?identifier=c\\|d") == {"esc-pipe"}
    assert matches(loaded, f"Basic?identifier={esc}|e\\\\f") == {"esc-bs"}
    # `$` inside a composite component: Group.characteristic code t-esc, value x$y
    put(
        loaded,
        {
            "resourceType": "Group",
            "id": "esc-dollar",
            "type": "person",
            "actual": False,
            "characteristic": [
                {
                    "code": {"coding": [{"system": esc, "code": "t-esc"}]},
                    "valueCodeableConcept": {"coding": [{"system": esc, "code": "x$y"}]},
                    "exclude": False,
                }
            ],
        },
    )
    assert matches(loaded, "Group?characteristic-value=t-esc$x\\$y") == {"esc-dollar"}
    assert matches(loaded, f"Group?characteristic-value={esc}|t-esc${esc}|x\\$y") == {"esc-dollar"}
    assert matches(loaded, "Group?characteristic-value=t-esc$x") == set()


# ---------------------------------------------------------------------------------------------
# chains, _has, _include, _revinclude, compartments


def test_chains(loaded: TestClient) -> None:
    # Encounter/xcda -> Patient/xcda -> Organization/2.16.840.1.113883.19.5 "Good Health
    # Clinic"; glossy and xds belong to Organization/2 ("XYZ Insurance") and have no Encounter
    assert matches(loaded, "Encounter?subject:Patient.name=levin") == {"xcda"}
    assert matches(loaded, "Encounter?subject:Patient.organization.name=good health") == {"xcda"}
    # Group has no `organization`, so Patient is the only possible target
    assert matches(loaded, "Encounter?subject.organization.name=good") == {"xcda"}
    assert matches(loaded, "Encounter?subject:Patient.organization.name=xyz") == set()
    assert matches(loaded, "DocumentReference?subject:Patient.organization.name=good") == {
        "example"
    }
    assert matches(loaded, "Composition?subject:Patient.organization.name=good") == {"example"}
    # bmi-using-related derives from Observation/example, example-TPMT-diplotype from the two
    # haplotype calls: all three have subject Patient/example (Chalmers). The other sources
    # (Observation/bodyheight, example-haplotype1, ...) are not stored.
    assert matches(
        loaded, "Observation?derived-from:Observation.subject:Patient.family=chalmers"
    ) == {"bmi-using-related", "example-TPMT-diplotype"}
    assert (
        matches(loaded, "Observation?derived-from:Observation.subject:Patient.family=levin")
        == set()
    )
    # chain to a stored identifier: Patient/example has urn:oid:1.2.36.146.595.217.0.1|12345
    assert matches(
        loaded, "Encounter?subject:Patient.identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
    ) == {"emerg", "example", "home"}


def test_has(loaded: TestClient) -> None:
    # heart-rate (8867-4) is about Patient/example
    assert matches(loaded, "Patient?_has:Observation:patient:code=8867-4") == {"example"}
    # Patient/infant is not stored, so the blood group Observations find no Patient
    assert matches(loaded, "Patient?_has:Observation:patient:code=883-9") == set()
    # RelatedPerson/newborn-mom points to Patient/newborn
    assert matches(loaded, "Patient?_has:RelatedPerson:patient:name=everywoman") == {"newborn"}
    # finished Encounters: home (Practitioner/example), xcda (Practitioner/xcda1), f201
    # (Practitioner/f201, not stored)
    assert matches(loaded, "Practitioner?_has:Encounter:practitioner:status=finished") == {
        "example",
        "xcda1",
    }


def test_has_nested(loaded: TestClient) -> None:
    # Patients of an Observation from which a BMI (39156-5) was derived:
    # bmi-using-related -derived-from-> Observation/example -subject-> Patient/example
    nested = "Patient?_has:Observation:patient:_has:Observation:derived-from:code="
    assert matches(loaded, nested + "39156-5") == {"example"}
    # example-TPMT-diplotype (363779003) derives from the two haplotype calls (Patient/example)
    assert matches(loaded, nested + "363779003") == {"example"}
    assert matches(loaded, nested + "8867-4") == set()


def test_include(loaded: TestClient) -> None:
    bundle = search(loaded, "Observation?_id=heart-rate&_include=Observation:subject")
    assert {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"} == {
        "heart-rate"
    }
    assert bundle["total"] == 1  # includes are not counted
    assert included(bundle) == {"Patient/example"}
    # target type: Encounter/home has subject Patient/example and participant
    # Practitioner/example
    base = "Encounter?_id=home&_include=Encounter:participant"
    assert included(search(loaded, base + ":Practitioner")) == {"Practitioner/example"}
    assert included(search(loaded, base + ":RelatedPerson")) == set()
    assert included(search(loaded, base)) == {"Practitioner/example"}
    # :iterate follows references of included resources: Encounter/xcda -> Patient/xcda ->
    # Organization/2.16.840.1.113883.19.5; without it Patient:organization does not apply
    # to an Encounter search
    q = "Encounter?_id=xcda&_include=Encounter:subject&_include"
    assert included(search(loaded, q + ":iterate=Patient:organization")) == {
        "Patient/xcda",
        "Organization/2.16.840.1.113883.19.5",
    }
    assert included(search(loaded, q + "=Patient:organization")) == {"Patient/xcda"}
    # bmi-using-related derives from Observation/example (stored) and Observation/bodyheight
    # (not stored)
    bundle = search(
        loaded,
        "Observation?_id=bmi-using-related&_include=Observation:derived-from:Observation",
    )
    assert included(bundle) == {"Observation/example"}


def test_revinclude(loaded: TestClient) -> None:
    bundle = search(loaded, "Patient?_id=xcda&_revinclude=Encounter:subject")
    assert bundle["total"] == 1
    assert included(bundle) == {"Encounter/xcda"}
    # Group/102 lists pat3 and pat4 as members
    assert included(search(loaded, "Patient?_id=pat3&_revinclude=Group:member")) == {"Group/102"}
    org = "Organization?_id=2.16.840.1.113883.19.5&_revinclude=Patient:organization"
    assert included(search(loaded, org)) == {"Patient/xcda"}
    assert included(search(loaded, org + "&_revinclude:iterate=Encounter:subject")) == {
        "Patient/xcda",
        "Encounter/xcda",
    }
    assert included(search(loaded, org + "&_revinclude=Encounter:subject")) == {"Patient/xcda"}


def test_compartment(loaded: TestClient) -> None:
    # Observation is in the Patient compartment through subject and performer; no Observation
    # has Patient/example as performer
    assert matches(loaded, "Patient/example/Observation") == OBS_OF_EXAMPLE
    assert matches(loaded, "Patient/example/Observation?code=8867-4") == {"heart-rate"}
    assert matches(loaded, "Patient/example/Encounter") == {"emerg", "example", "home"}
    # 656 has Patient/PatientId-patientId as subject and performer
    assert matches(loaded, "Patient/PatientId-patientId/Observation") == {"656"}
    assert matches(loaded, "Patient/nobody/Observation") == set()
