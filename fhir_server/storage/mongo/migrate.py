"""`fhir-server migrate --from fhir.db --to mongodb://...`: every version of every resource,
with its history, copied from a SQLite database into MongoDB. Each resource keeps its row
number (the default search order stays the same) and its versions, timestamps and methods;
the current version's index section is made by the same extractors as any write (`index`,
given by the caller: storage does not know the search registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import groupby

from ..contract import Stored, Version
from .store import META, MongoStore

#: resources written per batch (one transaction each on a replica set)
BATCH = 500


def copy(
    versions: Iterable[tuple[int, Stored]],
    target: MongoStore,
    index: Callable[[Stored], Version],
) -> tuple[int, int]:
    """(resources, versions) copied. `versions` come oldest first per resource (dump.py);
    only the last of each is indexed, older ones only enter the history."""
    resources = copied = top = 0
    pending: list[tuple[int, Version]] = []
    for (_, _), group in groupby(versions, key=lambda rv: (rv[1].type, rv[1].id)):
        chain = list(group)
        for n, (rid, stored) in enumerate(chain, 1):
            last = n == len(chain)
            pending.append((rid, index(stored) if last else Version(stored, {}, None, {})))
            top = max(top, rid)
        resources += 1
        copied += len(chain)
        if len(pending) >= BATCH:
            _write(target, pending)
            pending = []
    if pending:
        _write(target, pending)
    # new resources continue after the copied row numbers
    target.db[META].update_one({"_id": "rid"}, {"$max": {"n": top}}, upsert=True)
    return resources, copied


def _write(target: MongoStore, versions: list[tuple[int, Version]]) -> None:
    with target.write() as session:
        session.save_many(list(versions))
