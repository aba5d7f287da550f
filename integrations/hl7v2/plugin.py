"""The HL7 v2 integration as a plugin of the console script, `serve` and the app
(fhir_server/plugins.py; entry point in pyproject.toml)."""

from __future__ import annotations

from fhir_server.plugins import Plugin

from . import cli, routes

PLUGIN = Plugin(
    name="hl7v2",
    commands=cli.add_commands,
    serve_options=cli.add_serve_options,
    beside_serve=cli.beside_serve,
    beside_serve_if=cli.wants_listener,
    router=routes.router,
    prefixes=("/hl7",),
)
