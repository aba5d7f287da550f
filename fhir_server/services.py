"""The long-lived parts every interaction uses, built once by the app factory (no module
globals: a Settings passed in is the Settings used everywhere)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .interactions.hooks import Hooks
from .model.validate import Validator
from .operations.registry import Operations
from .search.query import CareRelationship
from .search.registry import Registry
from .settings import Settings
from .storage.sqlite import SqliteStore
from .terminology import Terminology


@dataclass(frozen=True)
class Parts:
    """What Services reads from the guide and terminology folders: costly to build, the same
    for every database, so tests build it once."""

    registry: Registry
    terminology: Terminology
    validator: Validator

    @classmethod
    def load(cls, settings: Settings) -> Parts:
        terminology = Terminology.load([settings.profiles_dir, settings.terminology_dir])
        return cls(
            Registry.load([settings.profiles_dir]),
            terminology,
            Validator.load([settings.profiles_dir], terminology),
        )


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: SqliteStore
    registry: Registry
    terminology: Terminology
    validator: Validator
    #: the operations table: the core's, then each feature's (registered at start-up)
    operations: Operations = field(default_factory=Operations)
    #: write hooks registered by features (interactions/hooks.py)
    hooks: Hooks = field(default_factory=Hooks)
    #: care relationships features register: which Tasks give an organization access to
    #: another's patient (policy/decide.py, the consortium rule)
    care: list[CareRelationship] = field(default_factory=list)
    #: state a feature keeps for its operations and hooks, by feature name
    features: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, parts: Parts | None = None) -> Services:
        parts = parts or Parts.load(settings)
        return cls(
            settings,
            SqliteStore(settings.database, settings.lock_timeout_seconds),
            parts.registry,
            parts.terminology,
            parts.validator,
        )

    def close(self) -> None:
        for hook in self.hooks.on_close:
            hook()
        self.store.close()
