"""The DICOM integration's state in one process: its settings, the instance store and the
ImagingStudy syncer, opened on first use (a `fhir-server load` never creates a store)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from fhir_server.services import Services

from .config import DicomConfig
from .storage.files import Files
from .storage.index import Index
from .store import InstanceStore
from .sync import Syncer


@dataclass
class Dicom:
    services: Services
    config: DicomConfig
    index: Index
    store: InstanceStore
    syncer: Syncer

    def close(self) -> None:
        self.syncer.stop()
        self.index.close()


class Lazy:
    """Services.features["dicom"]: the Dicom state, opened by the first caller."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._opened: Dicom | None = None
        self._lock = threading.Lock()

    def get(self) -> Dicom:
        with self._lock:
            if self._opened is None:
                self._opened = _open(self.services)
            return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()


def _open(services: Services) -> Dicom:
    from .web.metadata import warm

    config = DicomConfig.of(services.settings)
    config.storage.mkdir(parents=True, exist_ok=True)
    index = Index(config.storage / "index.db", services.settings.lock_timeout_seconds)
    store = InstanceStore(Files(config.storage / "files"), index)

    def warming(stop: Any) -> None:
        warm(store, stop)

    # started by the DIMSE listener (dimse/listen.py), where instances arrive one by one;
    # STOW-RS writes its ImagingStudies itself before it answers
    syncer = Syncer(services, index, warming)
    return Dicom(services, config, index, store, syncer)


def register(services: Services) -> None:
    """Keep the (lazy) DICOM state on Services; close it with them."""
    lazy = Lazy(services)
    services.features["dicom"] = lazy
    services.hooks.on_close.append(lazy.close)


def dicom_of(services: Services) -> Dicom:
    lazy: Lazy = services.features["dicom"]
    return lazy.get()
