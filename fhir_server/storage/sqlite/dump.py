"""Every stored version in (type, id, version) order, with the row id of its resource: what
`fhir-server migrate` copies into another backend (storage/mongo/migrate.py)."""

from __future__ import annotations

from collections.abc import Iterator

from .store import Session, Stored


def versions(session: Session, batch: int = 2000) -> Iterator[tuple[int, Stored]]:
    """(resource row id, version), oldest version of each resource first, read in keyset
    batches so a large database streams."""
    key: tuple[str, str, int] = ("", "", 0)
    while True:
        # the superseded versions (history) and the current ones (resource, migration 9)
        rows = session.query(
            "SELECT r.rid, h.type, h.id, h.version, h.last_updated, h.deleted, h.json, h.method "
            "FROM history h JOIN resource r ON r.type = h.type AND r.id = h.id "
            "WHERE (h.type, h.id, h.version) > (?, ?, ?) UNION ALL "
            "SELECT rid, type, id, version, last_updated, deleted, json, method FROM resource "
            "WHERE (type, id, version) > (?, ?, ?) ORDER BY 2, 3, 4 LIMIT ?",
            [*key, *key, batch],
        )
        if not rows:
            return
        for rid, rtype, id_, version, stamp, deleted, json, method in rows:
            yield rid, Stored(rtype, id_, version, stamp, bool(deleted), json, method)
        key = (rows[-1][1], rows[-1][2], rows[-1][3])
