"""`make bench`: ingest, read-by-id and search figures for this machine, as a table and JSON,
and what the audit trail (on by default) costs.

Starts its own server process on a fresh database, drives it over HTTP with an asyncio client,
and stops it. `--scale N` also loads the Synthea data N times over (ids rewritten) and repeats
the searches, to show how their cost grows with size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench import people
from fhir_server.loader import read_bytes

from . import dicom

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA = ROOT.parent / "shared" / "synthea"

#: ten typical searches; {patient} and {org} are filled from the loaded data
SEARCHES: list[tuple[str, str]] = [
    ("token", "/Observation?code=http://loinc.org|8867-4&_count=20"),
    ("date range", "/Encounter?date=ge2015-01-01&date=lt2016-01-01&_count=20"),
    ("string", "/Patient?family=Sch&_count=20"),
    ("reference", "/Observation?subject=Patient/{patient}&_count=50"),
    ("chain", "/Observation?subject:Patient.family={family}&_count=20"),
    ("_has", "/Patient?_has:Condition:subject:code=http://snomed.info/sct|44054006&_count=20"),
    (
        "_include",
        "/MedicationRequest?subject=Patient/{patient}&_include=MedicationRequest:medication",
    ),
    ("_revinclude", "/Patient?_id={patient}&_revinclude=Encounter:subject&_count=50"),
    # timed on the page after the first, reached through its `next` link
    ("sorted+paged", "/Observation?category=vital-signs&_sort=-date&_count=20"),
    ("_summary=count", "/Claim?status=active&_summary=count"),
]


def ordered_files(directory: Path, limit: int | None = None) -> list[Path]:
    """Hospital and practitioner batches first (the patients' conditional references need them)."""
    files = sorted(directory.glob("*.json.bz2"))
    first = [f for f in files if f.name.startswith("0-")]
    rest = [f for f in files if not f.name.startswith("0-")]
    return first + (rest[:limit] if limit is not None else rest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(
    database: Path, workers: int = 1, audit: bool = True
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real server as a separate process, as users run it (the audit trail on, as by
    default, unless `audit` is false)."""
    port = free_port()
    env = {
        **os.environ,
        "FHIR_SERVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/fhir",
        "FHIR_SERVER_DEMO_ON_EMPTY": "false",  # measure the Synthea data alone
        # the harness posts and reads without a token; the read load is measured again with one
        "FHIR_SERVER_AUTH": "off",
        "FHIR_SERVER_AUDIT": str(audit).lower(),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fhir_server.cli",
            "serve",
            "--port",
            str(port),
            "--database",
            str(database),
            "--workers",
            str(workers),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not start")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of the server: the process and its workers, added up."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        total += peak_rss_mb(int(child))
    return total


def ingest(base: str, files: list[Path], concurrency: int = 1) -> dict[str, Any]:
    """POST every bundle: the hospital and practitioner batches first, then the patients'
    transactions from `concurrency` clients at once; resources/s over the whole run
    (decompression excluded)."""
    bodies = [(f.name.startswith("0-"), read_bytes(f)) for f in files]
    resources = sum(len(orjson.loads(b).get("entry", [])) for _, b in bodies)

    def post(body: bytes) -> int:
        with httpx.Client(timeout=600) as client:
            r = client.post(base, content=body, headers={"content-type": "application/fhir+json"})
        if r.status_code != 200:
            return len(orjson.loads(body).get("entry", []))
        return sum(1 for e in r.json()["entry"] if not e["response"]["status"].startswith("2"))

    started = time.perf_counter()
    failed = sum(post(b) for first, b in bodies if first)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        failed += sum(pool.map(post, [b for first, b in bodies if not first]))
    seconds = time.perf_counter() - started
    return {
        "resources": resources,
        "failed": failed,
        "seconds": round(seconds, 2),
        "per_second": round(resources / seconds, 1),
        "clients": concurrency,
    }


_UUID = re.compile(rb"(?<![|0-9a-f])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def copy_of(body: bytes, copy: int) -> bytes:
    """A patient bundle with every id and uuid rewritten for `copy`: new patients with the
    same clinical content. Identifiers after `|` (the conditional references to the shared
    hospitals and practitioners) are kept, so copies refer to the same organisations."""
    namespace = uuid.UUID(int=copy)
    return _UUID.sub(lambda m: str(uuid.uuid5(namespace, m.group().decode())).encode(), body)


def scale(base: str, files: list[Path], copies: int, concurrency: int) -> dict[str, Any]:
    """Load `copies` more rewritten copies of the patient bundles (the generator of the
    Scale benchmark), then report how many resources the server holds."""
    patients = [f for f in files if not f.name.startswith("0-")]
    with httpx.Client(timeout=600) as client:
        before = _data_count(client, base)
    started = time.perf_counter()
    loaded = failed = 0
    for copy in range(1, copies + 1):
        with tempfile.TemporaryDirectory() as tmp:
            rewritten = []
            for f in patients:
                out = Path(tmp) / f.name.replace(".bz2", "")
                out.write_bytes(copy_of(read_bytes(f), copy))
                rewritten.append(out)
            result = ingest(base, rewritten, concurrency)
        loaded += result["resources"]
        failed += result["failed"]
    seconds = time.perf_counter() - started
    with httpx.Client(timeout=600) as client:
        total = _data_count(client, base)
    return {
        "added": loaded,
        "failed": failed,
        "seconds": round(seconds, 1),
        "per_second": round(loaded / seconds, 1),
        "resources_before": before,
        "resources": total,
    }


def _data_count(client: httpx.Client, base: str) -> int:
    """Resources stored, the audit trail aside (its read audits arrive in the background:
    count until the AuditEvent count holds still around the total)."""

    def audits() -> int:
        total: int = client.get(f"{base}/AuditEvent?_summary=count").json()["total"]
        return total

    while True:
        first = audits()
        total: int = client.get(f"{base}?_summary=count").json()["total"]
        if audits() == first:
            return total - first
        time.sleep(0.3)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server: the process and its workers, added up."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        total += cpu_seconds(int(child))
    return total


def audit_settled(database: Path, timeout: float = 120) -> None:
    """Wait until the audit writer has expanded every record (it holds expansion back while
    requests keep coming), so that CPU measured afterwards includes that work."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with sqlite3.connect(database, timeout=30) as conn:
            if not conn.execute("SELECT count(*) FROM audit_pending").fetchone()[0]:
                return
        time.sleep(0.5)


def patients_transaction(count: int) -> bytes:
    """A transaction of `count` new Patients (the ingest shape of a registration batch)."""
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
         "resource": {"resourceType": "Patient", "name": [{"family": f"F{i}", "given": ["G"]}],
                      "gender": "female", "birthDate": "1970-01-01"},
         "request": {"method": "POST", "url": "Patient"}}
        for i in range(count)
    ]  # fmt: skip
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def audit_cost(
    database: Path, workers: int, clients: int, seconds: float, rounds: int = 2
) -> dict[str, Any]:
    """The audit trail on (the default) and off, on the same data, interleaved round by
    round (the machine is shared and noisy): read by id (req/s, p95, and the server's CPU per
    read including the AuditEvents it expands after the load), and the median time of three
    500-Patient transactions and of 20 single creates. Medians over the rounds."""
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    body = patients_transaction(500)
    headers = {"content-type": "application/fhir+json"}
    one = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Single"}]})
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            with server(database, workers, audit=mode == "on") as (base, proc):
                audit_settled(database)
                before = cpu_seconds(proc.pid)
                read = read_by_id(base, clients, seconds)
                audit_settled(database)
                cpu = (cpu_seconds(proc.pid) - before) / max(read["requests"], 1)
                times, singles = [], []
                with httpx.Client(timeout=600) as client:
                    for _ in range(3):
                        t0 = time.perf_counter()
                        client.post(base, content=body, headers=headers).raise_for_status()
                        times.append(time.perf_counter() - t0)
                        audit_settled(database)
                    for _ in range(20):
                        t0 = time.perf_counter()
                        client.post(f"{base}/Patient", content=one,
                                    headers=headers).raise_for_status()  # fmt: skip
                        singles.append(time.perf_counter() - t0)
            runs[mode].append({
                "req_per_s": read["req_per_s"], "p95_ms": read["p95_ms"],
                "cpu_ms_per_read": cpu * 1000,
                "transaction_500_ms": sorted(times)[1] * 1000,
                "create_ms": sorted(singles)[len(singles) // 2] * 1000,
            })  # fmt: skip
    out: dict[str, Any] = {"rounds": rounds}
    for mode, results in runs.items():
        out[mode] = {
            key: round(sorted(r[key] for r in results)[len(results) // 2], 2)
            for key in results[0]
        }
    return out


def physical_baseline(files: list[Path]) -> dict[str, Any]:
    """The floor: parse each bundle with orjson and insert each resource as a blob, no more."""
    bodies = [read_bytes(f) for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "baseline.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, type TEXT, json BLOB)")
        count = 0
        started = time.perf_counter()
        for body in bodies:
            entries = orjson.loads(body).get("entry", [])
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO r (type, json) VALUES (?, ?)",
                [(e["resource"]["resourceType"], orjson.dumps(e["resource"])) for e in entries],
            )
            conn.execute("COMMIT")
            count += len(entries)
        seconds = time.perf_counter() - started
        conn.close()
    return {
        "resources": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


def backend_token(base: str, database: Path) -> str:
    """A SMART Backend Services token (`system/*.rs`, private_key_jwt RS384) from the server
    under test, for the read load with authorization: a client registered as the console
    script does, a signed assertion, the token endpoint."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, {"kid": "bench"}, private=True)
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp) / "bench.jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
        subprocess.run(
            [sys.executable, "-m", "fhir_server.cli", "client", "add", "--database",
             str(database), "--client-id", "bench", "--jwks", str(jwks), "--scope",
             "system/*.rs"],
            check=True, capture_output=True,
        )  # fmt: skip
    token_url = base.rsplit("/fhir", 1)[0] + "/auth/token"
    now = int(time.time())
    claims = {"iss": "bench", "sub": "bench", "aud": token_url, "exp": now + 240,
              "jti": os.urandom(16).hex()}  # fmt: skip
    signed = jwt.encode({"alg": "RS384", "kid": "bench", "typ": "JWT"}, claims, key,
                        algorithms=["RS384"])  # fmt: skip
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
    answer = httpx.post(token_url, data=form, timeout=30)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


async def _read_load(
    base: str, ids: list[str], clients: int, seconds: float, token: str | None = None
) -> dict[str, Any]:
    """Closed loop: each client sends the next read as soon as the last one answered."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=30, headers=headers
    ) as client:

        async def worker() -> None:
            nonlocal errors
            rng = random.Random()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.get(f"/{rng.choice(ids)}")
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "tool": "asyncio client",
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed, 1),
        **percentiles(latencies),
    }


def read_by_id(
    base: str, clients: int, seconds: float, token: str | None = None,
    ids: list[str] | None = None,
) -> dict[str, Any]:
    """wrk (Debian package `wrk`) when installed: a C load generator leaves the CPU to the
    server; otherwise the asyncio client, which competes with the server for the 2 cores.
    With `token`, every read carries it (bearer check + scope policy on each request)."""
    if ids is None:
        ids = sample_ids(base, ["Patient", "Observation", "Encounter", "Condition"], 200)
    if shutil.which("wrk"):
        return _wrk(base, ids, clients, seconds, token)
    return asyncio.run(_read_load(base, ids, clients, seconds, token))


def read_with_and_without_token(
    base: str, database: Path, pid: int, token: str, clients: int, seconds: float, rounds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The read load without and with `token`, `rounds` runs of `seconds` each, in the order
    A B B A A B ...: on a shared machine the load of others drifts, and alternating lets the
    drift fall on both alike. Per mode: requests and errors summed, req/s over all its runs,
    latency percentiles and the server's CPU per request (process `pid`, with the AuditEvents
    it expands after the load: a token's reads name more agents) the median of its runs';
    `rounds`: each run's req/s. CPU per request is what the load of other processes disturbs
    least (throughput swings with it)."""
    ids = sample_ids(base, ["Patient", "Observation", "Encounter", "Condition"], 200)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for r in range(rounds):
        for with_token in (False, True) if r % 2 == 0 else (True, False):
            audit_settled(database)
            before = cpu_seconds(pid)
            run = read_by_id(base, clients, seconds, token if with_token else None, ids)
            audit_settled(database)
            used = cpu_seconds(pid) - before
            run["cpu_us_per_request"] = round(used / max(run["requests"], 1) * 1e6, 1)
            runs[with_token].append(run)
    plain, bearer = _combined(runs[False]), _combined(runs[True])
    # each round's pair ran back to back: its ratios are the least disturbed by the drift
    pairs = list(zip(runs[False], runs[True], strict=True))
    ratios = sorted(b["req_per_s"] / max(a["req_per_s"], 1e-9) for a, b in pairs)
    bearer["fraction_of_read"] = round(ratios[len(ratios) // 2], 3)
    cpu = sorted(b["cpu_us_per_request"] / max(a["cpu_us_per_request"], 1e-9) for a, b in pairs)
    bearer["cpu_of_read"] = round(cpu[len(cpu) // 2], 3)
    return plain, bearer


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        values = sorted(r[key] for r in runs)
        return float(values[len(values) // 2])

    requests = sum(r["requests"] for r in runs)
    elapsed = sum(r["requests"] / max(r["req_per_s"], 1e-9) for r in runs)
    return {
        **runs[0],
        "requests": requests,
        "errors": sum(r["errors"] for r in runs),
        "req_per_s": round(requests / max(elapsed, 1e-9), 1),
        "p50_ms": median("p50_ms"),
        "p95_ms": median("p95_ms"),
        "p99_ms": median("p99_ms"),
        "cpu_us_per_request": median("cpu_us_per_request"),
        "rounds": [r["req_per_s"] for r in runs],
    }


_WRK_SCRIPT = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "%s/" .. ids[(i %% #ids) + 1], %s)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON {"requests": %%d, "errors": %%d, "p50": %%f, "p95": %%f, '
    .. '"p99": %%f}', summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)) .. string.char(10))
end
"""


def _wrk(
    base: str, ids: list[str], clients: int, seconds: float, token: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        id_file = Path(tmp) / "ids.txt"
        id_file.write_text("\n".join(ids))
        script = Path(tmp) / "read.lua"
        path = urlsplit(base).path
        headers = f'{{["Authorization"] = "Bearer {token}"}}' if token else "nil"
        script.write_text(_WRK_SCRIPT % (id_file, path, headers))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{clients}",
                f"-d{max(1, int(seconds))}s",
                "-s",
                str(script),
                base.rsplit(path, 1)[0],
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    data = orjson.loads(line[5:])
    return {
        "tool": "wrk",
        "clients": clients,
        "requests": data["requests"],
        "errors": data["errors"],
        "req_per_s": round(data["requests"] / int(max(1, seconds)), 1),
        "p50_ms": round(data["p50"] / 1000, 2),
        "p95_ms": round(data["p95"] / 1000, 2),
        "p99_ms": round(data["p99"] / 1000, 2),
    }


def sample_ids(base: str, types: list[str], per_type: int) -> list[str]:
    out: list[str] = []
    with httpx.Client(timeout=60) as client:
        for t in types:
            bundle = client.get(f"{base}/{t}?_count={per_type}&_elements=id").json()
            out += [f"{t}/{e['resource']['id']}" for e in bundle.get("entry", [])]
    return out


def search(base: str, repeats: int) -> dict[str, Any]:
    """Each typical search `repeats` times, sequentially, after one warm-up call."""
    with httpx.Client(timeout=120) as client:
        patient = client.get(f"{base}/Patient?_count=1&_sort=_id").json()["entry"][0]["resource"]
        values = {"patient": patient["id"], "family": patient["name"][0]["family"]}
        out: dict[str, Any] = {}
        for name, template in SEARCHES:
            url = base + template.format(**values)
            first = client.get(url)
            if name == "sorted+paged":
                url = next(lk["url"] for lk in first.json()["link"] if lk["relation"] == "next")
                first = client.get(url)
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = client.get(url)
                samples.append(time.perf_counter() - t0)
            body = first.json()
            out[name] = {
                "status": r.status_code,
                "total": body.get("total"),
                **percentiles(samples),
            }
    return out


# --- the patient-centred data centre (issue 15): export, $everything, $match ----------------


def export_speed(base: str) -> dict[str, Any]:
    """A system-level Bulk Data export of everything stored: resources written to NDJSON per
    second, from the kick-off to the manifest (polled every 20 ms)."""
    with httpx.Client(timeout=600) as client:
        started = time.perf_counter()
        kick = client.get(f"{base}/$export", headers={"Prefer": "respond-async"})
        kick.raise_for_status()
        location = kick.headers["content-location"]
        while (status := client.get(location)).status_code == 202:
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        status.raise_for_status()
        manifest = status.json()
        client.delete(location)
    resources = sum(item["count"] for item in manifest["output"])
    return {"resources": resources, "files": len(manifest["output"]),
            "seconds": round(seconds, 2), "per_second": round(resources / seconds, 1)}  # fmt: skip


def everything_speed(base: str, patients: int, repeats: int) -> dict[str, Any]:
    """Patient/$everything of Synthea patients (each whole record in one bundle), sequentially."""
    with httpx.Client(timeout=120) as client:
        found = client.get(f"{base}/Patient?_count={patients}&_elements=id").json()
        ids = [e["resource"]["id"] for e in found.get("entry", [])]
        samples, sizes = [], []
        for pid in ids:
            client.get(f"{base}/Patient/{pid}/$everything")  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = client.get(f"{base}/Patient/{pid}/$everything")
                samples.append(time.perf_counter() - t0)
            r.raise_for_status()
            sizes.append(len(r.json().get("entry", [])))
    return {"patients": len(ids), "mean_entries": round(sum(sizes) / max(len(sizes), 1), 1),
            **percentiles(samples)}  # fmt: skip


def match_speed(base: str, count: int, queries: int) -> dict[str, Any]:
    """Load `count` synthetic Chinese patients (transactions of 1,000), then time $match
    questions a registration desk asks about them (bench/people.py)."""
    population = people.population(count)
    with httpx.Client(timeout=600) as client:
        started = time.perf_counter()
        for i in range(0, count, 1000):
            chunk = population[i : i + 1000]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": p, "request": {"method": "POST", "url": "Patient"}} for p in chunk]}
            r = client.post(base, content=orjson.dumps(bundle),
                            headers={"content-type": "application/fhir+json"})  # fmt: skip
            r.raise_for_status()
        loading = time.perf_counter() - started
        total = client.get(f"{base}/Patient?_summary=count").json()["total"]
        samples, found = [], 0
        for q in people.queries(population, queries):
            body = orjson.dumps({"resourceType": "Parameters",
                                 "parameter": [{"name": "resource", "resource": q}]})  # fmt: skip
            t0 = time.perf_counter()
            r = client.post(f"{base}/Patient/$match", content=body,
                            headers={"content-type": "application/fhir+json"})  # fmt: skip
            samples.append(time.perf_counter() - t0)
            r.raise_for_status()
            found += bool(r.json().get("entry"))
    return {"patients": total, "loaded_per_second": round(count / loading, 1),
            "queries": queries, "answered_with_matches": found, **percentiles(samples)}  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }


def run(
    files: list[Path],
    clients: int,
    seconds: float,
    repeats: int,
    workers: int = 2,
    ingest_clients: int = 2,
    copies: int = 1,
    audit_rounds: int = 2,
    match_patients: int = 100_000,
    dicom_instances: int = 1000,
    dicom_studies: int = 10000,
    rounds: int = 3,
    ingest_only: bool = False,
    audit: bool = True,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        with server(Path(tmp) / "bench.db", workers, audit) as (base, proc):
            database = Path(tmp) / "bench.db"
            result: dict[str, Any] = {
                "machine": machine(),
                "date": datetime.now(UTC).isoformat(),
                "workers": workers,
            }
            result["ingest"] = ingest(base, files, ingest_clients)
            result["ingest"]["peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
            result["baseline"] = physical_baseline(files)
            result["ingest"]["fraction_of_baseline"] = round(
                result["ingest"]["per_second"] / result["baseline"]["per_second"], 3
            )
            result["ingest"]["audit"] = audit
            if ingest_only:
                return result
            result["read"], result["read_with_token"] = read_with_and_without_token(
                base, database, proc.pid, backend_token(base, database), clients, seconds,
                rounds,
            )
            result["search"] = search(base, repeats)
            result["export"] = export_speed(base)
            result["everything"] = everything_speed(base, 50, max(1, repeats // 5))
            result["match"] = match_speed(base, match_patients, max(20, repeats * 10))
            if copies > 1:
                result["scale"] = scale(base, files, copies - 1, ingest_clients)
                result["scale"]["search"] = search(base, repeats)
        # audit on vs off, on the same data
        result["audit"] = audit_cost(Path(tmp) / "bench.db", workers, clients, seconds,
                                     audit_rounds)  # fmt: skip
        # DICOM: a server of its own (serve --dicom), after the FHIR load has stopped
        result["dicom"] = dicom.bench(dicom_instances, dicom_studies, max(repeats, 5) * 5)
    return result


def table(result: dict[str, Any]) -> str:
    ing, base = result["ingest"], result["baseline"]
    lines = [
        f"machine: {result['machine']}; server workers: {result['workers']}",
        f"ingest ({ing['clients']} clients, audit trail {'on' if ing['audit'] else 'off'}): "
        f"{ing['resources']} resources in {ing['seconds']} s = {ing['per_second']}/s "
        f"({ing['failed']} failed; peak RSS {ing['peak_rss_mb']} MB; "
        f"{ing['fraction_of_baseline']:.1%} of the physical baseline {base['per_second']}/s)",
    ]
    if "read" not in result:  # --ingest-only
        return "\n".join(lines)
    rd = result["read"]
    lines += [
        f"read by id ({rd['tool']}): {rd['req_per_s']} req/s with {rd['clients']} clients; "
        f"p50 {rd['p50_ms']} ms,"
        f" p95 {rd['p95_ms']} ms, p99 {rd['p99_ms']} ms ({rd['errors']} errors)",
    ]
    tok = result.get("read_with_token")
    if tok:
        lines.append(
            f"read by id with a token (system/*.rs): {tok['req_per_s']} req/s; p50 "
            f"{tok['p50_ms']} ms, p95 {tok['p95_ms']} ms, p99 {tok['p99_ms']} ms "
            f"({tok['errors']} errors; {tok['fraction_of_read']:.0%} of the throughput without, "
            f"median of {len(tok['rounds'])} interleaved rounds)"
        )
        lines.append(
            f"server CPU per read: {rd['cpu_us_per_request']} us without a token, "
            f"{tok['cpu_us_per_request']} us with ({tok['cpu_of_read']:.0%} of without, median "
            "of the rounds)"
        )
    lines += [
        "search                  total      p50 ms   p95 ms",
    ]
    scaled = result.get("scale")
    if scaled:
        lines[-1] += f"   (at {scaled['resources']:,} resources: total, p50 ms, p95 ms)"
    for name, s in result["search"].items():
        line = f"{name:<22} {s['total']!s:>7} {s['p50_ms']:>10} {s['p95_ms']:>8}"
        if scaled:
            big = scaled["search"][name]
            line += f"   {big['total']!s:>8} {big['p50_ms']:>8} {big['p95_ms']:>8}"
        lines.append(line)
    if scaled:
        lines.append(
            f"scale: {scaled['added']:,} more resources in {scaled['seconds']} s "
            f"({scaled['per_second']}/s, {scaled['failed']} failed)"
        )
    audit = result.get("audit")
    if audit:
        on, off = audit["on"], audit["off"]
        lines.append(f"audit trail on vs off (medians of {audit['rounds']} interleaved rounds):")
        for key, label in (("req_per_s", "read by id, req/s"), ("p95_ms", "read by id, p95 ms"),
                           ("cpu_ms_per_read", "server CPU ms per read (expansion included)"),
                           ("transaction_500_ms", "500-Patient transaction, ms"),
                           ("create_ms", "single create, ms")):  # fmt: skip
            ratio = on[key] / off[key] if off[key] else float("nan")
            lines.append(f"  {label:<44} {on[key]:>9} {off[key]:>9}   {ratio:.2f}x")
    ex, ev, ma = result["export"], result["everything"], result["match"]
    lines += [
        f"system $export: {ex['resources']:,} resources in {ex['files']} files in "
        f"{ex['seconds']} s = {ex['per_second']:,}/s",
        f"Patient/$everything ({ev['patients']} patients, {ev['mean_entries']} entries on "
        f"average): p50 {ev['p50_ms']} ms, p95 {ev['p95_ms']} ms",
        f"Patient/$match ({ma['queries']} questions, {ma['patients']:,} patients, loaded at "
        f"{ma['loaded_per_second']:,}/s): p50 {ma['p50_ms']} ms, p95 {ma['p95_ms']} ms",
    ]
    if "dicom" in result:
        lines += dicom.table(result["dicom"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SYNTHEA, help="folder of Synthea bundles")
    parser.add_argument("--patients", type=int, default=None, help="load only N patient bundles")
    parser.add_argument("--clients", type=int, default=4, help="read-load connections")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--ingest-clients", type=int, default=2, help="bundles posted at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="each read load run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="read load runs without and with a token, alternated"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--scale", type=int, default=1, help="load the data N times over (ids rewritten)"
    )
    parser.add_argument(
        "--audit-rounds", type=int, default=2, help="interleaved rounds of audit on vs off"
    )
    parser.add_argument(
        "--match-patients", type=int, default=100_000, help="patients loaded for $match"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--hl7-messages", type=int, default=2000,
                        help="HL7 v2 messages for the MLLP row (0: skip it)")  # fmt: skip
    parser.add_argument("--ingest-only", action="store_true",
                        help="only the ingest row and the physical baseline (A/B runs)")
    parser.add_argument("--audit", choices=("on", "off"), default="on",
                        help="the audit trail of the main server (default on, as served)")
    parser.add_argument("--subscription-writes", type=int, default=300,
                        help="writes timed for the Subscriptions row (0: skip it)")  # fmt: skip
    args = parser.parse_args(argv)
    files = ordered_files(args.data, args.patients)
    if not files:
        print(f"no Synthea bundles in {args.data}", file=sys.stderr)
        return 2
    result = run(
        files,
        args.clients,
        args.seconds,
        args.repeats,
        args.workers,
        args.ingest_clients,
        args.scale,
        args.audit_rounds,
        args.match_patients,
        rounds=args.rounds,
        ingest_only=args.ingest_only,
        audit=args.audit == "on",
    )
    print(table(result))
    if args.hl7_messages and not args.ingest_only:
        from bench import hl7

        result["hl7"] = hl7.run(args.hl7_messages)
        print(hl7.table(result["hl7"]))
    if args.subscription_writes and not args.ingest_only:
        from bench import subscriptions

        result["subscriptions"] = subscriptions.run(args.subscription_writes)
        print(subscriptions.table(result["subscriptions"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
