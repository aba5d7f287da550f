"""HL7 v2 over MLLP into FHIR (issue 12): the listener, the inbox, the v2 -> FHIR maps."""
