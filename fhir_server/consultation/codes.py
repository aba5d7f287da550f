"""The guide's names the consultation feature reads and writes: profiles, code systems and the
LOINC and SNOMED codes of a remote consultation (referral-model.md §2.9)."""

from __future__ import annotations

from ..referral.codes import CS, OPDEF, SD, VS

__all__ = ["CS", "OPDEF", "SD", "VS"]

REQUEST_PROFILE = f"{SD}yl-consultation-request"
TASK_PROFILE = f"{SD}yl-consultation-task"
OPINION_PROFILE = f"{SD}yl-consultation-opinion"

BUSINESS_SYSTEM = f"{CS}yl-consultation-business-status"
BUSINESS_VALUESET = f"{VS}yl-consultation-business-status"
TRANSITION_SYSTEM = f"{CS}yl-consultation-transition"
TYPE_SYSTEM = f"{CS}yl-consultation-type"
ROLE_SYSTEM = f"{CS}yl-consultation-role"
SECTION_SYSTEM = f"{CS}yl-consultation-opinion-section"
MESSAGE_SYSTEM = f"{CS}yl-communication-category"
OUTPUT_SYSTEM = f"{CS}yl-task-output"

#: ServiceRequest.category of every consultation: SNOMED CT 11429006 Consultation
SNOMED = "http://snomed.info/sct"
CONSULTATION = "11429006"
#: Composition.type of the opinion: LOINC 11488-4 Consult note
LOINC = "http://loinc.org"
CONSULT_NOTE = "11488-4"
#: Encounter.class of the session: v3-ActCode VR (virtual)
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
