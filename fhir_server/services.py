"""The long-lived parts every interaction uses, built once by the app factory (no module
globals: a Settings passed in is the Settings used everywhere)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import conformance
from .interactions.hooks import Hooks
from .model import literal
from .model.resource import same_content
from .model.validate import Validator
from .operations.registry import Operations
from .search.query import CareRelationship
from .search.registry import Registry
from .settings import Settings
from .storage.contract import Store
from .storage.select import open_store
from .terminology import Terminology

log = logging.getLogger("fhir_server")


@dataclass(frozen=True)
class Parts:
    """What Services reads from the guide and terminology folders (and the conformance
    resources written over REST): costly to build, the same for every database, so tests
    build it once."""

    registry: Registry
    terminology: Terminology
    validator: Validator
    #: the folders' conformance resources by (type, id): a stored one equal to its file
    #: needs no rebuild
    guide: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, settings: Settings, stored: Sequence[dict[str, Any]] = ()) -> Parts:
        """From the folders, then `stored` (conformance resources written over REST: one with
        the canonical url of a folder's replaces it)."""
        dirs = [settings.profiles_dir, settings.terminology_dir]
        terminology = Terminology.load(dirs, stored)
        guide = {(r["resourceType"], str(r.get("id"))): r for r in conformance.resources(dirs)}
        return cls(
            Registry.load([settings.profiles_dir], stored=stored),
            terminology,
            Validator.load([settings.profiles_dir], terminology, stored),
            guide,
        )


class LiveParts:
    """The Parts in use: the folders', or, once StructureDefinitions, ValueSets, CodeSystems,
    ConceptMaps or SearchParameters other than the folders' are stored, Parts built with them.
    Every stored version of those moves a counter in the database (storage migration 7), which
    `stale` reads (one row) before each request: every worker process rebuilds on its next
    request after a change, whichever process wrote it."""

    def __init__(self, base: Parts, settings: Settings) -> None:
        self.base = base
        self.current = base
        self.settings = settings
        self.generation = -1  # not read yet: the first request reads the database
        self._lock = threading.Lock()

    def stale(self, store: Store) -> bool:
        return store.reader().conformance_generation() != self.generation

    def refresh(self, store: Store) -> None:
        """Rebuild from the stored conformance resources if they changed (blocking: call it
        off the event loop). One rebuild at a time; the others wait, then find it done."""
        with self._lock:
            reader = store.reader()
            generation = reader.conformance_generation()
            if generation == self.generation:
                return
            stored = [literal.loads(raw) for raw in reader.conformance_resources()]
            guide = self.base.guide
            extra = [
                r
                for r in stored
                if not same_content(guide.get((r["resourceType"], r["id"]), {}), r)
            ]
            try:
                self.current = Parts.load(self.settings, extra) if extra else self.base
            except Exception:  # a write-time check let something through: keep serving
                log.exception("conformance resources stored over REST could not be loaded")
            self.generation = generation


@dataclass(frozen=True)
class Services:
    settings: Settings
    #: the database, whichever backend serves it (storage/contract.py, storage/select.py)
    store: Store
    #: the search registry, terminology and validator in use (rebuilt as conformance
    #: resources are written: LiveParts)
    parts: LiveParts
    #: the operations table: the core's, then each feature's (registered at start-up)
    operations: Operations = field(default_factory=Operations)
    #: write hooks registered by features (interactions/hooks.py)
    hooks: Hooks = field(default_factory=Hooks)
    #: care relationships features register: which Tasks give an organization access to
    #: another's patient (policy/decide.py, the consortium rule)
    care: list[CareRelationship] = field(default_factory=list)
    #: state a feature keeps for its operations and hooks, by feature name
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        return self.parts.current.registry

    @property
    def terminology(self) -> Terminology:
        return self.parts.current.terminology

    @property
    def validator(self) -> Validator:
        return self.parts.current.validator

    @classmethod
    def open(cls, settings: Settings, parts: Parts | None = None) -> Services:
        parts = parts or Parts.load(settings)
        store = open_store(settings)
        return cls(settings, store, LiveParts(parts, settings))

    def close(self) -> None:
        for hook in self.hooks.on_close:
            hook()
        self.store.close()
