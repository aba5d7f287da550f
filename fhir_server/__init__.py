"""HL7 FHIR R4 server for hospital consortia."""

__version__ = "0.1.0"
