"""Integrations: adapters between hospital protocols (HL7 v2, DICOM) and the FHIR core. They
import the core's write and search paths, never its storage; the core never imports them (the
wiring in fhir_server/app.py and cli.py does)."""
