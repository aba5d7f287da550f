"""The ADT segments beyond PID/PV1 end to end over a real MLLP socket: DG1 -> Condition (and
Encounter.diagnosis), AL1 -> AllergyIntolerance, PR1 (+ROL) -> Procedure, IN1/IN2 -> Coverage
(+ payor Organization, subscriber), PD1/ROL -> Patient.generalPractitioner, ROL after PV1 ->
Encounter.participant. Expectations are written from the v2-to-FHIR IG 1.0.0 segment maps (the
row each comes from is named) and HL7 v2.4 tables, for the sample
integrations/hl7v2/samples/adt_a01_admit_clinical.hl7."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mllp_harness import Harness, fields, listeners, sample, without_ids

from fhir_server.referral.codes import SID
from fhir_server.services import Parts
from integrations.hl7v2.worker import CHANNEL

V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ADMIT = "adt_a01_admit_clinical.hl7"
#: every type the sample writes
TYPES = ("Patient", "Encounter", "Condition", "AllergyIntolerance", "Procedure", "Coverage",
         "Organization", "Practitioner", "PractitionerRole", "RelatedPerson", "Provenance",
         "MessageHeader")  # fmt: skip


@pytest.fixture
def hl7_with(tmp_path: Path, parts: Parts) -> Iterator[Callable[..., Harness]]:
    """A listener over its own database, with the settings given."""
    yield from listeners(tmp_path, parts)


@pytest.fixture
def hl7(hl7_with: Callable[..., Harness]) -> Harness:
    return hl7_with()


def msa(ack: str) -> list[str]:
    return fields(ack, "MSA")


def counts(hl7: Harness) -> dict[str, int]:
    return {t: len(hl7.search(f"{t}?_count=200")) for t in TYPES}


def by_identifier(hl7: Harness, rtype: str, value: str) -> dict[str, Any]:
    [found] = [r for r in hl7.search(f"{rtype}?_count=200")
               if any(i.get("value") == value for i in r.get("identifier", []))]  # fmt: skip
    return found


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def test_an_admission_with_diagnoses_allergies_a_procedure_and_insurance(hl7: Harness) -> None:
    assert msa(hl7.send(sample(ADMIT)))[1:3] == ["AA", "ADT20240310-0101"]
    assert hl7.wait_mapped()["mapped"] == 1
    [patient] = hl7.search("Patient?identifier=0007654321")
    [encounter] = hl7.search("Encounter?identifier=ZY2024031000456")
    doctor = {p["identifier"][0]["value"]: p for p in hl7.search("Practitioner?_count=50")}
    # PV1-7 D0012 (no authority: the sending facility's) and ROL-4/DG1-16 D0012^...^HZFIRST
    # are one doctor; PD1-4 G0031, ROL-4 D0101, PR1-11 D0205: four Practitioners
    assert sorted(doctor) == ["D0012", "D0101", "D0205", "G0031"]

    # --- DG1[Condition] ---------------------------------------------------------------------
    # no DG1-20: identified by visit (PV1-19, authority HZFIRST), DG1-3.3 and DG1-3.1
    mi = by_identifier(hl7, "Condition", "visit/ZY2024031000456/I10/I21.900")
    assert without_ids(mi) == {
        "resourceType": "Condition",
        "identifier": [{"system": f"{SID}hl7v2-diagnosis/HZFIRST",
                        "value": "visit/ZY2024031000456/I10/I21.900"}],
        # the task's category for a diagnosis of a visit (the IG maps none)
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        # DG1-3 -> code (CWE[CodeableConcept]); CWE.3 I10 (table 0396) is ICD-10; CWE.2 text
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.900",
                             "display": "急性心肌梗死"}], "text": "急性心肌梗死"},
        "subject": {"reference": "Patient"},  # message map: Condition.subject = Patient[1]
        "encounter": {"reference": "Encounter"},  # "in context of an encounter"
        "onsetDateTime": "2024-03-10T08:15:00+08:00",  # DG1-5 -> onsetDateTime
        "asserter": {"reference": "Practitioner", "display": "李明"},  # DG1-16 XCN
    }
    assert mi["subject"]["reference"] == ref(patient)
    assert mi["encounter"]["reference"] == ref(encounter)
    assert mi["asserter"]["reference"] == ref(doctor["D0012"])
    diabetes = by_identifier(hl7, "Condition", "visit/ZY2024031000456/I10/E11.900")
    assert diabetes["onsetDateTime"] == "2012"  # DG1-5 with the precision sent (a year)
    assert "asserter" not in diabetes  # no DG1-16

    # --- DG1[Encounter]: diagnosis.condition, .use (DG1-6 by DiagnosisType), .rank (DG1-15)
    assert encounter["diagnosis"] == [
        {"condition": {"reference": ref(mi)},
         # A -> diagnosis-role AD (the IG's DiagnosisType), then the v2 code (table 0052)
         "use": {"coding": [
             {"system": "http://terminology.hl7.org/CodeSystem/diagnosis-role", "code": "AD",
              "display": "Admission Diagnosis"},
             {"system": f"{V2}0052", "code": "A", "display": "Admitting"}], "text": "Admitting"},
         "rank": 1},
        # W (working) has no target in DiagnosisType: the v2 code of IS table 0052 alone
        {"condition": {"reference": ref(diabetes)},
         "use": {"coding": [{"system": f"{V2}0052", "code": "W"}]}, "rank": 2},
    ]
    # --- ROL after PV1 -> Encounter.participant (IG ROL[Encounter-PractitionerRole]) -------
    assert encounter["participant"][0]["individual"]["reference"] == ref(doctor["D0012"])  # PV1-7
    consultant = encounter["participant"][1]
    assert without_ids(consultant) == {
        # ROL-3 CP -> ProviderRole: v3 ParticipationType CON; the v2 code beside it
        "type": [{"coding": [
            {"system": V3_PARTICIPATION, "code": "CON", "display": "consultant"},
            {"system": f"{V2}0443", "code": "CP", "display": "Consulting Provider"}],
            "text": "Consulting Provider"}],
        "period": {"start": "2024-03-10T09:00:00+08:00"},  # ROL-5 -> participant.period.start
        "individual": {"reference": "PractitionerRole", "display": "王磊"},  # ROL-4
    }
    role = hl7.read(consultant["individual"]["reference"])
    assert role["practitioner"]["reference"] == ref(doctor["D0101"])
    # no ROL-1: the role is identified by ROL-4.1 and ROL-3.1 in ROL-4's authority
    assert role["identifier"] == [{"system": f"{SID}practitioner-role/HZFIRST",
                                   "value": "D0101/CP"}]

    # --- AL1[AllergyIntolerance] ------------------------------------------------------------
    penicillin = by_identifier(hl7, "AllergyIntolerance", "0007654321/ATC/J01CA")
    assert without_ids(penicillin) == {
        "resourceType": "AllergyIntolerance",
        # no identifier in AL1: patient (PID-3.1, authority HZFIRST) / AL1-3.3 / AL1-3.1
        "identifier": [{"system": f"{SID}hl7v2-allergy/HZFIRST",
                        "value": "0007654321/ATC/J01CA"}],
        # IG row "AL1": clinicalStatus active (constraint ait-1)
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "code": "active"}]},
        "type": "allergy",  # AL1-2 DA -> AllergyType allergy
        "category": ["medication"],  # AL1-2 DA -> AllergenType[...Category] medication
        # AL1-4 MO: AllergySeverity[criticality] maps only SV and MI: no criticality
        "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J01CA",  # AL1-3
                             "display": "青霉素类"}], "text": "青霉素类"},
        "patient": {"reference": "Patient"},  # message map: AllergyIntolerance.patient
        "onsetDateTime": "2015-06-11",  # AL1-6 -> onsetDateTime
        "reaction": [{"manifestation": [{"text": "皮疹"}]}],  # AL1-5 -> manifestation.text
    }
    seafood = by_identifier(hl7, "AllergyIntolerance", "0007654321//海鲜")
    assert seafood["category"] == ["food"] and seafood["criticality"] == "low"  # FA; MI -> low
    assert seafood["code"] == {"text": "海鲜"} and seafood["onsetDateTime"] == "2018"

    # --- PR1[Procedure] (+ the ROL of its PROCEDURE group) ----------------------------------
    [procedure] = hl7.search("Procedure?_count=10")
    assert without_ids(procedure) == {
        "resourceType": "Procedure",
        # no PR1-19: visit / PR1-3.3 / PR1-3.1 / PR1-5 as sent
        "identifier": [{"system": f"{SID}hl7v2-procedure/HZFIRST",
                        "value": "visit/ZY2024031000456/I9C/00.66/20240310093000+0800"}],
        "status": "unknown",  # IG row PR1: "if not clear, use unknown"
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "00.66",
                             "display": "经皮冠状动脉腔内血管成形术"}],  # PR1-3
                 "text": "经皮冠状动脉腔内血管成形术"},
        "subject": {"reference": "Patient"},
        "encounter": {"reference": "Encounter"},
        # PR1-7 valued and PR1-5 precise to the minute: performedPeriod.start = PR1-5,
        # .end = start + PR1-7 (90 minutes): 09:30 + 1:30 = 11:00
        "performedPeriod": {"start": "2024-03-10T09:30:00+08:00",
                            "end": "2024-03-10T11:00:00+08:00"},
        "performer": [
            # PR1-11 surgeon: performer[2], function SNOMED CT 304292004
            {"function": {"coding": [{"system": "http://snomed.info/sct", "code": "304292004"}]},
             "actor": {"reference": "Practitioner", "display": "张强"}},
            # the group's ROL (our choice): ROL-3 AT -> ProviderRole ATND as the function
            {"function": {"coding": [
                {"system": V3_PARTICIPATION, "code": "ATND", "display": "attender"},
                {"system": f"{V2}0443", "code": "AT", "display": "Attending"}],
                "text": "Attending"},
             "actor": {"reference": "PractitionerRole", "display": "李明"}},
        ],
    }
    assert procedure["performer"][0]["actor"]["reference"] == ref(doctor["D0205"])

    # --- IN1[Coverage] + IN2 ----------------------------------------------------------------
    basic = by_identifier(hl7, "Coverage", "H33010201234567")
    assert without_ids(basic) == {
        "resourceType": "Coverage",
        "identifier": [
            # IN1-36 policy number (our choice, first: it identifies the coverage), in the
            # system of the insurer (IN1-3.1)
            {"system": f"{SID}policy-number/330100", "value": "H33010201234567"},
            # IN2-61 patient member number, CX.5 MB (table 0203 "Member Number")
            {"type": {"coding": [{"system": f"{V2}0203", "code": "MB",
                                  "display": "Member Number"}]},
             "system": f"{SID}member-id/HZYB", "value": "A0123456789"},
            # IN1-2 -> identifier (CWE[Identifier]): .1 value, .3 system (99CHI: local, the
            # sending facility's code system)
            {"system": f"{SID}code/HZFIRST/99CHI", "value": "310"},
        ],
        "status": "active",
        "type": {"coding": [{"system": f"{SID}code/HZFIRST/99CHI", "code": "01",  # IN1-15
                             "display": "职工医保"}], "text": "职工医保"},
        "subscriber": {"reference": "Patient"},  # IN1-16 row "IF IN1-17 IS 'patient'"
        "beneficiary": {"reference": "Patient"},  # message map: Coverage.beneficiary
        # IN1-17 SEL -> Relationship ONESELF (v3 RoleCode), then the v2 code
        "relationship": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ONESELF",
             "display": "self"},
            {"system": f"{V2}0063", "code": "SEL", "display": "本人"}], "text": "本人"},
        "period": {"start": "2024-01-01", "end": "2024-12-31"},  # IN1-12, IN1-13
        "payor": [{"reference": "Organization", "display": "杭州市医疗保障局"}],  # IN1-4
    }
    assert basic["subscriber"]["reference"] == ref(patient)
    insurer = hl7.read(basic["payor"][0]["reference"])
    # IN1-4 XON.1 name, IN1-3 CX.1 the identifier in CX.4's system, IN1-5 XAD (B: work)
    assert without_ids(insurer) == {
        "resourceType": "Organization", "active": True,
        "identifier": [{"system": f"{SID}insurer-id/CHNHSA", "value": "330100"}],
        "name": "杭州市医疗保障局",
        "address": [{"use": "work", "text": "浙江省杭州市解放东路18号", "line": ["解放东路18号"],
                     "city": "杭州市", "state": "浙江省", "postalCode": "310016",
                     "country": "CHN"}],
    }
    private = by_identifier(hl7, "Coverage", "P2023-8866001")
    # IN1-17 SPO (not the patient): IN1-16 row subscriber(RelatedPerson)
    spouse = hl7.read(private["subscriber"]["reference"])
    assert spouse["resourceType"] == "RelatedPerson"
    assert spouse["name"] == [{"text": "王建军", "family": "王", "given": ["建军"]}]
    assert spouse["patient"]["reference"] == ref(patient)
    assert spouse["relationship"][0]["coding"][0]["code"] == "SPS"  # Relationship SPO -> SPS
    assert private["relationship"]["coding"][0]["code"] == "SPS"

    # --- PD1[Patient] and ROL[Patient-GeneralPractitioner] ----------------------------------
    gp = patient["generalPractitioner"]
    centre_name = "杭州市上城区湖滨街道社区卫生服务中心"
    assert [g["display"] for g in gp] == [centre_name, "周建国", "周建国"]
    centre = hl7.read(gp[0]["reference"])  # PD1-3 -> generalPractitioner[1](Organization)
    assert centre["identifier"] == [{"system": f"{SID}organization-id/HZWJW",  # XON.6
                                     "value": "330102001"}]  # XON.3 (v2.4: no XON.10)
    assert gp[1]["reference"] == ref(doctor["G0031"])  # PD1-4 -> generalPractitioner[2]
    pcp = hl7.read(gp[2]["reference"])  # ROL-3 PP^^HL70443 after PID
    assert without_ids(pcp) == {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": f"{SID}practitioner-role/HZFIRST",  # ROL-1 EI
                        "value": "R20240310-01"}],
        "active": True,
        "practitioner": {"reference": "Practitioner", "display": "周建国"},  # ROL-4
        # ROL-3 PP -> ProviderRole SNOMED CT 446050000
        "code": [{"coding": [
            {"system": "http://snomed.info/sct", "code": "446050000",
             "display": "PCP - Primary care physician"},
            {"system": f"{V2}0443", "code": "PP", "display": "Primary Care Provider"}],
            "text": "Primary Care Provider"}],
        "period": {"start": "2020-01-01"},  # ROL-5 -> PractitionerRole.period.start
        "telecom": [{"system": "phone", "value": "0571-87000031", "use": "work"}],  # ROL-12
    }

    # one Provenance names everything the message wrote
    [header] = hl7.search("MessageHeader")
    [provenance] = hl7.search(f"Provenance?entity=MessageHeader/{header['id']}")
    targets = {t["reference"].split("/_history")[0] for t in provenance["target"]}
    assert {ref(mi), ref(diabetes), ref(penicillin), ref(seafood), ref(procedure), ref(basic),
            ref(private), ref(spouse)} <= targets


def test_a_resend_and_a_repeated_message_create_nothing_new(hl7: Harness) -> None:
    message = sample(ADMIT)
    assert msa(hl7.send(message))[1] == "AA"
    hl7.wait_mapped()
    before = counts(hl7)
    assert before["Condition"] == 2 and before["AllergyIntolerance"] == 2
    assert before["Coverage"] == 2 and before["Procedure"] == 1
    # the same message again (same MSH-10): the inbox knows it
    assert msa(hl7.send(message))[1:3] == ["AA", "ADT20240310-0101"]
    hl7.wait_mapped()
    assert counts(hl7) == before
    # the same content under a new MSH-10 (a HIS that renumbers what it resends): mapped
    # again, it matches every resource by identifier and changes none of them
    assert msa(hl7.send(message.replace(b"ADT20240310-0101", b"ADT20240310-0199")))[1] == "AA"
    assert hl7.wait_mapped()["mapped"] == 2
    after = counts(hl7)
    assert after == {**before, "MessageHeader": 2}  # no Provenance: nothing was written
    for rtype in ("Condition", "AllergyIntolerance", "Procedure", "Coverage"):
        assert {r["meta"]["versionId"] for r in hl7.search(f"{rtype}?_count=50")} == {"1"}


def test_an_update_with_a_changed_allergy_updates_it(hl7: Harness) -> None:
    assert msa(hl7.send(sample(ADMIT)))[1] == "AA"
    hl7.wait_mapped()
    first = by_identifier(hl7, "AllergyIntolerance", "0007654321/ATC/J01CA")
    # A08: the penicillin allergy now severe (AL1-4 SV) with a second reaction (AL1-5 rep)
    assert msa(hl7.send(sample("adt_a08_allergy_update.hl7")))[1] == "AA"
    assert hl7.wait_mapped()["mapped"] == 2
    allergies = hl7.search("AllergyIntolerance?_count=50")
    assert len(allergies) == 2  # updated, not duplicated
    now = by_identifier(hl7, "AllergyIntolerance", "0007654321/ATC/J01CA")
    assert now["id"] == first["id"] and now["meta"]["versionId"] == "2"
    assert now["criticality"] == "high"  # SV -> AllergySeverity[criticality] high
    assert now["reaction"] == [{"manifestation": [{"text": "皮疹"}, {"text": "喉头水肿"}]}]
    unchanged = by_identifier(hl7, "AllergyIntolerance", "0007654321//海鲜")
    assert unchanged["meta"]["versionId"] == "1"
    assert len(hl7.search("Condition?_count=50")) == 2
    assert len(hl7.search("Coverage?_count=50")) == 2


@pytest.mark.parametrize(
    ("old", "new", "err", "text"),
    [
        # DG1-3.3 names no coding system we know: 103 table value not found at DG1[2]-3
        ("E11.900^2型糖尿病^I10", "E11.900^2型糖尿病^ICD99", "DG1^2^3^103",
         "DG1[2]-3.3: 'ICD99' is not a diagnosis coding system we know (HL7 table 0396)"),
        # AL1-4 not a severity of table 0128 (SV, MO, MI, U)
        ("MI^Mild^HL70128", "严重^严重^HL70128", "AL1^2^4^103",
         "AL1[2]-4.1: '严重' is not an allergy severity of HL7 table 0128 (SV, MO, MI, U)"),
        # AL1-3 (the allergen, required) empty: 101 required field missing
        ("|^海鲜|", "||", "AL1^2^3^101", "AL1[2]-3.1: AL1-3 (allergen) is empty"),
        # AL1-6 not a date: 102 data type error
        ("荨麻疹|2018", "荨麻疹|2018-05", "AL1^2^6^102", "AL1[2]-6: '2018-05' is not a date/time "
                                              "(YYYYMMDDHHMMSS[+ZZZZ])"),
    ],
)
def test_a_bad_diagnosis_or_allergy_gets_ae_naming_the_field_and_writes_nothing(
    hl7_with: Callable[..., Harness], old: str, new: str, err: str, text: str
) -> None:
    hl7 = hl7_with(hl7_ack_mode="mapped")  # the ACK waits for the mapping: AA or AE
    message = sample(ADMIT).decode()
    assert message.count(old) == 1
    ack = hl7.send(message.replace(old, new).encode())
    assert msa(ack)[1:3] == ["AE", "ADT20240310-0101"]
    # v2.4: ERR-1 (ELD) segment ^ sequence ^ field ^ code & text & table 0357
    assert fields(ack, "ERR")[1].startswith(err + "&")
    assert msa(ack)[3] == text
    # the segments before the bad one were mapped, and none of it was written
    assert {t: n for t, n in counts(hl7).items() if n} == {}
    [record] = hl7.inbox.search(CHANNEL, status="error")
    assert record.error == text


def test_a_gb18030_pre_admission_with_allergy_diagnosis_and_insurance(hl7: Harness) -> None:
    raw = sample("adt_a05_preadmit_gb18030.hl7")
    assert "欧阳".encode("gb18030") in raw and "欧阳".encode() not in raw  # GB18030 bytes
    ack = hl7.send(raw)
    assert msa(ack)[1] == "AA" and fields(ack, "MSH")[17] == "GB 18030-2000"
    hl7.wait_mapped()
    [patient] = hl7.search("Patient?identifier=0008801234")
    assert patient["name"] == [{"text": "欧阳娜娜", "family": "欧阳", "given": ["娜娜"]}]
    [encounter] = hl7.search("Encounter?identifier=ZY2024031500088")
    assert encounter["status"] == "planned"  # A05: pre-admission
    [allergy] = hl7.search("AllergyIntolerance")
    assert allergy["code"]["coding"][0]["display"] == "头孢菌素类"
    assert allergy["criticality"] == "high"  # AL1-4 SV
    assert allergy["reaction"] == [{"manifestation": [{"text": "过敏性休克"}]}]
    [condition] = hl7.search("Condition")
    assert condition["code"]["text"] == "单胎顺产"
    assert condition["encounter"]["reference"] == ref(encounter)
    assert encounter["diagnosis"][0]["condition"]["reference"] == ref(condition)
    [coverage] = hl7.search("Coverage")
    assert coverage["payor"][0]["display"] == "杭州市滨江区医疗保障分局"
    assert coverage["subscriber"]["reference"] == ref(patient)


def test_prt_segments_name_the_general_practitioner_participants_and_performers(
    hl7: Harness,
) -> None:
    # the same admission with PRT (v2.7's successor of ROL, sent by newer HIS) for each ROL
    lines = sample(ADMIT).decode().split("\r")
    roles = iter([
        "PRT||AD||PP^Primary Care Provider^HL70912|G0031^周^建国^^^^^^HZFIRST",
        "PRT||AD||CP^Consulting Provider^HL70912|D0101^王^磊^^^^^^HZFIRST||||||"
        "20240310090000+0800",
        "PRT||AD||AT^Attending Provider^HL70912|D0012^李^明^^^^^^HZFIRST",
    ])  # fmt: skip
    message = "\r".join(next(roles) if line.startswith("ROL") else line for line in lines)
    assert msa(hl7.send(message.encode()))[1] == "AA"
    hl7.wait_mapped()
    doctor = {p["identifier"][0]["value"]: ref(p) for p in hl7.search("Practitioner?_count=50")}
    [patient] = hl7.search("Patient?identifier=0007654321")
    # PRT-4 PP after PID: PRT[Patient-GeneralPractitioner-Practitioner], PRT-5 -> the
    # Practitioner, the one PD1-4 already names (G0031): listed once
    assert [g["reference"] for g in patient["generalPractitioner"][1:]] == [doctor["G0031"]]
    assert hl7.search("PractitionerRole") == []  # a PRT names the Practitioner itself
    [encounter] = hl7.search("Encounter")
    # PRT after PV1 (no IG map; our choice): PRT-4 the type (table 0912: only PH has a FHIR
    # code in the IG's Participation map), PRT-11 period.start, PRT-5 the individual
    assert encounter["participant"][1] == {
        "type": [{"coding": [{"system": f"{V2}0912", "code": "CP",
                              "display": "Consulting Provider"}], "text": "Consulting Provider"}],
        "period": {"start": "2024-03-10T09:00:00+08:00"},
        "individual": {"reference": doctor["D0101"], "display": "王磊"},
    }
    [procedure] = hl7.search("Procedure")
    assert procedure["performer"][1] == {
        "function": {"coding": [{"system": f"{V2}0912", "code": "AT",
                                 "display": "Attending Provider"}], "text": "Attending Provider"},
        "actor": {"reference": doctor["D0012"], "display": "李明"},
    }
