"""The DICOM settings, parsed: AE titles (PS3.5 §6.2: up to 16 characters of the default
repertoire, no backslash or control characters) and network peers `AET=host:port`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fhir_server.settings import Settings

_AET = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


@dataclass(frozen=True)
class Peer:
    """A remote application entity we associate with."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class DicomConfig:
    ae_title: str
    port: int
    host: str
    storage: Path
    #: calling AE titles accepted; empty: any
    allowed: tuple[str, ...]
    #: C-MOVE destinations, by AE title
    destinations: dict[str, Peer]
    #: PACS we pull from, by AE title
    peers: dict[str, Peer]
    max_associations: int

    @classmethod
    def of(cls, settings: Settings) -> DicomConfig:
        """Raises ValueError naming the setting that is malformed."""
        return cls(
            ae_title=ae_title(settings.dicom_ae_title, "dicom_ae_title"),
            port=settings.dicom_port,
            host=settings.host,
            storage=storage_dir(settings),
            allowed=tuple(
                ae_title(a, "dicom_allowed_aets") for a in _items(settings.dicom_allowed_aets)
            ),
            destinations=peers(settings.dicom_move_destinations, "dicom_move_destinations"),
            peers=peers(settings.dicom_peers, "dicom_peers"),
            max_associations=settings.dicom_max_associations,
        )


def storage_dir(settings: Settings) -> Path:
    """Where Part-10 files and their index live: `dicom_storage`, else beside the database."""
    if settings.dicom_storage is not None:
        return settings.dicom_storage
    return settings.database.with_name(settings.database.name + ".dicom")


def ae_title(value: str, setting: str) -> str:
    title = value.strip()
    if not _AET.fullmatch(title):
        raise ValueError(f"{setting}: '{value}' is not an AE title (1-16 characters, no '\\')")
    return title


def peers(value: str, setting: str) -> dict[str, Peer]:
    """`AET=host:port,...` as {AET: Peer}."""
    out = {}
    for item in _items(value):
        title, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{setting}: '{item}' is not AET=host:port")
        peer = Peer(ae_title(title, setting), host.strip("[]"), int(port))
        out[peer.ae_title] = peer
    return out


def _items(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
