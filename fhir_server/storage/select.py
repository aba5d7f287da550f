"""Which backend serves `Settings.database`: a `mongodb://` or `mongodb+srv://` URL selects
MongoDB (the optional `mongodb` extra, imported only then), anything else is a SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..settings import Settings
from .contract import Store, Stored, Version

_SCHEMES = ("mongodb:", "mongodb+srv:")


def mongo_url(database: Path | str) -> str | None:
    """The MongoDB connection string `database` names, or None for a SQLite file. Settings
    keeps `database` as a Path, which folds the URL's `//` into `/`: put it back."""
    text = str(database)
    for scheme in _SCHEMES:
        if text.startswith(scheme):
            rest = text[len(scheme) :].lstrip("/")
            return f"{scheme}//{rest}"
    return None


def open_store(settings: Settings) -> Store:
    url = mongo_url(settings.database)
    if url is None:
        from .sqlite.backend import SqliteBackend

        return SqliteBackend(settings.database, settings.lock_timeout_seconds)
    try:
        from .mongo import MongoStore
    except ImportError as exc:  # the optional extra is not installed
        raise SystemExit(
            f"a mongodb:// database needs the optional extra ({exc}): "
            "pip install 'fhir-server[mongodb]'"
        ) from None

    return MongoStore.connect(url, settings)


def copy_sqlite(
    source: Path, target: Store, index: Callable[[Stored], Version], now: float
) -> dict[str, int | None]:
    """`fhir-server migrate`: every version of the SQLite database at `source` into the
    MongoDB store `target`, then its authorization tables, audit trail, inbox and
    Subscription owners (mongo/migrate.py); counts of what was copied ("audit records" None:
    not copied, a schema-4 chain)."""
    from .mongo import MongoStore
    from .mongo.migrate import (
        carry_audit,
        carry_auth,
        carry_inbox,
        carry_owners,
        copy,
        inbox_empty,
    )
    from .sqlite.backend import SqliteBackend
    from .sqlite.dump import versions

    if not isinstance(target, MongoStore):
        raise ValueError("migrate copies into a MongoDB database")
    inbox_empty(target)
    store = SqliteBackend(source)
    try:
        resources, copied = copy(versions(store.reader()), target, index)
        counts: dict[str, int | None] = {"resources": resources, "versions": copied}
        counts.update(carry_auth(store, target, now))
        counts["audit records"] = carry_audit(store, target)
        counts["inbox messages"] = carry_inbox(store, target)
        counts["subscription owners"] = carry_owners(store, target)
        return counts
    finally:
        store.close()
