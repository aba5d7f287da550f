"""Search-parameter registry: the R4 definitions plus our own, as data.

No search parameter is hand-coded; everything comes from ``fhir_server/spec/search_parameters.json``
(generated from the R4 package) and SearchParameter resources in ``profiles/``. Loaded once at
start-up, so it reads one compact file and builds per-type lookups lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["COMMON_BASES", "Component", "Registry", "SearchParam"]

SPEC_FILE = Path(__file__).resolve().parent.parent / "spec" / "search_parameters.json"

#: Parameters on these bases apply to every resource type.
COMMON_BASES = frozenset({"Resource", "DomainResource"})


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a composite parameter: the component's definition url and its expression
    relative to the composite's focus."""

    definition: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    """A search parameter as the server uses it (a trimmed SearchParameter resource)."""

    code: str
    type: str
    expression: str | None
    targets: tuple[str, ...]
    url: str
    base: tuple[str, ...]
    components: tuple[Component, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()
    multiple_or: bool | None = None
    multiple_and: bool | None = None

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> SearchParam:
        """Build from a compact record or a full SearchParameter resource (same field names)."""
        return cls(
            code=rec["code"],
            type=rec["type"],
            expression=rec.get("expression") or None,
            targets=tuple(rec.get("target") or ()),
            url=rec.get("url") or "",
            base=tuple(rec.get("base") or ()),
            components=tuple(
                Component(c["definition"], c["expression"]) for c in rec.get("component") or ()
            ),
            modifiers=tuple(rec.get("modifier") or ()),
            comparators=tuple(rec.get("comparator") or ()),
            chains=tuple(rec.get("chain") or ()),
            multiple_or=rec.get("multipleOr"),
            multiple_and=rec.get("multipleAnd"),
        )


def _search_parameters_in(path: Path) -> Iterator[dict[str, Any]]:
    """Yield SearchParameter resources from a JSON file: a single resource or a Bundle of them."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return
    if not isinstance(data, dict):
        return
    if data.get("resourceType") == "SearchParameter":
        yield data
    elif data.get("resourceType") == "Bundle":
        for entry in data.get("entry") or ():
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict) and res.get("resourceType") == "SearchParameter":
                yield res


class Registry:
    """All known search parameters, looked up by (resource type, code).

    Extra parameters (from ``profiles/``) override R4 ones with the same base and code, so a
    profile can redefine e.g. ``Patient.identifier`` without touching the spec data.
    """

    def __init__(self, params: Iterable[SearchParam]) -> None:
        self._by_base: dict[str, dict[str, SearchParam]] = {}
        self._by_url: dict[str, SearchParam] = {}
        for p in params:
            self._add(p)
        self._common: dict[str, SearchParam] = {}
        for b in sorted(COMMON_BASES):  # DomainResource after Resource
            self._common.update(self._by_base.get(b, {}))
        self._per_type: dict[str, dict[str, SearchParam]] = {}

    def _add(self, p: SearchParam) -> None:
        for b in p.base:
            self._by_base.setdefault(b, {})[p.code] = p
        if p.url:
            self._by_url[p.url] = p

    @classmethod
    def load(
        cls,
        extra_dirs: Iterable[Path] = (),
        spec_file: Path = SPEC_FILE,
        stored: Iterable[dict[str, Any]] = (),
    ) -> Registry:
        """Read the R4 table, then SearchParameter files (``*.json``, recursively) in extra_dirs,
        then the SearchParameter resources among `stored` (written over REST); later ones
        replace earlier ones with the same base and code.

        Missing directories are ignored so a fresh checkout with no ``profiles/`` still starts.
        """
        records = orjson.loads(spec_file.read_bytes())
        params = [SearchParam.from_record(r) for r in records]
        found: list[dict[str, Any]] = []
        for d in extra_dirs:
            d = Path(d)
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*.json")):
                found.extend(_search_parameters_in(f))
        found.extend(r for r in stored if r.get("resourceType") == "SearchParameter")
        params.extend(
            SearchParam.from_record(sp)
            for sp in found
            if sp.get("code") and sp.get("type") and sp.get("base")
        )
        return cls(params)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """All parameters for a type, common ones included (a fresh dict; safe to mutate)."""
        return dict(self._type_map(resource_type))

    def _type_map(self, resource_type: str) -> dict[str, SearchParam]:
        m = self._per_type.get(resource_type)
        if m is None:
            m = dict(self._common)
            m.update(self._by_base.get(resource_type, {}))
            self._per_type[resource_type] = m
        return m

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._type_map(resource_type).get(code)

    def by_url(self, url: str) -> SearchParam | None:
        """Look up by canonical url, e.g. to resolve a composite's component definitions."""
        return self._by_url.get(url)

    def __len__(self) -> int:
        return len(self._by_url)
