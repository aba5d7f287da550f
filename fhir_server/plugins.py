"""Packages outside the core (the integrations) plug into the console script, `serve` and the
app through the `fhir_server.plugins` entry-point group (pyproject.toml). The core finds them
by name at start-up and never imports them, so imports keep pointing one way (ARCHITECTURE.md:
core <- features <- integrations <- apps)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: a plugin is handed these, the core builds them
    from .services import Services
    from .settings import Settings

GROUP = "fhir_server.plugins"
#: opens Services as the server does (wired: features, plugins, the guide stored)
Opener = Callable[["Settings"], "Services"]


@dataclass(frozen=True)
class Plugin:
    """What one package adds. Every part is optional."""

    name: str
    #: adds the package's commands to the console script, given its subparsers; a command's
    #: parser sets `run=fn(args, settings, open_services) -> exit code` with set_defaults.
    #: Options whose `dest` is a Settings field override that setting, as the core's own
    #: flags do.
    commands: Callable[[Any], None] | None = None
    #: adds options to `serve` (same rule for `dest`)
    serve_options: Callable[[argparse.ArgumentParser], None] | None = None
    #: `serve` runs this in a process of its own beside the HTTP workers, given Services
    #: opened as the server opens them and the Opener (for processes of its own), when
    #: `beside_serve_if(settings)` is true
    beside_serve: Callable[[Services, Opener], None] | None = None
    beside_serve_if: Callable[[Settings], bool] | None = None
    #: called when Services are wired (app and console script): operations, hooks, state
    register: Callable[[Services], None] | None = None
    #: HTTP routes (a FastAPI APIRouter, its paths whole), and the path prefixes of them that
    #: the bearer-token check and CORS govern as they govern /fhir
    router: Any = None
    prefixes: tuple[str, ...] = ()
    #: called after the demo consortium is loaded (`fhir-server demo`, `serve` on an empty
    #: database): registers the package's demo parts (e.g. SMART clients); a console line
    demo: Callable[[Services], str] | None = None


@cache
def plugins() -> tuple[Plugin, ...]:
    """The installed plugins, in name order (so the order of their commands is stable)."""
    found = [ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)]
    for plugin in found:
        if not isinstance(plugin, Plugin):
            raise TypeError(f"entry point of group {GROUP} is not a Plugin: {plugin!r}")
    return tuple(found)
