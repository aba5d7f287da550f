"""The DICOM rows of `make bench` (issue 13): C-STORE of CT instances from dcmtk's storescu
into `fhir-server serve --dicom` over loopback, the time until their ImagingStudy is current,
QIDO-RS study searches over many studies (p50/p95), and series metadata for the pushed
series. Targets: >= 300 instances/s, ImagingStudy within 5 s, QIDO p95 <= 20 ms at 10,000
studies, metadata of 1,000 instances <= 1 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from integrations.dicom.dataset import Levels, index_row, read_header
from integrations.dicom.storage.index import Index, InstanceRow

#: OHIF's study list request (integrations.md §3.2) and a filtered one
QIDO = {
    "study list (OHIF)": "/studies?limit=101&offset=0&fuzzymatching=false"
    "&includefield=00081030%2C00080060%2C00080090%2C00100030",
    "PatientName=*ZHANG*": "/studies?PatientName=%2AZHANG%2A&limit=101",
    "StudyDate range": "/studies?StudyDate=20200101-20200131&limit=101",
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _instances(directory: Path, count: int) -> tuple[str, str]:
    """`count` CT_small instances of one new study and series (no trailing padding)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds[0xFFFCFFFC]
    study, series = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, "BENCH"
    directory.mkdir(parents=True)
    for i in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.save_as(directory / f"{i:06d}.dcm", enforce_file_format=True)
    return study, series


def _prefill(storage: Path, studies: int) -> float:
    """`studies` more studies in the index (one instance each; names, IDs and dates varied),
    rows as the store makes them (index_row of CT_small, values replaced), marked as synced:
    the QIDO searches run over them."""
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    template = index_row(read_header(_part10(ds)), "x.dcm", 0, Levels())
    index = Index(storage / "index.db")
    started = time.perf_counter()
    names = ["ZHANG^SAN", "LI^SI", "WANG^WU", "ZHAO^LIU", "CHEN^QI"]
    for n in range(studies):
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        name, date = f"{names[n % 5]}{n}", f"20{10 + n % 15}{1 + n % 12:02d}{1 + n % 28:02d}"
        attrs = orjson.loads(template.study["attrs"])
        attrs["0020000D"]["Value"] = [study]
        attrs["00100010"]["Value"] = [{"Alphabetic": name}]
        attrs["00100020"]["Value"] = [f"P{n}"]
        attrs["00080020"]["Value"] = [date]
        row = InstanceRow(
            {**template.study, "uid": study, "patient_name": name, "patient_id": f"P{n}",
             "study_date": date, "attrs": orjson.dumps(attrs)},
            {**template.series, "uid": series, "study_uid": study},
            {**template.instance, "uid": sop, "series_uid": series, "study_uid": study,
             "path": f"x/{n}.dcm"},
        )  # fmt: skip
        index.put(row, "2020-01-01T00:00:00Z")
        index.mark_synced(study, 1, "")
    index.close()
    return time.perf_counter() - started


def _part10(ds: Any) -> bytes:
    import io

    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95)}


#: where dcmtk's programs are looked up: PATH without this environment's scripts, where
#: pynetdicom installs programs of its own named findscu, storescu... (other options), which an
#: activated virtualenv would put first
_DCMTK_PATH = os.pathsep.join(
    d for d in os.environ.get("PATH", "").split(os.pathsep)
    if d and Path(d).resolve() != Path(sysconfig.get_path("scripts")).resolve()
)  # fmt: skip


def dcmtk_program(name: str) -> str | None:
    """The path of dcmtk's program `name` (or of another peer's), None when not installed
    (the DICOM peer tests use it too)."""
    return shutil.which(name, path=_DCMTK_PATH)


def bench(instances: int = 1000, studies: int = 10000, repeats: int = 100) -> dict[str, Any]:
    storescu = dcmtk_program("storescu")
    if storescu is None:
        return {"skipped": "dcmtk's storescu is not installed (apt-get install dcmtk)"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study, series = _instances(root / "in", instances)
        storage = root / "store"
        storage.mkdir()
        prefill = _prefill(storage, studies)
        port, dimse = _free_port(), _free_port()
        env = {
            **os.environ,
            "FHIR_SERVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/fhir",
            "FHIR_SERVER_DEMO_ON_EMPTY": "false",
            "FHIR_SERVER_AUTH": "off",
            "FHIR_SERVER_DICOM_STORAGE": str(storage),
            "FHIR_SERVER_DICOM_PORT": str(dimse),
            "TCP_NODELAY": "1",  # dcmtk's own switch (integrations.md §2.2)
        }
        command = [sys.executable, "-m", "fhir_server.cli", "serve", "--dicom", "--port",
                   str(port), "--database", str(root / "bench.db")]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait(base, dimse, env)
            files = sorted((root / "in").iterdir())
            started = time.perf_counter()
            done = subprocess.run(
                [storescu, "-aec", "FHIRSERVER", "127.0.0.1", str(dimse), *map(str, files)],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            result: dict[str, Any] = {
                "store": {"instances": instances, "seconds": round(seconds, 2),
                          "per_second": round(instances / seconds, 1),
                          "ok": done.returncode == 0},  # fmt: skip
            }
            result["imaging_study_lag_s"] = _lag(base, study, instances)
            with httpx.Client(base_url=base + "/dicom-web", timeout=60) as client:
                result["qido"] = {"studies": studies + 1, "prefill_s": round(prefill, 1)}
                for name, url in QIDO.items():
                    samples = []
                    for _ in range(repeats):
                        t = time.perf_counter()
                        assert client.get(url).status_code in (200, 204)
                        samples.append(time.perf_counter() - t)
                    result["qido"][name] = _percentiles(samples)
                url = f"/studies/{study}/series/{series}/metadata"
                t = time.perf_counter()
                first = client.get(url)
                cold = time.perf_counter() - t
                warm = []
                for _ in range(5):
                    t = time.perf_counter()
                    client.get(url)
                    warm.append(time.perf_counter() - t)
                result["metadata"] = {"instances": len(first.json()),
                                      "first_s": round(cold, 3),
                                      "again_s": round(sorted(warm)[2], 3)}  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return result


def _wait(base: str, dimse: int, env: dict[str, str]) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            http = httpx.get(f"{base}/fhir/metadata", timeout=2).status_code == 200
        except httpx.HTTPError:
            http = False
        echo = subprocess.run(["echoscu", "-aec", "FHIRSERVER", "127.0.0.1", str(dimse)],
                              env=env, capture_output=True, check=False).returncode == 0
        if http and echo:
            return
        time.sleep(0.5)
    raise RuntimeError("server with DICOM did not start")


def _lag(base: str, study: str, instances: int) -> float | None:
    """Seconds from the last instance acknowledged to an ImagingStudy that counts it."""
    started = time.perf_counter()
    url = f"{base}/fhir/ImagingStudy"
    while time.perf_counter() - started < 60:
        found = httpx.get(url, params={"identifier": f"urn:dicom:uid|urn:oid:{study}"}).json()
        entries = found.get("entry") or []
        if entries and entries[0]["resource"].get("numberOfInstances") == instances:
            return round(time.perf_counter() - started, 2)
        time.sleep(0.1)
    return None


def table(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return [f"DICOM: not measured ({result['skipped']})"]
    store, qido, meta = result["store"], result["qido"], result["metadata"]
    lines = [
        f"DICOM C-STORE (dcmtk storescu, TCP_NODELAY): {store['instances']} CT_small in "
        f"{store['seconds']} s = {store['per_second']} instances/s"
        f"{'' if store['ok'] else ' (storescu reported failures)'}; ImagingStudy current "
        f"{result['imaging_study_lag_s']} s after the last",
        f"QIDO-RS over {qido['studies']:,} studies        p50 ms   p95 ms",
    ]
    for name in QIDO:
        lines.append(f"  {name:<34} {qido[name]['p50_ms']:>8} {qido[name]['p95_ms']:>8}")
    lines.append(
        f"WADO-RS series metadata, {meta['instances']} instances: first {meta['first_s']} s, "
        f"again {meta['again_s']} s"
    )
    return lines
