"""Integrations: adapters between hospital protocols (HL7 v2, DICOM) and the FHIR core. They
write through the core's interactions (validation, policy, hooks, history), never its storage,
and the core never imports them: each registers itself as a plugin (fhir_server/plugins.py)
through an entry point in pyproject.toml."""
