"""`fhir-server apps register --origin https://host`: register the apps as SMART clients for
the origin users open them at (the demo does this for its own address)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir_server.plugins import Opener
from fhir_server.settings import Settings

from . import clients


def add_commands(sub: Any) -> None:
    apps = sub.add_parser("apps", help="the SMART apps under /apps/")
    cmds = apps.add_subparsers(dest="apps_command", required=True)
    register = cmds.add_parser("register", help="register the apps as SMART clients")
    register.add_argument("--origin", action="append", required=True,
                          help="scheme://host[:port] the apps are opened at (repeatable)")
    register.add_argument("--database", type=Path)
    register.set_defaults(run=register_command)


def register_command(args: Any, settings: Settings, open_services: Opener) -> int:
    services = open_services(settings)
    try:
        print(clients.register(services.features["auth"].store, args.origin))
    finally:
        services.close()
    return 0
