"""fhir-server dicom listen | pull, and `serve --dicom` (the DIMSE service in a process of its
own beside the HTTP workers)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fhir_server.plugins import Opener
from fhir_server.services import Services
from fhir_server.settings import Settings


def add_commands(sub: Any) -> None:
    """dicom listen | pull: the DIMSE service and the SCU that fetches studies."""
    dicom = sub.add_parser("dicom", help="DICOM: the DIMSE service and pulling studies")
    dsub = dicom.add_subparsers(dest="dicom_command", required=True)
    listen = dsub.add_parser("listen", help="run the DIMSE service (C-ECHO, C-STORE, C-FIND, "
                             "C-MOVE, C-GET) on the instance store")  # fmt: skip
    listen.add_argument("--ae-title", dest="dicom_ae_title",
                        help="our AE title (setting dicom_ae_title)")  # fmt: skip
    listen.add_argument("--port", dest="dicom_port", type=int, help="DIMSE port (dicom_port)")
    listen.add_argument("--host", help="address to listen on (setting host)")
    listen.add_argument("--database", type=Path)
    listen.set_defaults(run=listen_command)
    pull = dsub.add_parser("pull", help="fetch a study from a PACS in dicom_peers")
    pull.add_argument("--from", dest="peer", required=True, help="the PACS's AE title")
    pull.add_argument("--study", required=True, help="StudyInstanceUID")
    pull.add_argument("--move", action="store_true",
                      help="C-MOVE to our AE title (the PACS must know it) instead of C-GET")
    pull.add_argument("--database", type=Path)
    pull.set_defaults(run=pull_command)


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--dicom", dest="dicom_listen", action="store_const", const=True,
                       help="also run the DIMSE service (dicom listen), in a process of its own")


def wants_listener(settings: Settings) -> bool:
    return settings.dicom_listen


def run_listener(services: Services) -> int:
    """The DIMSE service until SIGTERM or SIGINT (also `serve --dicom`'s process body, which
    `serve` ends with SIGTERM when it goes)."""
    from .dimse import listen

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return listen.run(services)
    finally:
        services.close()


def beside_serve(services: Services, opener: Opener) -> None:
    run_listener(services)


def listen_command(args: argparse.Namespace, settings: Settings, open_services: Opener) -> int:
    try:
        return run_listener(open_services(settings))
    except (OSError, ValueError) as exc:
        print(f"fhir-server dicom listen: {exc}", file=sys.stderr)
        return 1


def pull_command(args: argparse.Namespace, settings: Settings, open_services: Opener) -> int:
    from .dimse.pull import PullError, pull

    services = open_services(settings)
    try:
        done = pull(services, args.peer, args.study, "move" if args.move else "get")
    except (PullError, ValueError) as exc:
        print(f"fhir-server dicom pull: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    print(json.dumps({"completed": done.completed, "failed": done.failed,
                      "warning": done.warning, "imagingStudy": done.imaging_study}))  # fmt: skip
    return 1 if done.failed else 0
