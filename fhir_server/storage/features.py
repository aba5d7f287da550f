"""The storage features only the SQLite backend has for now (contract.py says which and why):
the layers above reach them here, through `sqlite_store`/`sqlite_session`, which answer 501
under another backend instead of failing somewhere deeper."""

from __future__ import annotations

from ..errors import FhirError, error
from .contract import Session, Store
from .sqlite.audit import (
    append_records,
    audit_event_count,
    chained,
    record_head,
    records,
    stale_pending,
    stored_event,
    take_pending,
    unchained_events,
)
from .sqlite.auth import AuthStore
from .sqlite.backup import BackupError, backup, restore
from .sqlite.store import Session as SqliteSession
from .sqlite.store import SqliteStore

__all__ = [
    "AuthStore",
    "BackupError",
    "SqliteSession",
    "SqliteStore",
    "append_records",
    "audit_event_count",
    "chained",
    "record_head",
    "records",
    "stale_pending",
    "stored_event",
    "take_pending",
    "unchained_events",
    "backup",
    "has_features",
    "restore",
    "sqlite_session",
    "sqlite_store",
]


def _unsupported(feature: str) -> FhirError:
    return error(501, "not-supported", f"{feature} needs the SQLite backend for now")


def has_features(store: Store) -> bool:
    """Whether the store has the features of this module (background workers ask)."""
    return isinstance(store, SqliteStore)


def sqlite_store(store: Store, feature: str) -> SqliteStore:
    """The store, if it is SQLite's; 501 naming `feature` otherwise."""
    if not isinstance(store, SqliteStore):
        raise _unsupported(feature)
    return store


def sqlite_session(session: Session, feature: str) -> SqliteSession:
    if not isinstance(session, SqliteSession):
        raise _unsupported(feature)
    return session
