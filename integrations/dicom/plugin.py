"""The DICOM integration as a plugin of the console script, `serve` and the app
(fhir_server/plugins.py; entry point in pyproject.toml)."""

from __future__ import annotations

from fhir_server.plugins import Plugin

from . import PREFIXES, cli, register, router

PLUGIN = Plugin(
    name="dicom",
    commands=cli.add_commands,
    serve_options=cli.add_serve_options,
    beside_serve=cli.beside_serve,
    beside_serve_if=cli.wants_listener,
    register=register,
    router=router,
    prefixes=PREFIXES,
)
