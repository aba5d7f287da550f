"""Bulk loading of Bundle and NDJSON files through the same batch/transaction path as REST."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .context import RequestContext
from .interactions import bundle
from .services import Services

NDJSON_CHUNK = 500


def read_bytes(path: Path) -> bytes:
    if path.suffix == ".bz2":
        return bz2.decompress(path.read_bytes())
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def bundles(path: Path) -> Iterator[dict[str, Any]]:
    """A Bundle file as is; an NDJSON file as transactions of PUT (with id) or POST entries."""
    raw = read_bytes(path)
    if ".ndjson" not in path.name:
        data = orjson.loads(raw)
        if data.get("resourceType") == "Bundle" and data.get("type") in ("batch", "transaction"):
            yield data
        else:
            yield _transaction([data])
        return
    chunk: list[dict[str, Any]] = []
    for line in raw.splitlines():
        if line.strip():
            chunk.append(orjson.loads(line))
        if len(chunk) >= NDJSON_CHUNK:
            yield _transaction(chunk)
            chunk = []
    if chunk:
        yield _transaction(chunk)


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = []
    for r in resources:
        if r.get("id"):
            request = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        else:
            request = {"method": "POST", "url": r["resourceType"]}
        entries.append({"resource": r, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load(services: Services, path: Path, base_url: str) -> tuple[int, int]:
    """Load one file; returns (entries processed, entries failed)."""
    done = failed = 0
    for data in bundles(path):
        ctx = RequestContext(base_url=base_url)
        result = bundle.process(services, ctx, data, "minimal")
        for entry in result["entry"]:
            if entry["response"]["status"][:1] in ("2", "3"):
                done += 1
            else:
                failed += 1
    return done, failed
