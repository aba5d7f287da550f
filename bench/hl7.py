"""The HL7 v2 row of `make bench` (also `python -m bench.hl7`): messages acknowledged per second
over MLLP with 4 connections (ADT^A01 and ORU^R01 mixed, half of them in GB18030) while the
mapper works, the ACK latency meanwhile, messages mapped into FHIR per second, and the raw inbox
rate (commits without network or mapping) beside them.

The listener is `fhir-server hl7 listen` in a process of its own on a fresh database, as users
run it; the clients are asyncio connections in this process, each sending its next message when
the last one's ACK arrived (what an HIS does)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import free_port, percentiles

#: an ORU^R01 like a laboratory's complete blood count: 10 results
_RESULTS = [
    ("6690-2", "白细胞计数", "10*9/L", "3.5-9.5"), ("789-8", "红细胞计数", "10*12/L", "4.3-5.8"),
    ("718-7", "血红蛋白", "g/L", "130-175"), ("4544-3", "红细胞压积", "%", "40-50"),
    ("787-2", "平均红细胞体积", "fL", "82-100"), ("785-6", "平均血红蛋白量", "pg", "27-34"),
    ("786-4", "平均血红蛋白浓度", "g/L", "316-354"), ("777-3", "血小板计数", "10*9/L", "125-350"),
    ("770-8", "中性粒细胞百分比", "%", "40-75"), ("736-9", "淋巴细胞百分比", "%", "20-50"),
]  # fmt: skip
_NAMES = "张王李赵刘陈杨黄周吴"
_GIVEN = ["伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "杰"]


def message(n: int) -> bytes:
    """Message n: even an ADT^A01 admitting patient n // 2, odd an ORU^R01 for that patient;
    every other pair in GB18030."""
    patient = n // 2
    gb = patient % 2 == 1
    charset = "GB 18030-2000" if gb else "UNICODE UTF-8"
    name = f"{_NAMES[patient % 10]}^{_GIVEN[(patient // 10) % 10]}"
    mrn = f"{9000000 + patient}"
    vn = f"ZY{patient:08d}"
    pid = (f"PID|1||{mrn}^^^HZFIRST^MR||{name}||19{50 + patient % 50}0{1 + patient % 9}15|"
           f"{'MF'[patient % 2]}|||文三路{patient % 500}号^^杭州市^浙江省^310012^CHN^H^^西湖区||"
           f"138{patient:08d}^PRN^CP")  # fmt: skip
    pv1 = "|".join(["PV1", "1", "I", "XNK^0301^02^HZFIRST^^^^^心内科病区", *[""] * 15,
                    f"{vn}^^^HZFIRST^VN"])  # PV1-19
    if n % 2 == 0:
        head = (f"MSH|^~\\&|HIS|HZFIRST|YLFHIR|YLT|20240301103000+0800||ADT^A01^ADT_A01|"
                f"B{n:08d}|P|2.4|||||CHN|{charset}")  # fmt: skip
        segments = [head, "EVN|A01|20240301103000+0800", pid,
                    "|".join([pv1, *[""] * 24, "20240301100000+0800"])]  # PV1-44
    else:
        head = (f"MSH|^~\\&|LIS|HZFIRST|YLFHIR|YLT|20240302103000+0800||ORU^R01^ORU_R01|"
                f"B{n:08d}|P|2.4|||||CHN|{charset}")  # fmt: skip
        segments = [head, pid, pv1,
                    f"ORC|RE|SQ{n}^HIS|JY{n}^LIS||CM",
                    f"OBR|1|SQ{n}^HIS|JY{n}^LIS|CBC^血常规^L|||20240302080000+0800||||||||||||||"
                    "20240302102500+0800||HM|F"]  # fmt: skip
        for i, (code, text, unit, limits) in enumerate(_RESULTS, 1):
            value = f"{(n * 7 + i * 13) % 90 / 10 + 1:.1f}"
            segments.append(f"OBX|{i}|NM|{code}^{text}^LN||{value}|{unit}|{limits}|N|||F")
    return "\r".join(segments).encode("gb18030" if gb else "utf-8") + b"\r"


async def _client(port: int, messages: list[bytes], latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(6, 1, 1)  # TCP_NODELAY
    refused = 0
    buffer = b""
    for body in messages:
        started = time.perf_counter()
        writer.write(b"\x0b" + body + b"\x1c\r")
        while b"\x1c\r" not in buffer:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection")
            buffer += chunk
        reply, _, buffer = buffer.partition(b"\x1c\r")
        latencies.append(time.perf_counter() - started)
        refused += b"MSA|AA|" not in reply
    writer.close()
    return refused


async def _send(port: int, messages: list[bytes], connections: int) -> tuple[float, list[float],
                                                                             int]:  # fmt: skip
    latencies: list[float] = []
    shares = [messages[i::connections] for i in range(connections)]
    started = time.perf_counter()
    refused = await asyncio.gather(*(_client(port, s, latencies) for s in shares))
    return time.perf_counter() - started, latencies, sum(refused)


def _counts(database: Path) -> dict[str, int]:
    """The bench messages' inbox records by status (not the warm-up message's)."""
    with sqlite3.connect(database, timeout=30) as conn:
        rows = conn.execute("SELECT status, count(*) FROM inbox WHERE message_id LIKE 'B%' "
                            "GROUP BY status").fetchall()  # fmt: skip
    return dict(rows)


def _clinical(database: Path) -> int:
    with sqlite3.connect(database, timeout=30) as conn:
        found: int = conn.execute(
            "SELECT count(*) FROM resource WHERE type IN "
            "('Patient', 'Encounter', 'Observation', 'DiagnosticReport')"
        ).fetchone()[0]
    return found


def _warm_up(port: int, database: Path, count: int) -> None:
    """One message (a patient the bench does not send) mapped before the clock starts: the
    mapper's process has started and opened the database."""
    body = message(2 * count + 2).replace(f"B{2 * count + 2:08d}".encode(), b"WARMUP")
    asyncio.run(_send(port, [body], 1))
    deadline = time.time() + 120
    while True:
        with sqlite3.connect(database, timeout=30) as conn:
            if conn.execute("SELECT status FROM inbox WHERE message_id = 'WARMUP'"
                            ).fetchone() == ("mapped",):  # fmt: skip
                return
        if time.time() > deadline:
            raise RuntimeError("the warm-up message was not mapped in 2 minutes")
        time.sleep(0.05)


def _listener(database: Path, port: int, receive_only: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FHIR_SERVER_DEMO_ON_EMPTY": "false"}
    command = [sys.executable, "-m", "fhir_server.cli", "hl7", "listen", "--port", str(port),
               "--database", str(database)]  # fmt: skip
    if receive_only:
        command.append("--receive-only")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the listener did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def raw_inbox(count: int) -> dict[str, Any]:
    """Inbox commits alone (4 per transaction, as 4 connections give them): the physical
    ceiling of the ACK path."""
    from fhir_server.storage.sqlite import SqliteStore
    from integrations.hl7v2.inbox import Arrival

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "raw.db")
        messages = [message(n) for n in range(count)]
        started = time.perf_counter()
        for i in range(0, count, 4):
            store.inbox.receive([
                Arrival("hl7v2", "HZFIRST/HIS", f"R{n}", "2024-03-01T00:00:00Z", None,
                        "ADT^A01", messages[n]) for n in range(i, min(i + 4, count))
            ])  # fmt: skip
        seconds = time.perf_counter() - started
        store.close()
    return {"messages": count, "seconds": round(seconds, 2), "per_second": round(count / seconds)}


def run(count: int = 2000, connections: int = 4) -> dict[str, Any]:
    messages = [message(n) for n in range(count)]
    result: dict[str, Any] = {"messages": count, "connections": connections,
                              "raw_inbox": raw_inbox(count)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        # 1. receive only: the ACK path alone
        database = Path(tmp) / "receive.db"
        port = free_port()
        proc = _listener(database, port, receive_only=True)
        try:
            seconds, latencies, refused = asyncio.run(_send(port, messages, connections))
        finally:
            _stop(proc)
        result["receive_only"] = {"seconds": round(seconds, 2), "refused": refused,
                                  "per_second": round(count / seconds),
                                  **percentiles(latencies)}  # fmt: skip
        # 2. with the mapper: ACKs while it maps, then until everything is mapped
        database = Path(tmp) / "mapped.db"
        port = free_port()
        proc = _listener(database, port, receive_only=False)
        try:
            _warm_up(port, database, count)
            before = _clinical(database)
            started = time.perf_counter()
            seconds, latencies, refused = asyncio.run(_send(port, messages, connections))
            mapped_during = _counts(database).get("mapped", 0)
            while True:
                counts = _counts(database)
                if counts.get("received", 0) == 0:
                    break
                time.sleep(0.05)
            total = time.perf_counter() - started
        finally:
            _stop(proc)
        resources = _clinical(database) - before
        result["acknowledged"] = {"seconds": round(seconds, 2), "refused": refused,
                                  "per_second": round(count / seconds),
                                  "mapped_meanwhile": mapped_during, **percentiles(latencies)}
        result["mapped"] = {"seconds": round(total, 2), "per_second": round(count / total),
                            "counts": counts, "clinical_resources": resources}  # fmt: skip
    return result


def table(result: dict[str, Any]) -> str:
    ack, mapped, only, raw = (result["acknowledged"], result["mapped"], result["receive_only"],
                              result["raw_inbox"])  # fmt: skip
    return "\n".join([
        f"HL7 v2 ({result['messages']} messages, ADT^A01 + ORU^R01 (10 OBX), half GB18030, "
        f"{result['connections']} MLLP connections):",
        f"  acknowledged while mapping: {ack['per_second']}/s; ACK latency p50 {ack['p50_ms']} "
        f"ms, p99 {ack['p99_ms']} ms ({ack['refused']} not AA)",
        f"  mapped into FHIR: {mapped['per_second']}/s (all {result['messages']} in "
        f"{mapped['seconds']} s; {mapped['counts']})",
        f"  acknowledged, receive only: {only['per_second']}/s; p50 {only['p50_ms']} ms, p99 "
        f"{only['p99_ms']} ms; raw inbox commits: {raw['per_second']}/s",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    print(table(run(args.messages, args.connections)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
