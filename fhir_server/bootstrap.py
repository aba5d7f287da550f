"""Start-up: our implementation guide and terminology stored in the database through the normal
write path, so they are served, searched and versioned like any other resource. Resources
whose stored version already equals the file are skipped, so a restart writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import conformance
from .context import RequestContext
from .interactions import bundle
from .model import literal
from .model.resource import same_content
from .services import Services
from .storage.contract import Session


def load_guide(services: Services, dirs: list[Path]) -> int:
    """Store the conformance resources that changed, in one transaction; returns how many."""
    reader = services.store.reader()
    changed = [r for r in conformance.resources(dirs) if not _stored_as(reader, r)]
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in changed
    ]
    if entries:
        data = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        bundle.process(services, RequestContext(base_url=""), data, "minimal")
    return len(entries)


def _stored_as(reader: Session, resource: dict[str, Any]) -> bool:
    """Whether the current stored version holds this content (server meta stamps aside)."""
    found = reader.current(resource["resourceType"], resource["id"])
    if found is None or found[1].deleted or found[1].json is None:
        return False
    return same_content(literal.loads(found[1].json), resource)
