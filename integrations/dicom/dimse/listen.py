"""`fhir-server dicom listen`: the DIMSE service until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from fhir_server.services import Services

from ..service import dicom_of
from .network import NoDelayServer
from .scp import application_entity, handlers

log = logging.getLogger("integrations.dicom")


def start(services: Services) -> NoDelayServer:
    """Start the SCP in threads of this process; `stop(server)` ends it."""
    dicom = dicom_of(services)
    config = dicom.config
    ae = application_entity(dicom)
    server = ae.serve((config.host, config.port), handlers(dicom))
    if not dicom.syncer.running:
        dicom.syncer.start()
    allowed = ", ".join(config.allowed) or "any calling AE title"
    log.info("DICOM SCP %s on %s:%d (%s; at most %d associations; store %s)", config.ae_title,
             config.host, server.server_address[1], allowed, config.max_associations,
             config.storage)  # fmt: skip
    return server


def stop(server: NoDelayServer) -> None:
    server.shutdown()
    server.server_close()


def run(services: Services, parent: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT, or until process `parent` is gone (`serve --dicom`:
    uvicorn ends its process by re-raising the signal, so it cannot stop us itself); then
    finish the associations under way, sync what they stored, and return 0."""
    server = start(services)
    done = threading.Event()

    def quit_(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, quit_)
    signal.signal(signal.SIGINT, quit_)
    while not done.wait(1.0):
        if parent is not None and os.getppid() != parent:
            break
    stop(server)
    dicom_of(services).syncer.sync_all()
    return 0
