"""The guide's names in one place: our canonical base and the URLs of the profiles, extensions,
code systems and identifier systems the referral feature reads and writes."""

from __future__ import annotations

#: canonical base of our implementation guide (profiles/) and terminology (terminology/)
CANONICAL = "https://yilian.health/fhir"
SD = f"{CANONICAL}/StructureDefinition/"
CS = f"{CANONICAL}/CodeSystem/"
VS = f"{CANONICAL}/ValueSet/"
OPDEF = f"{CANONICAL}/OperationDefinition/"
SID = f"{CANONICAL}/sid/"

TASK_PROFILE = f"{SD}yl-referral-task"
REQUEST_PROFILE = f"{SD}yl-referral-request"
DIRECTION_URL = f"{SD}yl-referral-direction"
MILESTONES_URL = f"{SD}yl-milestones"
STATUS_REASON_URL = f"{SD}yl-status-reason"
ORG_LEVEL_URL = f"{SD}yl-org-level"

BUSINESS_SYSTEM = f"{CS}yl-referral-business-status"
BUSINESS_VALUESET = f"{VS}yl-referral-business-status"
TRANSITION_SYSTEM = f"{CS}yl-transition"
MILESTONE_SYSTEM = f"{CS}yl-milestone"
TYPE_SYSTEM = f"{CS}yl-referral-type"
OUTPUT_SYSTEM = f"{CS}yl-task-output"
SLIP_SECTION_SYSTEM = f"{CS}yl-referral-slip-section"

REFERRAL_NUMBER = f"{SID}referral-number"
HEALTH_RECORD_NUMBER = f"{SID}health-record-number"
