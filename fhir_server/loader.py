"""Bulk loading of Bundle and NDJSON files through the same batch/transaction path as REST."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .context import RequestContext
from .errors import FhirError, operation_outcome
from .interactions import bundle
from .model import literal
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
        data = literal.loads(raw)
        if data.get("resourceType") == "Bundle" and data.get("type") in ("batch", "transaction"):
            yield data
        else:
            yield _transaction([data])
        return
    chunk: list[dict[str, Any]] = []
    for line in raw.splitlines():
        if line.strip():
            chunk.append(literal.loads(line))
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


def load(
    services: Services, path: Path, base_url: str, report: Callable[[str], None] = print
) -> tuple[int, int]:
    """Load one file; returns (entries processed, entries failed). A bundle that fails (a
    transaction is all or nothing) is reported with its OperationOutcome's diagnostics and
    loading goes on with the next one."""
    done = failed = 0
    number = 0
    try:
        for number, data in enumerate(bundles(path), start=1):
            ctx = RequestContext(base_url=base_url)
            try:
                result = bundle.process(services, ctx, data, "minimal")
            except FhirError as exc:
                failed += max(1, len(data.get("entry") or []))
                outcome = operation_outcome(exc.issues)
                report(f"{path.name} (bundle {number}): HTTP {exc.status}: {_diagnostics(outcome)}")
                continue
            for entry in result["entry"]:
                if entry["response"]["status"][:1] in ("2", "3"):
                    done += 1
                else:
                    failed += 1
                    outcome = entry["response"].get("outcome") or {}
                    report(f"{path.name} (bundle {number}): {_diagnostics(outcome)}")
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, not JSON
        failed += 1
        report(f"{path.name} (after bundle {number}): cannot read: {exc}")
    return done, failed


def _diagnostics(outcome: dict[str, Any]) -> str:
    """Each issue's diagnostics and where it is (its expression)."""
    return "; ".join(
        f"{i.get('diagnostics', '')} (at {', '.join(i.get('expression') or ['?'])})"
        for i in outcome.get("issue", [])
    )
