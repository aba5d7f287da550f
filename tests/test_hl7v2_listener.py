"""The HL7 v2 listener end to end over a real socket: every sample event from message to the FHIR
resources it makes (ADT^A01, ORU^R01 and the A40 merge checked field by field against the
v2-to-FHIR IG's maps), the ACK it gets, the resend, GB18030, and each kind of bad input."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mllp_harness import Harness, fields, listeners, sample, without_ids

from fhir_server.referral.codes import SID
from fhir_server.services import Parts
from integrations.hl7v2 import mllp
from integrations.hl7v2.charset import decode
from integrations.hl7v2.worker import CHANNEL

V2 = "http://terminology.hl7.org/CodeSystem/v2-"
#: PID-3.4 `CHNMOHRSS` (the resident identity card) configured to the consortium's system
RESIDENT = f"{SID}resident-id"


@pytest.fixture
def hl7_with(tmp_path: Path, parts: Parts) -> Iterator[Callable[..., Harness]]:
    yield from listeners(tmp_path, parts, identifier_systems=f"CHNMOHRSS={RESIDENT}")


@pytest.fixture
def hl7(hl7_with: Callable[..., Harness]) -> Harness:
    return hl7_with()


def msa(ack: str) -> list[str]:
    return fields(ack, "MSA")


# --- ADT^A01, field by field -----------------------------------------------------------------


def test_an_admission_makes_the_patient_and_the_encounter_the_ig_maps(hl7: Harness) -> None:
    ack = hl7.send(sample("adt_a01_admit.hl7"))
    # original mode (MSH-15/16 empty): AA once committed, MSA-2 = MSH-10; the ACK swaps
    # sender and receiver (MSH-3/4 <-> MSH-5/6) and repeats MSH-12 and MSH-18
    assert msa(ack)[1:3] == ["AA", "ADT20240301-0001"]
    msh = fields(ack, "MSH")
    assert msh[2:6] == ["YLFHIR", "YLT", "HIS", "HZFIRST"] and msh[8] == "ACK^A01^ACK"
    assert msh[11] == "2.4" and msh[17] == "UNICODE UTF-8"
    hl7.wait_mapped()

    [patient] = hl7.search("Patient?identifier=0001234567")
    # PID[Patient] row by row (IG segment map), vocabulary from the IG's concept maps
    assert without_ids(patient) == {
        "resourceType": "Patient",
        "active": True,
        "identifier": [
            # PID-3 rep 1: CX.1 value; CX.4 HZFIRST, not configured: a system derived from
            # the authority's name; CX.5 MR -> IdentifierType MR "Medical record number"
            {"type": {"coding": [{"system": f"{V2}0203", "code": "MR",
                                  "display": "Medical record number"}]},
             "system": f"{SID}patient-id/HZFIRST", "value": "0001234567"},
            # rep 2: CX.4 CHNMOHRSS is configured (identifier_systems); NNCHN is not in the
            # IG's IdentifierType map: the v2 code as it is
            {"type": {"coding": [{"system": f"{V2}0203", "code": "NNCHN"}]},
             "system": RESIDENT, "value": "330106198503127715"},
        ],
        # PID-5 XPN: .1 family, .2 given; a Chinese name also as written, family name first
        "name": [{"text": "张伟", "family": "张", "given": ["伟"]}],
        "birthDate": "1985-03-12",  # PID-7
        "gender": "male",  # PID-8 M -> AdministrativeSex male
        # PID-11 XAD: .1 street, .2 other designation, .3 city, .4 province, .5 postal code,
        # .6 country, .7 H -> AddressType[Use] home, .9 county -> district; Chinese order
        "address": [{"use": "home", "text": "浙江省杭州市西湖区文三路478号华星时代广场A座1201",
                     "line": ["文三路478号", "华星时代广场A座1201"], "city": "杭州市",
                     "district": "西湖区", "state": "浙江省", "postalCode": "310012",
                     "country": "CHN"}],
        "telecom": [
            # PID-13 rep 1: XTN.1 the number, .2 PRN (home) but .3 CP: a mobile phone
            {"system": "phone", "value": "13857112345", "use": "mobile"},
            # rep 2: .3 Internet -> email, the address in .4; .2 NET maps to no use: home
            {"system": "email", "value": "zhangwei@example.cn", "use": "home"},
            # PID-14: .2 WPN -> work
            {"system": "phone", "value": "0571-88886666", "use": "work"},
        ],
        # PID-15 CWE; ISO639 names urn:ietf:bcp:47
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "zh",
                                                    "display": "Chinese"}], "text": "Chinese"}}],
        # PID-16 M -> MaritalStatus v3 M Married, and the v2 code as sent
        "maritalStatus": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M",
             "display": "Married"},
            {"system": f"{V2}0002", "code": "M", "display": "已婚"}], "text": "已婚"},
        # NK1 -> Patient.contact (IG NK1[Patient]): .3 SPO -> Relationship v3 SPS spouse
        "contact": [{
            "relationship": [{"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "SPS",
                 "display": "spouse"},
                {"system": f"{V2}0063", "code": "SPO", "display": "配偶"}], "text": "配偶"}],
            "name": {"text": "王芳", "family": "王", "given": ["芳"]},
            "telecom": [{"system": "phone", "value": "13957154321", "use": "mobile"}],
            "address": {"text": "浙江省杭州市文三路478号", "line": ["文三路478号"],
                        "city": "杭州市", "state": "浙江省", "postalCode": "310012",
                        "country": "CHN"}}],
        # the sending facility (MSH-4) is the hospital that manages the patient
        "managingOrganization": {"reference": "Organization", "display": "HZFIRST"},
    }  # fmt: skip
    organization = hl7.read(patient["managingOrganization"]["reference"])
    assert organization["identifier"] == [{"system": f"{SID}hl7v2-facility", "value": "HZFIRST"}]

    [encounter] = hl7.search("Encounter?identifier=ZY2024030100123")
    attender = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "ATND", "display": "attender"}]}  # fmt: skip
    # PV1[Encounter] row by row
    assert without_ids(encounter) == {
        "resourceType": "Encounter",
        # PV1-19 visit number, identifier type VN
        "identifier": [{"type": {"coding": [{"system": f"{V2}0203", "code": "VN",
                                             "display": "Visit number"}]},
                        "system": f"{SID}visit-number/HZFIRST", "value": "ZY2024030100123"}],
        "status": "in-progress",  # A01, PV1-45 empty
        # PV1-2 I -> PatientClass[EncounterClass] IMP
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
                  "display": "inpatient encounter"},
        # PV1-4 R -> AdmissionType (v2-0007 R Routine)
        "type": [{"coding": [{"system": f"{V2}0007", "code": "R", "display": "Routine"}]}],
        # PV1-10 hospital service, its coding system named in CWE.3 (HL70069)
        "serviceType": {"coding": [{"system": f"{V2}0069", "code": "CAR",
                                    "display": "心血管内科"}], "text": "心血管内科"},
        "subject": {"reference": "Patient"},
        # PV1-7 ATND, PV1-8 REF, PV1-17 ADM: one Practitioner for D0012 in PV1-7 and PV1-17
        "participant": [
            {"type": [attender], "individual": {"reference": "Practitioner", "display": "李明"}},
            {"type": [{"coding": [{"system": attender["coding"][0]["system"], "code": "REF",
                                   "display": "referrer"}]}],
             "individual": {"reference": "Practitioner", "display": "陈静"}},
            {"type": [{"coding": [{"system": attender["coding"][0]["system"], "code": "ADM",
                                   "display": "admitter"}]}],
             "individual": {"reference": "Practitioner", "display": "李明"}},
        ],
        "period": {"start": "2024-03-01T10:00:00+08:00"},  # PV1-44 with its offset
        # PV1-14 admit source (table 0023)
        "hospitalization": {"admitSource": {"coding": [{"system": f"{V2}0023", "code": "1",
                                                        "display": "门诊"}], "text": "门诊"}},
        # PV1-3 PL: .9 description standing for .1, then room and bed; active (class not P)
        "location": [{"location": {"display": "心内科病区 0301 02"}, "status": "active"}],
        # PV2-3 admit reason; I10 names ICD-10
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                    "code": "I20.000", "display": "不稳定性心绞痛"}],
                        "text": "不稳定性心绞痛"}],
        "serviceProvider": {"reference": "Organization", "display": "HZFIRST"},
    }  # fmt: skip
    participants = encounter["participant"]
    assert participants[0]["individual"] == participants[2]["individual"]  # one Practitioner

    # MSH -> MessageHeader, the Z-segment kept whole on it; a Provenance names the message
    # as the source of everything it wrote
    [header] = hl7.search("MessageHeader?event=A01")
    assert header["eventCoding"] == {"system": f"{V2}0003", "code": "A01",
                                     "display": "ADT^A01^ADT_A01"}  # fmt: skip
    assert header["source"]["name"] == "HIS" and header["destination"][0]["name"] == "YLFHIR"
    assert header["extension"] == [{
        "url": "https://yilian.health/fhir/StructureDefinition/hl7v2-z-segment",
        "valueString": "ZPI|1|城镇职工医保^01|3301000000123456|浙江省杭州市医保中心"}]
    assert {f["reference"].split("/")[0] for f in header["focus"]} == {"Patient", "Encounter"}
    [provenance] = hl7.search(f"Provenance?entity=MessageHeader/{header['id']}")
    targets = {t["reference"].split("/_history")[0] for t in provenance["target"]}
    assert f"Patient/{patient['id']}" in targets and f"Encounter/{encounter['id']}" in targets
    assert provenance["occurredDateTime"] == "2024-03-01T10:30:00+08:00"  # MSH-7


def test_a_resent_message_is_acknowledged_again_and_creates_nothing(hl7: Harness) -> None:
    assert msa(hl7.send(sample("adt_a01_admit.hl7")))[1] == "AA"
    hl7.wait_mapped()
    counts = {t: len(hl7.search(f"{t}?_count=100")) for t in ("Patient", "Encounter",
                                                               "MessageHeader", "Provenance")}
    # the HIS did not see the ACK and sends the same message (same MSH-4/MSH-3 and MSH-10)
    ack = hl7.send(sample("adt_a01_resend.hl7"))
    assert msa(ack)[1:3] == ["AA", "ADT20240301-0001"]
    hl7.wait_mapped()
    assert {t: len(hl7.search(f"{t}?_count=100")) for t in counts} == counts
    [record] = hl7.inbox.search(CHANNEL)
    assert record.duplicates == 1 and record.status == "mapped"


# --- ORU^R01, field by field ------------------------------------------------------------------


def test_a_blood_count_makes_a_report_with_its_observations_and_specimen(hl7: Harness) -> None:
    assert msa(hl7.send(sample("oru_r01_cbc.hl7")))[1] == "AA"
    hl7.wait_mapped()
    [report] = hl7.search("DiagnosticReport?identifier=JY20240302-0456")
    # OBR[DiagnosticReport]: OBR-2 PLAC and OBR-3 FILL (ORC-2/3 say the same), OBR-4 code,
    # OBR-7 effective, OBR-22 issued, OBR-24 HM -> v2-0074 Hematology, OBR-25 F -> final
    assert without_ids(report) == {
        "resourceType": "DiagnosticReport",
        "identifier": [
            {"type": {"coding": [{"system": f"{V2}0203", "code": "PLAC"}]},
             "system": f"{SID}placer-order/HIS", "value": "SQ20240302-88"},
            {"type": {"coding": [{"system": f"{V2}0203", "code": "FILL"}]},
             "system": f"{SID}filler-order/LIS", "value": "JY20240302-0456"},
        ],
        "basedOn": [{"reference": "ServiceRequest"}],
        "status": "final",
        "category": [{"coding": [{"system": f"{V2}0074", "code": "HM",
                                  "display": "Hematology"}]}],
        # a local code (CWE.3 L): the sending facility's own code system
        "code": {"coding": [{"system": f"{SID}code/HZFIRST/L", "code": "CBC",
                             "display": "血常规"}], "text": "血常规"},
        "subject": {"reference": "Patient"},
        "encounter": {"reference": "Encounter"},
        "effectiveDateTime": "2024-03-02T08:00:00+08:00",
        "issued": "2024-03-02T10:25:00+08:00",
        # OBR-32 (NDL: CNN id & family & given)
        "resultsInterpreter": [{"reference": "Practitioner", "display": "赵敏"}],
        "specimen": [{"reference": "Specimen"}],
        "result": [{"reference": "Observation"}] * 5,
    }  # fmt: skip
    observations = [hl7.read(r["reference"]) for r in report["result"]]
    first = without_ids(observations[0])
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory"}]}]  # fmt: skip
    per_l = {"unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"}
    # OBX[Observation]: OBX-3 code (LN -> LOINC), OBX-2 NM -> valueQuantity with OBX-6 (UCUM),
    # OBX-7 reference range (low/high parsed, text kept), OBX-8 H -> High, OBX-11 F -> final,
    # OBX-14 effective; the NTE after it -> note
    assert first == {
        "resourceType": "Observation",
        "identifier": [{"system": f"{SID}filler-order/LIS",
                        "value": "JY20240302-0456/6690-2//1"}],
        "basedOn": [{"reference": "ServiceRequest"}],
        "status": "final",
        "category": lab,
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2",
                             "display": "白细胞计数"}], "text": "白细胞计数"},
        "subject": {"reference": "Patient"},
        "encounter": {"reference": "Encounter"},
        "effectiveDateTime": "2024-03-02T10:00:00+08:00",
        "issued": "2024-03-02T10:25:00+08:00",
        "valueQuantity": {"value": 11.2, **per_l},
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "H", "display": "High"}]}],
        "note": [{"text": "复查建议：一周后复查血常规"}],
        "specimen": {"reference": "Specimen"},
        "referenceRange": [{"text": "3.5-9.5", "low": {"value": 3.5, **per_l},
                            "high": {"value": 9.5, **per_l}}],
    }  # fmt: skip
    # OBX-6 `10\S\12/L` (an escaped ^) is 10^12/L, which UCUM writes 10*12/L
    assert observations[1]["valueQuantity"] == {"value": 4.52, "unit": "10^12/L",
                                                "system": "http://unitsofmeasure.org",
                                                "code": "10*12/L"}  # fmt: skip
    assert observations[3]["interpretation"][0]["coding"][0]["code"] == "L"
    assert observations[4]["valueString"] == "A型 Rh(+)"  # OBX-2 ST
    # without OBX-14 an observation is effective when the report is (OBR-7)
    assert observations[1]["effectiveDateTime"] == "2024-03-02T08:00:00+08:00"
    specimen = hl7.read(report["specimen"][0]["reference"])
    # v2.4: no SPM; OBR-15 (SPS) gives the type, OBR-7 the collection, OBR-14 the receipt
    assert specimen["type"] == {"coding": [{"system": f"{V2}0070", "code": "BLD",
                                            "display": "全血"}], "text": "全血"}  # fmt: skip
    assert specimen["collection"] == {"collectedDateTime": "2024-03-02T08:00:00+08:00"}
    assert specimen["receivedTime"] == "2024-03-02T08:30:00+08:00"
    # the patient the ADT would have registered: found or, as here, made from PID
    [patient] = hl7.search("Patient?identifier=0001234567")
    assert report["subject"]["reference"] == f"Patient/{patient['id']}"
    [header] = hl7.search("MessageHeader?event=R01")
    assert header["extension"][0]["valueString"] == "ZLB|1|迈瑞BC-6800|急诊"


def test_a_lab_result_does_not_rewrite_the_registered_patient(hl7: Harness) -> None:
    hl7.send(sample("adt_a08_update.hl7"))  # registered: address in 拱墅区
    hl7.wait_mapped()
    hl7.send(sample("oru_r01_cbc.hl7"))  # its PID still has the old address
    hl7.wait_mapped()
    [patient] = hl7.search("Patient?identifier=0001234567")
    assert patient["address"][0]["district"] == "拱墅区"
    assert patient["meta"]["versionId"] == "1"


def test_gb18030_results_with_escapes_and_comparators(hl7: Harness) -> None:
    hl7.send(sample("oru_r01_biochem_gb18030.hl7"))
    hl7.wait_mapped()
    [report] = hl7.search("DiagnosticReport?identifier=JY20240305-0789")
    creatinine, glucose, crp = (hl7.read(r["reference"]) for r in report["result"])
    # OBX-3.2 `\XBCA1F4FB\`: GB18030 bytes in hexadecimal, text in the message's charset
    assert creatinine["code"]["text"] == "肌酐"
    assert glucose["method"]["coding"][0]["code"] == "GOD&POD"  # \T\ is the & it escapes
    # SN `<^5`: a quantity with its comparator; OBX-7 `<10`: an upper limit only
    assert crp["valueQuantity"] == {"value": 5, "comparator": "<", "unit": "mg/L",
                                    "system": "http://unitsofmeasure.org", "code": "mg/L"}
    assert crp["referenceRange"][0]["high"]["value"] == 10


# --- GB18030 ---------------------------------------------------------------------------------


def test_gb18030_names_round_trip_though_their_bytes_hold_delimiters(hl7: Harness) -> None:
    raw = sample("adt_a04_register_gb18030.hl7")
    # 葉 is C8 7E (its trail byte is `~`), 瑋 AC 7C (`|`): splitting the bytes would tear them
    assert "葉".encode("gb18030") == b"\xc8~" and "瑋".encode("gb18030") == b"\xac|"
    ack_bytes = _exchange(hl7, raw)
    assert b"MSA|AA|ADT20240305-0033" in ack_bytes and ack_bytes.endswith(b"\r")
    assert fields(decode(ack_bytes).text, "MSH")[17] == "GB 18030-2000"  # the ACK's charset
    hl7.wait_mapped()
    [patient] = hl7.search("Patient?family=葉")
    assert patient["name"] == [{"text": "葉瑋", "family": "葉", "given": ["瑋"]}]
    assert patient["address"][0]["text"] == "浙江省杭州市上城區延安路258號"
    # the raw message is kept byte for byte
    [record] = hl7.inbox.search(CHANNEL)
    assert record.raw == raw and record.meta["charset"] == "gb18030"


def _exchange(hl7: Harness, message: bytes) -> bytes:
    with hl7.connect() as client:
        return client.exchange(message)


# --- the other events ---------------------------------------------------------------------


def test_a_visit_from_admission_through_transfer_to_discharge(hl7: Harness) -> None:
    for name in ("adt_a01_admit.hl7", "adt_a08_update.hl7", "adt_a02_transfer.hl7"):
        assert msa(hl7.send(sample(name)))[1] == "AA"
    hl7.wait_mapped()
    [encounter] = hl7.search("Encounter?identifier=ZY2024030100123")
    # A02: PV1-3 the new location (active), PV1-6 the one left (completed)
    assert encounter["location"] == [
        {"location": {"display": "心脏重症监护室 0102 01"}, "status": "active"},
        {"location": {"display": "心内科病区 0305 01"}, "status": "completed"}]
    assert encounter["status"] == "in-progress"
    assert msa(hl7.send(sample("adt_a03_discharge.hl7")))[1] == "AA"
    hl7.wait_mapped()
    [discharged] = hl7.search("Encounter?identifier=ZY2024030100123")
    assert discharged["id"] == encounter["id"]  # found by PV1-19, not a new Encounter
    # A03: finished, period.end PV1-45 (start kept), PV1-36 discharge disposition
    assert discharged["status"] == "finished"
    assert discharged["period"] == {"start": "2024-03-01T10:00:00+08:00",
                                    "end": "2024-03-08T10:00:00+08:00"}
    assert discharged["hospitalization"]["dischargeDisposition"]["coding"] == [
        {"system": f"{V2}0112", "code": "01", "display": "出院回家"}]
    assert discharged["hospitalization"]["admitSource"]["coding"][0]["code"] == "1"
    # A08 changed the address; the patient is one Patient throughout
    [patient] = hl7.search("Patient?identifier=0001234567")
    assert patient["address"][0]["district"] == "拱墅区"


def test_a28_registers_a_person_without_a_visit_and_a11_cancels_an_admission(
    hl7: Harness,
) -> None:
    hl7.send(sample("adt_a28_add_person.hl7"))
    hl7.wait_mapped()
    assert len(hl7.search("Patient?family=欧阳")) == 1
    assert hl7.search("Encounter?subject.family=欧阳") == []  # `PV1|1|N`: no visit
    hl7.send(sample("adt_a11_cancel_admit.hl7"))
    hl7.wait_mapped()
    [encounter] = hl7.search("Encounter?identifier=ZY2024030600200")
    assert encounter["status"] == "cancelled"  # IG Event[EncounterStatus] A11


def test_orders_become_service_requests_and_the_result_finds_its_order(hl7: Harness) -> None:
    hl7.send(sample("orm_o01_order.hl7"))
    hl7.send(sample("oml_o21_order.hl7"))
    hl7.wait_mapped()
    [order] = hl7.search("ServiceRequest?identifier=SQ20240302-88")
    # ORC-5 SC -> OrderStatus active; ORC-7.6 R -> routine; ORC-9 authoredOn (NW)
    assert (order["status"], order["intent"], order["priority"]) == ("active", "order", "routine")
    assert order["authoredOn"] == "2024-03-01T15:00:00+08:00"
    assert order["occurrenceDateTime"] == "2024-03-02T08:00:00+08:00"
    assert order["note"] == [{"text": "空腹采血"}]
    assert order["reasonCode"][0]["coding"][0]["code"] == "I20.000"
    [lab_order] = hl7.search("ServiceRequest?identifier=SQ20240305-17")
    # OML: ORC-1 NW -> active (ORC-5 empty); TQ1-9 S -> stat; SPM -> Specimen
    assert (lab_order["status"], lab_order["priority"]) == ("active", "stat")
    specimen = hl7.read(lab_order["specimen"][0]["reference"])
    assert specimen["identifier"][0]["value"] == "SP20240305-0042"
    assert specimen["collection"]["collectedDateTime"] == "2024-03-05T09:20:00+08:00"
    hl7.send(sample("oru_r01_cbc.hl7"))
    hl7.wait_mapped()
    [report] = hl7.search("DiagnosticReport?identifier=JY20240302-0456")
    assert report["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]


def test_appointments_are_booked_and_cancelled(hl7: Harness) -> None:
    hl7.send(sample("siu_s12_appointment.hl7"))
    hl7.wait_mapped()
    [booked] = hl7.search("Appointment?identifier=YY20240311-0031")
    # SCH-25 Booked; AIS-4 start, AIS-7/8 30 min; AIP practitioner; AIL location; NTE comment
    assert booked["status"] == "booked"
    assert (booked["start"], booked["end"], booked["minutesDuration"]) == (
        "2024-03-11T09:00:00+08:00", "2024-03-11T09:30:00+08:00", 30)
    actors = [p["actor"].get("display") for p in booked["participant"]]
    assert actors[1:] == ["李明", "心内科门诊3诊室"]
    assert booked["comment"] == "请携带出院小结及近期化验单"
    hl7.send(sample("siu_s15_cancel.hl7"))
    hl7.wait_mapped()
    [cancelled] = hl7.search("Appointment?identifier=YY20240311-0031")
    assert cancelled["id"] == booked["id"] and cancelled["status"] == "cancelled"  # S15


def test_a_discharge_summary_becomes_a_document_reference(hl7: Harness) -> None:
    import base64

    hl7.send(sample("mdm_t02_discharge_summary.hl7"))
    hl7.wait_mapped()
    [document] = hl7.search("DocumentReference?identifier=EMR-DS-20240308-0001")
    # TXA-12 masterIdentifier, TXA-17 AU -> final, TXA-19 AV -> current, TXA-2 type, TXA-9
    # author; the OBX lines are the text
    assert (document["status"], document["docStatus"]) == ("current", "final")
    assert document["type"]["coding"][0] == {"system": f"{V2}0270", "code": "DS",
                                             "display": "出院小结"}  # fmt: skip
    assert document["author"][0]["display"] == "李明"
    text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
    assert text.splitlines()[0] == "入院诊断：不稳定性心绞痛。" and len(text.splitlines()) == 3


# --- A40 merge, field by field ---------------------------------------------------------------


def test_a_merge_retires_the_old_record_links_both_and_is_idempotent(hl7: Harness) -> None:
    hl7.send(sample("adt_a01_admit.hl7"))  # 张伟, MRN 0001234567 (survivor)
    hl7.send(sample("adt_a04_register_gb18030.hl7"))  # MRN 0007654321 (to be merged)
    hl7.wait_mapped()
    [survivor] = hl7.search("Patient?identifier=0001234567")
    [old] = hl7.search("Patient?identifier=0007654321")
    assert msa(hl7.send(sample("adt_a40_merge.hl7")))[1] == "AA"
    hl7.wait_mapped()
    survivor, old = hl7.read(f"Patient/{survivor['id']}"), hl7.read(f"Patient/{old['id']}")
    # link-type (R4): the old record `replaced-by` the survivor, which `replaces` it; the
    # old record is no longer active; both keep their other elements
    assert old["active"] is False
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                            "type": "replaced-by"}]  # fmt: skip
    assert old["name"][0]["text"] == "葉瑋"
    assert survivor["active"] is True
    assert survivor["link"] == [{"other": {"reference": f"Patient/{old['id']}"},
                                 "type": "replaces"}]  # fmt: skip
    [merge] = hl7.search("Provenance?_count=50&_sort=-_lastUpdated")[:1]
    assert merge["activity"]["coding"][0]["code"] == "merge"
    assert {t["reference"].split("/_history")[0] for t in merge["target"]} == {
        f"Patient/{survivor['id']}", f"Patient/{old['id']}"}
    versions = (survivor["meta"]["versionId"], old["meta"]["versionId"])
    provenances = len(hl7.search("Provenance?_count=100"))
    # the same merge again, as a new message: nothing changes, no new merge Provenance
    again = sample("adt_a40_merge.hl7").replace(b"ADT20240309-0050", b"ADT20240309-0051")
    assert msa(hl7.send(again))[1] == "AA"
    hl7.wait_mapped()
    assert (hl7.read(f"Patient/{survivor['id']}")["meta"]["versionId"],
            hl7.read(f"Patient/{old['id']}")["meta"]["versionId"]) == versions
    assert len(hl7.search("Provenance?_count=100")) == provenances
    # a result still naming the old MRN reaches the surviving record
    oru = sample("oru_r01_biochem_gb18030.hl7")
    hl7.send(oru)
    hl7.wait_mapped()
    [report] = hl7.search("DiagnosticReport?identifier=JY20240305-0789")
    assert report["subject"]["reference"] == f"Patient/{survivor['id']}"


def test_a_merge_of_a_record_into_itself_is_refused(hl7: Harness) -> None:
    self_merge = sample("adt_a40_merge.hl7").replace(b"MRG|0007654321", b"MRG|0001234567")
    assert msa(hl7.send(self_merge))[1] == "AA"  # stored; mapping refuses it, writing nothing
    assert hl7.wait_mapped()["error"] == 1 and hl7.search("Patient") == []
    [record] = hl7.inbox.search(CHANNEL)
    assert record.error == "MRG-1.1: MRG-1 names the surviving record (PID-3) itself"


# --- ACK modes -------------------------------------------------------------------------------

BAD_DATE = sample("adt_a01_admit.hl7").replace(b"|19850312|", b"|19851340|")


def test_commit_mode_keeps_a_message_that_fails_mapping_for_replay(hl7: Harness) -> None:
    # AA: the message is ours once stored; mapping fails later and is recorded, not lost
    assert msa(hl7.send(BAD_DATE))[1] == "AA"
    counts = hl7.wait_mapped()
    assert counts["error"] == 1 and hl7.search("Patient") == []  # nothing half applied
    [record] = hl7.inbox.search(CHANNEL, status="error")
    assert record.error == "PID-7: '19851340' is not a valid date/time"
    assert record.meta["err"] == {"location": "PID-7", "code": 102}


def test_mapped_mode_answers_ae_naming_the_field(hl7_with: Callable[..., Harness]) -> None:
    hl7 = hl7_with(hl7_ack_mode="mapped")
    ack = hl7.send(BAD_DATE)
    assert msa(ack)[1] == "AE"
    err = fields(ack, "ERR")  # v2.4: ERR-1 (ELD) segment ^ sequence ^ field ^ code
    assert err[1] == "PID^1^7^102&Data type error&HL70357"
    assert msa(ack)[3] == "PID-7: '19851340' is not a valid date/time"  # MSA-3 for people
    # an AE tells the sender: the corrected message may reuse its MSH-10
    fixed = hl7.send(sample("adt_a01_admit.hl7"))
    assert msa(fixed)[1] == "AA"
    assert len(hl7.search("Patient?identifier=0001234567")) == 1


def test_enhanced_mode_commit_ack_then_application_ack(hl7: Harness) -> None:
    # MSH-15 AL (accept ACK always), MSH-16 AL (application ACK always), v2.5
    message = sample("oml_o21_order.hl7").replace(b"|2.5.1|||||CHN|", b"|2.5.1|||AL|AL|CHN|")
    bad = message.replace(b"ORD20240305-0120", b"ORD-BAD").replace(b"|19900716|", b"|19901340|")
    with hl7.connect() as client:
        accept = decode(client.exchange(message)).text
        application = decode(client.receive()).text
        assert msa(accept)[1:3] == ["CA", "ORD20240305-0120"]  # committed
        assert msa(application)[1:3] == ["AA", "ORD20240305-0120"]  # mapped
        assert fields(application, "MSH")[14:16] == ["NE", "NE"]  # MSH-15/16: no ACK back
        client.send(b"MSH|^~\\&|HIS|HZFIRST|YLFHIR|YLT|20240305||ACK^O21^ACK|X1|P|2.5\r"
                    b"MSA|CA|" + fields(application, "MSH")[9].encode() + b"\r")
        assert msa(decode(client.exchange(bad)).text)[1] == "CA"
        failed = decode(client.receive()).text
    # v2.5.1: ERR-2 location, ERR-3 code (table 0357), ERR-4 severity, ERR-8 the text
    err = fields(failed, "ERR")
    assert msa(failed)[1:3] == ["AE", "ORD-BAD"]
    assert err[2:5] == ["PID^1^7", "102^Data type error^HL70357", "E"]
    assert err[8] == "'19901340' is not a valid date/time"
    assert hl7.inbox.counts(CHANNEL)["mapped"] == 1


# --- bad input --------------------------------------------------------------------------------


def test_bytes_outside_a_frame_close_that_connection_only(hl7: Harness,
                                                          caplog: Any) -> None:  # fmt: skip
    with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert raw.recv(100) == b""  # closed, no reply
    assert "outside any MLLP frame" in caplog.text
    assert msa(hl7.send(sample("adt_a28_add_person.hl7")))[1] == "AA"  # others go on


def test_a_frame_without_its_end_is_refused_and_kept(hl7: Harness) -> None:
    body = sample("adt_a28_add_person.hl7")
    with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as raw:
        raw.sendall(mllp.START + body)  # no FS CR: a new frame starts instead
        raw.sendall(mllp.frame(sample("adt_a11_cancel_admit.hl7")))
        framer = mllp.Framer(1 << 20)
        replies: list[bytes] = []
        while len(replies) < 2:
            replies += [e.data for e in framer.feed(raw.recv(65536)) if isinstance(e, mllp.Frame)]
    cut, whole = (decode(r).text for r in replies)
    assert msa(cut)[1:3] == ["AR", "ADT20240306-0040"]
    assert "incomplete message" in msa(cut)[3]
    assert msa(whole)[1:3] == ["AA", "ADT20240306-0045"]
    [kept] = hl7.inbox.search(CHANNEL, status="rejected")
    assert kept.message_id == "ADT20240306-0040" and kept.raw == body


def test_a_frame_that_stalls_past_the_read_timeout_is_refused_and_closed(
    hl7_with: Callable[..., Harness],
) -> None:
    hl7 = hl7_with(hl7_read_timeout_seconds=0.5)
    with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as raw:
        raw.sendall(mllp.START + sample("adt_a28_add_person.hl7")[:140])  # then silence
        started = time.time()
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    assert 0.4 < time.time() - started < 5  # answered when the timeout passed, then closed
    [reply] = [decode(e.data).text for e in mllp.Framer(1 << 20).feed(data)
               if isinstance(e, mllp.Frame)]  # fmt: skip
    assert msa(reply)[1:3] == ["AR", "ADT20240306-0040"]
    assert "no end of frame within the read timeout" in msa(reply)[3]


def test_a_half_closed_connection_still_gets_its_acks(hl7: Harness) -> None:
    with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as raw:
        raw.sendall(mllp.frame(sample("adt_a28_add_person.hl7")))
        raw.sendall(mllp.START + b"MSH|^~\\&|HIS|HZFIRST|YLFHIR|YLT|2024||ADT^A28|P1|P|2.4")
        raw.shutdown(socket.SHUT_WR)  # the sender is done, mid-frame
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    replies = [decode(e.data).text for e in mllp.Framer(1 << 20).feed(data)
               if isinstance(e, mllp.Frame)]  # fmt: skip
    assert [msa(r)[1] for r in replies] == ["AA", "AR"]  # the partial one: AR, then closed


def test_a_message_over_the_size_limit_is_refused_without_being_read_whole(
    hl7_with: Callable[..., Harness],
) -> None:
    hl7 = hl7_with(hl7_max_message_bytes=100_000)
    big = sample("mdm_t02_discharge_summary.hl7").replace(
        b"|TX|DS^", b"|TX|DS^", 1).replace("出院医嘱".encode(), "出院医嘱".encode() * 40_000)
    ack = hl7.send(big)
    assert msa(ack)[1:3] == ["AR", "EMR20240308-0301"]
    assert "more than the 100000 allowed" in msa(ack)[3]
    [kept] = hl7.inbox.search(CHANNEL, status="rejected")
    assert len(kept.raw) == mllp.HEAD  # the head only (its MSH), not 480 kB
    assert msa(hl7.send(sample("adt_a28_add_person.hl7")))[1] == "AA"


@pytest.mark.parametrize(
    ("change", "code", "err"),
    [
        # an unknown message type: AR, 200 unsupported message type
        ((b"ADT^A28^ADT_A05", b"ZZZ^Z01"), "AR", "MSH^1^9^200"),
        # a known type, an event we do not map: AR, 201 unsupported event code
        ((b"ADT^A28^ADT_A05", b"ADT^A37^ADT_A37"), "AR", "MSH^1^9^201"),
        # an unsupported version: AR, 203
        ((b"|P|2.4|", b"|P|2.9|"), "AR", "MSH^1^12^203"),
        # no MSH-10: AE, 101 required field missing
        ((b"ADT20240306-0040", b""), "AE", "MSH^1^10^101"),
        # a wrong charset: MSH-18 says UTF-8, the bytes are GB18030: AE, 102 at MSH-18
        ((b"|UNICODE UTF-8", b"|UNICODE UTF-8", "欧阳".encode(), "欧阳".encode("gb18030")),
         "AE", "MSH^1^18^102"),
        # a charset we do not know: AE, 103 table value not found
        ((b"|UNICODE UTF-8", b"|EBCDIC"), "AE", "MSH^1^18^103"),
        # a field longer than allowed: AE, 102 naming the field
        ((b"\rPV1|1|N", b"\rPV1|1|N|" + b"X" * 70_000), "AE", "PV1^1^3^102"),
    ],
)
def test_bad_messages_get_the_right_ack_and_a_stored_record(
    hl7: Harness, change: tuple[bytes, ...], code: str, err: str
) -> None:
    message = sample("adt_a28_add_person.hl7")
    for old, new in zip(change[::2], change[1::2], strict=True):
        message = message.replace(old, new)
    ack = hl7.send(message)
    assert msa(ack)[1] == code
    # v2.4 and older: ERR-1 segment^sequence^field^code&text&table; from v2.5 (the 2.9
    # message is answered in its own version): ERR-2 location, ERR-3 code
    e = fields(ack, "ERR")
    assert (e[1] or f"{e[2]}^{e[3]}").startswith(err)
    [kept] = hl7.inbox.search(CHANNEL)
    assert kept.status == "rejected" and kept.raw == message
    assert msa(hl7.send(sample("adt_a28_add_person.hl7")))[1] == "AA"  # a corrected resend


def test_not_an_hl7_message_gets_ar(hl7: Harness) -> None:
    ack = hl7.send(sample("malformed.hl7"))
    assert msa(ack)[1] == "AR" and msa(ack)[2] == ""
    assert hl7.inbox.counts(CHANNEL)["rejected"] == 1


@pytest.mark.slow  # 1,000 connections: `make test-slow`
def test_a_thousand_connections_at_once_each_get_their_ack(hl7: Harness) -> None:
    message = sample("adt_a28_add_person.hl7")
    sockets = []
    for n in range(1000):
        s = socket.create_connection(("127.0.0.1", hl7.port), timeout=60)
        sockets.append(s)
        s.sendall(mllp.frame(message.replace(b"ADT20240306-0040", f"C{n:04d}".encode())))
    acks = []
    for s in sockets:
        data = b""
        while not data.endswith(mllp.END):
            data += s.recv(4096)
        s.close()
        acks.append(msa(decode(data[1:-2]).text)[1])
    assert acks == ["AA"] * 1000
    counts = hl7.wait_mapped(120)
    assert counts["mapped"] == 1000
    assert len(hl7.search("Patient?family=欧阳")) == 1  # one patient, a thousand messages


# --- the operations view ------------------------------------------------------------------------


def test_the_message_log_shows_errors_and_replays_after_a_mapping_fix(
    hl7: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integrations.hl7v2 import tables

    unknown_sex = sample("adt_a28_add_person.hl7").replace(b"|20010203|F|", b"|20010203|X|")
    hl7.send(unknown_sex)
    hl7.send(sample("adt_a08_update.hl7"))
    hl7.wait_mapped()
    listing = hl7.client.get("/hl7/messages", params={"status": "error"}).json()
    assert listing["counts"]["error"] == 1 and listing["counts"]["mapped"] == 1
    [failed] = listing["messages"]
    assert failed["error"] == "PID-8: 'X' is not a sex of HL7 table 0001"
    assert failed["errorAt"] == "PID-8" and failed["controlId"] == "ADT20240306-0040"
    detail = hl7.client.get(f"/hl7/messages/{failed['seq']}").json()
    assert detail["segments"][2].startswith("PID|1||0009990001")
    raw = hl7.client.get(f"/hl7/messages/{failed['seq']}/raw")
    assert raw.content == unknown_sex and raw.headers["content-type"].startswith(
        "x-application/hl7-v2+er7")
    # the fix: this site's HIS sends X for "not stated" (a local table entry)
    local = {**tables.local(), "AdministrativeSexLocal": {"X": "unknown"}}
    monkeypatch.setattr(tables, "local", lambda: local)
    replayed = hl7.client.post(f"/hl7/messages/{failed['seq']}/replay").json()
    assert replayed["status"] == "mapped" and replayed["attempts"] == 2
    [patient] = hl7.search("Patient?identifier=0009990001")
    assert patient["gender"] == "unknown"


def test_the_message_log_needs_a_system_token_when_authorization_is_on(
    hl7_with: Callable[..., Harness],
) -> None:
    from joserfc.jwk import ECKey
    from smart import assertion

    from fhir_server.auth import admin

    hl7 = hl7_with(auth="on")
    assert hl7.client.get("/hl7/messages").status_code == 401
    key = ECKey.generate_key("P-384", {"kid": "ops"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}
    store = hl7.services.features["auth"].store
    admin.add_client(store, "hl7-ops", [], jwks=jwks, scope="system/MessageHeader.rs")
    admin.add_client(store, "reader", [], jwks=jwks, scope="system/Patient.rs")

    def token(client_id: str, scope: str) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "scope": scope,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion(key, "ES384", client_id)}  # fmt: skip
        response = hl7.client.post("/auth/token", data=form)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    ops = token("hl7-ops", "system/MessageHeader.rs")
    assert hl7.client.get("/hl7/messages", headers=ops).status_code == 200
    refused = hl7.client.get("/hl7/messages", headers=token("reader", "system/Patient.rs"))
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"
    assert hl7.client.post("/hl7/messages/1/replay", headers=ops).status_code == 403  # read only


def test_receive_only_maps_nothing_until_a_replay(hl7_with: Callable[..., Harness]) -> None:
    hl7 = hl7_with(hl7_map=False)
    assert msa(hl7.send(sample("adt_a28_add_person.hl7")))[1] == "AA"
    time.sleep(0.3)
    assert hl7.inbox.counts(CHANNEL)["received"] == 1 and hl7.search("Patient") == []
