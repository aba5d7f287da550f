"""The long-lived parts every interaction uses, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass

from .search.registry import Registry
from .settings import Settings
from .storage.sqlite import SqliteStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: SqliteStore
    registry: Registry

    @classmethod
    def open(cls, settings: Settings) -> Services:
        return cls(
            settings,
            SqliteStore(settings.database, settings.lock_timeout_seconds),
            Registry.load([settings.profiles_dir]),
        )

    def close(self) -> None:
        self.store.close()
