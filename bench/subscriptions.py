"""The Subscriptions row of `make bench` (also `python -m bench.subscriptions`), issue 14's Speed:
with 100 active Subscriptions on Observation (90 decided from the index rows: codes, subjects,
status and code; 10 chains the search engine decides), the latency from the start of a write
to the `ping` on a websocket bound to the one that matches it (p50/p95), and the writes per
second of 4 clients with those 100 against none, on fresh servers, interleaved round by round
(the machine is shared)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.run import percentiles, server

SUBSCRIPTIONS = 100


def _observation(code: str, patient: str = "bench") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}  # fmt: skip


def _criteria(i: int) -> str:
    """Subscription i's criteria; 0 is the one the writes match."""
    if i == 0:
        return "Observation?code=http://loinc.org|8867-4"
    if i % 10 == 1:
        return f"Observation?subject:Patient.family=family{i}"
    if i % 3 == 0:
        return f"Observation?subject=Patient/p{i}"
    if i % 3 == 1:
        return f"Observation?status=final&code=http://loinc.org|{1000 + i}-0"
    return f"Observation?code=http://loinc.org|{1000 + i}-1"


def _subscribe(client: httpx.Client, base: str, count: int) -> str:
    """`count` websocket Subscriptions; the id of the one the writes match."""
    first = ""
    for i in range(count):
        body = {"resourceType": "Subscription", "status": "requested", "reason": "bench",
                "criteria": _criteria(i), "channel": {"type": "websocket"}}  # fmt: skip
        r = client.post(f"{base}/Subscription", json=body)
        r.raise_for_status()
        first = first or r.json()["id"]
    return first


async def _latency(base: str, ws_url: str, sid: str, writes: int) -> list[float]:
    """One write at a time; each waits for its ping."""
    samples = []
    async with connect(ws_url) as ws, httpx.AsyncClient(timeout=30) as client:
        await ws.send(f"bind {sid}")
        assert await ws.recv() == f"bound {sid}"
        body = _observation("8867-4")
        for _ in range(writes):
            started = time.perf_counter()
            (await client.post(f"{base}/Observation", json=body)).raise_for_status()
            assert await asyncio.wait_for(ws.recv(), 10) == f"ping {sid}"
            samples.append(time.perf_counter() - started)
    return samples


async def _throughput(base: str, seconds: float, clients: int) -> float:
    """Creates per second of `clients` connections writing as fast as answered."""
    body = _observation("8867-4")
    done = 0
    stop = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        async with httpx.AsyncClient(timeout=30) as client:
            while time.perf_counter() < stop:
                (await client.post(f"{base}/Observation", json=body)).raise_for_status()
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(clients)))
    return done / (time.perf_counter() - started)


async def _bound_throughput(base: str, sid: str | None, seconds: float, clients: int) -> float:
    """The throughput while a websocket is bound to the matching Subscription (if any) and
    reads its pings, as a subscriber would."""
    if sid is None:
        return await _throughput(base, seconds, clients)
    ws_url = base.replace("http://", "ws://") + "/websocket"
    async with connect(ws_url) as ws:
        await ws.send(f"bind {sid}")
        await ws.recv()

        async def drain() -> None:
            while True:
                await ws.recv()

        reader = asyncio.create_task(drain())
        try:
            return await _throughput(base, seconds, clients)
        finally:
            reader.cancel()


def run(
    writes: int = 300, seconds: float = 10.0, rounds: int = 3, workers: int = 2, clients: int = 4
) -> dict[str, Any]:
    result: dict[str, Any] = {"subscriptions": SUBSCRIPTIONS, "workers": workers,
                              "clients": clients, "rounds": rounds}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        with server(Path(tmp) / "latency.db", workers, audit=True) as (base, _):
            with httpx.Client(timeout=30) as client:
                sid = _subscribe(client, base, SUBSCRIPTIONS)
            ws_url = base.replace("http://", "ws://") + "/websocket"
            samples = asyncio.run(_latency(base, ws_url, sid, writes))
        result["latency"] = {"writes": writes, **percentiles(samples)}
        rates: dict[str, list[float]] = {"none": [], "with": []}
        for r in range(rounds):
            for mode in ("none", "with") if r % 2 == 0 else ("with", "none"):
                with server(Path(tmp) / f"rate-{r}-{mode}.db", workers) as (base, _):
                    watched = None
                    if mode == "with":
                        with httpx.Client(timeout=30) as client:
                            watched = _subscribe(client, base, SUBSCRIPTIONS)
                    rate = asyncio.run(_bound_throughput(base, watched, seconds, clients))
                rates[mode].append(rate)
        ratios = sorted(w / n for w, n in zip(rates["with"], rates["none"], strict=True))
        result["writes_per_s"] = {
            "none": round(sorted(rates["none"])[rounds // 2], 1),
            "with": round(sorted(rates["with"])[rounds // 2], 1),
            "ratio": round(ratios[rounds // 2], 3),
            "rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        }
    return result


def table(result: dict[str, Any]) -> str:
    lat, rate = result["latency"], result["writes_per_s"]
    return "\n".join([
        f"subscriptions ({result['subscriptions']} active, {result['workers']} workers): write "
        f"to websocket ping p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms ({lat['writes']} "
        "writes)",
        f"  creates/s ({result['clients']} clients): {rate['with']} with them, {rate['none']} "
        f"with none = {rate['ratio']:.0%} (median of {result['rounds']} interleaved rounds)",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=300, help="writes timed for latency")
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    print(table(run(args.writes, args.seconds, args.rounds, args.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
