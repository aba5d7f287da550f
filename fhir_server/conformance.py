"""Our implementation guide (profiles/) and terminology (terminology/) as FHIR resources, read
from disk. Only reading: bootstrap.py stores them, model/profiles.py and terminology.py compile
them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .model import literal

KINDS = frozenset(
    {
        "StructureDefinition", "SearchParameter", "OperationDefinition", "CodeSystem",
        "ValueSet", "ConceptMap", "NamingSystem", "CompartmentDefinition",
    }
)  # fmt: skip


def resources(dirs: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every conformance resource in the folders (recursively), single or in Bundles."""
    for folder in dirs:
        for path in sorted(folder.rglob("*.json")) if folder.is_dir() else ():
            data = literal.loads(path.read_bytes())
            items = (
                [e.get("resource") for e in data.get("entry") or []]
                if data.get("resourceType") == "Bundle"
                else [data]
            )
            yield from (r for r in items if isinstance(r, dict) and r.get("resourceType") in KINDS)


def profiles(dirs: Iterable[Path]) -> dict[str, list[str]]:
    """Our resource profiles (not extensions) by the resource type they constrain."""
    out: dict[str, list[str]] = {}
    for r in resources(dirs):
        if r["resourceType"] == "StructureDefinition" and r.get("kind") == "resource":
            out.setdefault(r["type"], []).append(r["url"])
    return {t: sorted(urls) for t, urls in out.items()}
