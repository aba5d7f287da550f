"""What the DICOM tests share: instances made from pydicom's bundled CT, our DIMSE service
over a real database on a free loopback port, and the real peers from Debian (dcmtk's tools,
Orthanc with its DICOMweb plugin) started on loopback. Without the peers those tests skip,
saying so; .ci/run installs them and sets FHIR_SERVER_DICOM_PEERS_REQUIRED=1, so in CI a missing
peer fails instead."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from bench.dicom import dcmtk_program
from fhir_server.app import build_app
from fhir_server.services import Parts, Services
from integrations.dicom import dicom_of
from integrations.dicom.dimse import listen

REQUIRED = os.environ.get("FHIR_SERVER_DICOM_PEERS_REQUIRED") == "1"
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: every dcmtk process runs with this (integrations.md §2.2: Debian's dcmtk stalls ~40 ms per
#: message without it)
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def peer(tool: str) -> str:
    """The path of a peer's program (dcmtk's `storescp`, say), as `need` found it."""
    return dcmtk_program(tool) or tool


def need(*tools: str) -> None:
    """Skip (fail in CI) unless the tools are installed."""
    missing = [t for t in tools if dcmtk_program(t) is None and not Path(t).exists()]
    if missing:
        reason = f"DICOM PEER TEST NOT RUN: {', '.join(missing)} missing (apt-get install dcmtk " \
                 "orthanc orthanc-dicomweb)"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ct(
    study: str | None = None, series: str | None = None, number: int = 1, **attrs: Any
) -> Dataset:
    """pydicom's CT_small (128x128, 16 bit, Explicit VR Little Endian) with new UIDs."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds[0xFFFCFFFC]  # Data Set Trailing Padding: dcmtk drops it when sending
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = number
    for name, value in attrs.items():
        setattr(ds, name, value)
    return ds


def write_study(
    directory: Path, count: int, series_count: int = 1, **attrs: Any
) -> tuple[str, list[Path]]:
    """`count` CT instances of one new study (spread over `series_count` series) as files."""
    directory.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    series = [generate_uid() for _ in range(series_count)]
    paths = []
    for i in range(count):
        ds = ct(study, series[i % series_count], i + 1, SeriesNumber=i % series_count + 1,
                **attrs)  # fmt: skip
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


@dataclass
class Server:
    """Our server: the DIMSE service on `port`, the HTTP app (TestClient) on the same
    Services and database."""

    services: Services
    client: TestClient
    port: int
    ae_title: str
    scp: Any = None

    @property
    def dicom(self) -> Any:
        return dicom_of(self.services)

    def settle(self, timeout: float = 10) -> None:
        """Wait until every stored study's ImagingStudy is written."""
        deadline = time.time() + timeout
        while self.dicom.index.unsynced() and time.time() < deadline:
            time.sleep(0.05)
        assert not self.dicom.index.unsynced(), "ImagingStudy not current in time"


def start_server(tmp: Path, parts: Parts, **settings: Any) -> Iterator[Server]:
    port = free_port()
    config = {"dicom_port": port, "dicom_ae_title": "FHIRSCP", **settings}
    services = make_services(tmp / "fhir.db", parts, **config)
    app = build_app(services.settings, services)
    with TestClient(app, raise_server_exceptions=False) as client:
        server = listen.start(services)
        try:
            yield Server(services, client, port, config["dicom_ae_title"], server)
        finally:
            listen.stop(server)


def dcmtk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool (with TCP_NODELAY) and return what it did; never raises."""
    return subprocess.run(
        [peer(args[0]), *args[1:]], env=NODELAY, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class Orthanc:
    """Orthanc from Debian with its DICOMweb plugin, on loopback: a real PACS."""

    http: str
    port: int
    ae_title: str = "ORTHANC"

    def upload(self, path: Path) -> str:
        answer = httpx.post(f"{self.http}/instances", content=path.read_bytes(), timeout=30)
        answer.raise_for_status()
        return str(answer.json()["ID"])


def start_orthanc(tmp: Path, modalities: dict[str, tuple[str, str, int]]) -> Iterator[Orthanc]:
    """Orthanc with a private configuration (loopback, no authentication, our SCP as a known
    modality), stopped at the end. Orthanc 1.10 binds every interface, with remote REST access
    refused; the DICOM port is a free one, and only loopback peers are configured."""
    need(ORTHANC, ORTHANC_DICOMWEB)
    http_port, dicom_port = free_port(), free_port()
    storage = tmp / "orthanc"
    storage.mkdir()
    config = {
        "Name": "TestPACS",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [ORTHANC_DICOMWEB],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DefaultEncoding": "Utf8",
        "DicomModalities": {name: list(peer) for name, peer in modalities.items()},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                     "Host": f"127.0.0.1:{http_port}", "Ssl": False},  # fmt: skip
    }
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([ORTHANC, str(tmp / "orthanc.json")], env=NODELAY, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError((tmp / "orthanc.log").read_text()[-2000:])
            time.sleep(0.2)
        yield Orthanc(base, dicom_port)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
