"""The apps as a plugin of the console script, the app and the demo (fhir_server/plugins.py;
entry point in pyproject.toml)."""

from __future__ import annotations

from fhir_server.plugins import Plugin

from . import cli, clients, routes

PLUGIN = Plugin(
    name="apps",
    commands=cli.add_commands,
    router=routes.router,
    demo=clients.register_demo,
)
