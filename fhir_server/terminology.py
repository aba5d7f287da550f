"""An in-memory terminology service over the CodeSystems and ValueSets of R4, of HL7
Terminology (THO, spec/terminology.json.gz made by scripts/build_validation_data.py) and our
own folders (terminology/, profiles/), ours winning over theirs for the same url.

Answered with dict lookups: $lookup, $validate-code, expansion (compose include/exclude,
concept lists, imported value sets, the filters is-a, descendent-of, is-not-a, =, in, not-in),
subsumption, translation over R4's ConceptMaps and ours, and concept properties (e.g. the
`taskStatus` a referral business status pairs with). A CodeSystem is indexed on first use,
so start-up only parses the file. A value set that includes a system we do not hold in full
(SNOMED CT, LOINC, UCUM, BCP-47 ...) cannot be enumerated: `validate_code`/`expand` answer
None for it, which callers read as "cannot check here".
"""

from __future__ import annotations

import gzip
import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from . import conformance
from .spec import SPEC_DIR

#: (system, code, display); display is None when nobody gave one
Entry = tuple[str, str, str | None]


def split_canonical(url: str) -> tuple[str, str | None]:
    """`url|version` → (url, version); a bare url → (url, None)."""
    base, sep, version = url.partition("|")
    return base, (version or None) if sep else None


@dataclass
class Concept:
    """One concept of a CodeSystem, flattened (nested concepts keep their parent code)."""

    system: str
    code: str
    display: str | None
    definition: str | None
    designations: list[dict[str, Any]]
    properties: list[tuple[str, str, Any]]  # (code, value[x] key, value)
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)

    def property(self, name: str) -> Any:
        """The value of the first property called `name`, else None."""
        for code, _, value in self.properties:
            if code == name:
                return value
        return None

    def designation(self, language: str) -> str | None:
        """The designation value in `language` (exact tag, then its primary subtag)."""
        for exact in (True, False):
            for d in self.designations:
                lang = d.get("language") or ""
                if (lang == language) if exact else (lang.split("-")[0] == language.split("-")[0]):
                    return d.get("value")
        return None

    def displays(self) -> set[str]:
        """Every display this concept accepts: its display and all designation values."""
        out = {d["value"] for d in self.designations if isinstance(d.get("value"), str)}
        if self.display:
            out.add(self.display)
        return out


@dataclass
class CodeSystem:
    url: str
    version: str | None
    name: str | None
    resource: dict[str, Any]
    concepts: dict[str, Concept]
    case_sensitive: bool
    complete: bool
    folded: dict[str, str]  # code.casefold() → code, for caseSensitive = false

    def find(self, code: str) -> Concept | None:
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            real = self.folded.get(code.casefold())
            found = self.concepts.get(real) if real is not None else None
        return found


class Terminology:
    """Our CodeSystems and ValueSets, indexed for dict-speed lookups.

    Create with `Terminology.load(dirs)`; the Services of the app hold one. Instances are safe
    to share between threads: they are read-only after loading, and value-set expansions are
    cached under a lock."""

    def __init__(self, resources: Iterable[dict[str, Any]] = (), base: bool = False) -> None:
        self._lock = threading.RLock()
        #: CodeSystem resources by url and url|version; indexed into _systems on first use
        self._cs_resources: dict[str, dict[str, Any]] = {}
        self._systems: dict[str, CodeSystem] = {}
        self._valuesets: dict[str, dict[str, Any]] = {}
        self._by_id: dict[tuple[str, str], dict[str, Any]] = {}
        self._expansions: dict[str, dict[tuple[str, str], str | None] | None] = {}
        self._maps: dict[str, dict[str, Any]] = {}
        if base:
            self._index(spec_resources(), keep_ids=False)
            self._index(_spec_maps(), keep_ids=False)
        self._index(resources)

    @classmethod
    def load(
        cls, dirs: Sequence[Path], stored: Iterable[dict[str, Any]] = (), base: bool = True
    ) -> Terminology:
        """R4 and THO (unless `base` is False), then every CodeSystem/ValueSet json (single or
        in Bundles) under the folders, then those among `stored` (written over REST; one with
        the url of a folder's replaces it)."""
        return cls(itertools.chain(conformance.resources(dirs), stored), base)

    # --- loading ----------------------------------------------------------------------------

    def _index(self, resources: Iterable[dict[str, Any]], keep_ids: bool = True) -> None:
        """Our resources are also served by id; R4's and THO's only answer by url."""
        for r in resources:
            kind, url = r.get("resourceType"), r.get("url")
            if kind not in ("CodeSystem", "ValueSet", "ConceptMap") or not isinstance(url, str):
                continue
            if keep_ids and isinstance(r.get("id"), str):
                self._by_id[(kind, r["id"])] = r
            if kind == "ConceptMap":
                self._maps[url] = r
                continue
            target = self._cs_resources if kind == "CodeSystem" else self._valuesets
            target[url] = r
            if r.get("version"):
                target[f"{url}|{r['version']}"] = r
            if kind == "CodeSystem":
                self._systems.pop(url, None)

    # --- questions --------------------------------------------------------------------------

    def code_system(self, url: str, version: str | None = None) -> CodeSystem | None:
        """The CodeSystem with this canonical (`url`, `url|version`, or url plus version)."""
        base, suffix = split_canonical(url)
        version = version or suffix
        key = f"{base}|{version}" if version else base
        found = self._systems.get(key)
        if found is None:
            resource = self._cs_resources.get(key)
            if resource is None or resource.get("content") == "not-present":
                return None  # R4's stubs of SNOMED CT, LOINC ...: nothing of them is held
            found = self._systems[key] = _code_system(resource)
        return found

    def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        """The ValueSet resource with this canonical, if we hold it."""
        base, suffix = split_canonical(url)
        version = version or suffix
        return self._valuesets.get(f"{base}|{version}" if version else base)

    def resource(self, kind: str, rid: str) -> dict[str, Any] | None:
        """A CodeSystem or ValueSet of ours by its logical id."""
        return self._by_id.get((kind, rid))

    def concept(self, system: str, code: str, version: str | None = None) -> Concept | None:
        cs = self.code_system(system, version)
        return cs.find(code) if cs is not None else None

    def lookup(self, system: str, code: str, version: str | None = None) -> dict[str, Any] | None:
        """What $lookup reports about a concept, or None when the system or code is unknown:
        {name, version, system, code, display, definition, designation: [{language, use?,
        value}], property: [{code, type, value}], parent?, child?}."""
        cs = self.code_system(system, version)
        found = cs.find(code) if cs is not None else None
        if cs is None or found is None:
            return None
        return {
            "name": cs.name or cs.url,
            "version": cs.version,
            "system": cs.url,
            "code": found.code,
            "display": found.display,
            "definition": found.definition,
            "designation": [dict(d) for d in found.designations],
            "property": [{"code": c, "type": t, "value": v} for c, t, v in found.properties],
            "parent": found.parent,
            "child": list(found.children),
        }

    def property(self, system: str, code: str, name: str) -> Any:
        """One property value of a concept (e.g. `taskStatus` of a business status), else None."""
        found = self.concept(system, code)
        return found.property(name) if found is not None else None

    def display(self, system: str, code: str, language: str | None = None) -> str | None:
        """The display of a concept, in `language` when a designation has it."""
        found = self.concept(system, code)
        if found is None:
            return None
        return (found.designation(language) if language else None) or found.display

    def check_code(
        self, system: str, code: str, display: str | None = None, version: str | None = None
    ) -> tuple[bool, str] | None:
        """CodeSystem/$validate-code: (result, message or display); None when the code
        system is unknown here."""
        cs = self.code_system(system, version)
        if cs is None:
            return None
        found = cs.find(code)
        if found is None:
            return False, f"Unknown code '{code}' in CodeSystem {cs.url}"
        if display is not None and display not in found.displays():
            return False, (
                f"Wrong display '{display}' for {cs.url}#{found.code}: should be '{found.display}'"
            )
        return True, found.display or found.code

    def expand(self, valueset_url: str) -> list[Entry] | None:
        """Every (system, code, display) of the value set, in definition order; None when the
        value set is unknown or includes codes we cannot enumerate."""
        codes = self._expansion(valueset_url)
        if codes is None:
            return None
        return [(system, code, display) for (system, code), display in codes.items()]

    def validate_code(
        self,
        valueset_url: str,
        system: str | None,
        code: str,
        display: str | None = None,
    ) -> tuple[bool, str] | None:
        """Whether the code (of `system`, or of any system when None) is in the value set, and
        a message saying why not (or the display when it is). None: the value set is unknown
        here or not enumerable, so the caller should skip the check."""
        codes = self._expansion(valueset_url)
        if codes is None:
            return None
        vs_name = split_canonical(valueset_url)[0]
        system = split_canonical(system)[0] if system else None
        if system is not None:
            key: tuple[str, str] | None = (system, code)
            if key not in codes:
                key = self._folded(codes, system, code)
            keys = [key] if key is not None else []
        else:
            keys = [k for k in codes if k[1] == code]
        if not keys:
            where = f"{system}#{code}" if system else f"'{code}'"
            known = system is not None and self.code_system(system) is not None
            if known and system is not None and self.concept(system, code) is None:
                return False, f"Unknown code {where}: not in CodeSystem {system}"
            return False, f"The code {where} is not in the value set {vs_name}"
        if len(keys) > 1:
            systems = ", ".join(sorted(k[0] for k in keys))
            return False, f"The code '{code}' is ambiguous without a system ({systems})"
        found_system, found_code = keys[0]
        expected = codes[keys[0]]
        if display is not None:
            concept = self.concept(found_system, found_code)
            accepted = concept.displays() if concept is not None else set()
            if expected:
                accepted.add(expected)
            if accepted and display not in accepted:
                return False, (
                    f"Wrong display '{display}' for {found_system}#{found_code}: "
                    f"should be '{expected or sorted(accepted)[0]}'"
                )
        return True, expected or found_code

    def subsumes(self, system: str, a: str, b: str) -> str | None:
        """CodeSystem/$subsumes (codesystem-operation-subsumes.html): `equivalent`, `subsumes`
        (a is an ancestor of b), `subsumed-by` or `not-subsumed`; None when the system or a
        code is unknown here."""
        cs = self.code_system(system)
        ca, cb = (cs.find(a), cs.find(b)) if cs is not None else (None, None)
        if cs is None or ca is None or cb is None:
            return None
        if ca.code == cb.code:
            return "equivalent"
        if ca.code in _ancestors(cs, cb.code):
            return "subsumes"
        if cb.code in _ancestors(cs, ca.code):
            return "subsumed-by"
        return "not-subsumed"

    def expand_codes(self, system: str, code: str, direction: str) -> list[str] | None:
        """The code and its descendants (`below`) or ancestors (`above`), for the token search
        modifiers :below/:above (search.html#token); None when the system or code is unknown."""
        cs = self.code_system(system)
        found = cs.find(code) if cs is not None else None
        if cs is None or found is None:
            return None
        walk = _descendants if direction == "below" else _ancestors
        related = walk(cs, found.code)
        return [found.code, *sorted(related)]

    def concept_map(self, url: str) -> dict[str, Any] | None:
        return self._maps.get(split_canonical(url)[0])

    def translate(
        self,
        system: str,
        code: str,
        map_url: str | None = None,
        source: str | None = None,
        target: str | None = None,
        reverse: bool = False,
    ) -> list[dict[str, Any]]:
        """ConceptMap/$translate (conceptmap-operation-translate.html): every mapping of
        system#code in the chosen map, or in every map whose source/target value sets match
        `source`/`target`; `reverse` maps from target to source. Each match is {equivalence,
        system, code, display?, source (the ConceptMap url)}."""
        if map_url is not None:
            one = self.concept_map(map_url)
            maps = [one] if one is not None else []
        else:
            maps = [
                m for m in self._maps.values()
                if (source is None or _scope(m, "target" if reverse else "source") == source)
                and (target is None or _scope(m, "source" if reverse else "target") == target)
            ]  # fmt: skip
        out: list[dict[str, Any]] = []
        for m in maps:
            for group in m.get("group") or []:
                if reverse:
                    out.extend(_reverse_matches(m["url"], group, system, code))
                    continue
                if group.get("source") != system:
                    continue
                for element in group.get("element") or []:
                    if element.get("code") != code:
                        continue
                    for t in element.get("target") or []:
                        match = {
                            "equivalence": t.get("equivalence", "equivalent"),
                            "system": group.get("target"),
                            "code": t.get("code"),
                            "display": t.get("display"),
                            "source": m["url"],
                        }
                        out.append(match)
        return out

    def contains(self, valueset_url: str, system: str | None, code: str) -> bool | None:
        """Whether the value set holds the code (of `system`, or of any system); None when the
        value set cannot be enumerated here."""
        verdict = self.validate_code(valueset_url, system, code)
        return None if verdict is None else verdict[0]

    # --- expansion --------------------------------------------------------------------------

    def _folded(
        self, codes: dict[tuple[str, str], str | None], system: str, code: str
    ) -> tuple[str, str] | None:
        cs = self.code_system(system)
        if cs is None or cs.case_sensitive:
            return None
        found = cs.find(code)
        key = (system, found.code) if found is not None else None
        return key if key in codes else None

    def _expansion(self, url: str) -> dict[tuple[str, str], str | None] | None:
        if url in self._expansions:
            return self._expansions[url]
        with self._lock:
            result = self._compute(url, frozenset())
            self._expansions[url] = result
        return result

    def _compute(self, url: str, seen: frozenset[str]) -> dict[tuple[str, str], str | None] | None:
        vs = self.value_set(url)
        if vs is None or url in seen:
            return None
        seen = seen | {url}
        compose = vs.get("compose") or {}
        if not compose:
            contained = (vs.get("expansion") or {}).get("contains")
            return _flatten_contains(contained) if contained is not None else None
        out: dict[tuple[str, str], str | None] = {}
        for include in compose.get("include") or []:
            part = self._include(include, seen)
            if part is None:
                return None
            out.update(part)
        for exclude in compose.get("exclude") or []:
            part = self._include(exclude, seen)
            if part is None:
                return None
            for key in part:
                out.pop(key, None)
        return out

    def _include(
        self, include: dict[str, Any], seen: frozenset[str]
    ) -> dict[tuple[str, str], str | None] | None:
        """One compose.include/exclude: (system part) ∩ every imported value set."""
        result: dict[tuple[str, str], str | None] | None = None
        system = include.get("system")
        if system:
            system, suffix = split_canonical(system)
            version = include.get("version") or suffix
            cs = self.code_system(system, version)
            if include.get("concept"):
                result = {}
                for c in include["concept"]:
                    known = cs.find(c["code"]) if cs is not None else None
                    if cs is not None and cs.complete and known is None:
                        continue  # listed but not in the system: not a member
                    if known is not None:
                        result[(system, known.code)] = c.get("display") or known.display
                    else:
                        result[(system, c["code"])] = c.get("display")
            else:
                if cs is None or not cs.complete:
                    return None  # e.g. all of SNOMED CT: cannot enumerate
                concepts = list(cs.concepts.values())
                for f in include.get("filter") or []:
                    chosen = _filter(cs, f)
                    if chosen is None:
                        return None
                    concepts = [c for c in concepts if c.code in chosen]
                result = {(system, c.code): c.display for c in concepts}
        for vs_url in include.get("valueSet") or []:
            imported = self._compute(vs_url, seen)
            if imported is None:
                return None
            result = (
                dict(imported)
                if result is None
                else {k: v for k, v in result.items() if k in imported}
            )
        return result if result is not None else {}


def _scope(m: dict[str, Any], side: str) -> str | None:
    value = m.get(f"{side}Canonical") or m.get(f"{side}Uri")
    return split_canonical(value)[0] if isinstance(value, str) else None


def _reverse_matches(
    url: str, group: dict[str, Any], system: str, code: str
) -> Iterable[dict[str, Any]]:
    """Matches of a target code back to its sources; the equivalence is read from the source's
    side, so `wider` stays as the map states it (the spec leaves reverse equivalence open)."""
    if group.get("target") != system:
        return
    for element in group.get("element") or []:
        for t in element.get("target") or []:
            if t.get("code") == code:
                yield {
                    "equivalence": t.get("equivalence", "equivalent"),
                    "system": group.get("source"),
                    "code": element.get("code"),
                    "display": element.get("display"),
                    "source": url,
                }


def _code_system(r: dict[str, Any]) -> CodeSystem:
    url = r["url"]
    concepts: dict[str, Concept] = {}

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for c in items:
            code = c.get("code")
            if not isinstance(code, str):
                continue
            props = []
            for p in c.get("property") or []:
                for key, value in p.items():
                    if key.startswith("value"):
                        props.append((p.get("code"), key, value))
            concepts[code] = Concept(
                url,
                code,
                c.get("display"),
                c.get("definition"),
                [d for d in c.get("designation") or [] if isinstance(d, dict)],
                props,
                parent,
            )
            if parent is not None:
                concepts[parent].children.append(code)
                concepts[code].parents.append(parent)
            walk(c.get("concept") or [], code)

    walk(r.get("concept") or [], None)
    for concept in concepts.values():  # hierarchies given by property (THO's v3 systems)
        for prop, _, value in concept.properties:
            if prop in ("parent", "subsumedBy") and value in concepts:
                if value not in concept.parents:
                    concept.parents.append(value)
                    concepts[value].children.append(concept.code)
                concept.parent = concept.parent or value
    return CodeSystem(
        url=url,
        version=r.get("version"),
        name=r.get("name"),
        resource=r,
        concepts=concepts,
        case_sensitive=r.get("caseSensitive", True) is not False,
        complete=r.get("content", "complete") == "complete",
        folded={code.casefold(): code for code in concepts},
    )


def _descendants(cs: CodeSystem, code: str) -> set[str]:
    out: set[str] = set()
    stack = list(cs.concepts[code].children)
    while stack:
        child = stack.pop()
        if child not in out:
            out.add(child)
            stack.extend(cs.concepts[child].children)
    return out


def _ancestors(cs: CodeSystem, code: str) -> set[str]:
    out: set[str] = set()
    stack = list(cs.concepts[code].parents)
    while stack:
        parent = stack.pop()
        if parent not in out:
            out.add(parent)
            stack.extend(cs.concepts[parent].parents)
    return out


def _filter(cs: CodeSystem, f: dict[str, Any]) -> set[str] | None:
    """The codes a compose filter selects (valueset.html#filters: concept is-a,
    descendent-of, is-not-a, =, in, not-in; a property =, in, not-in); None for filters we do
    not implement."""
    prop, op, value = f.get("property"), f.get("op"), f.get("value")
    if not isinstance(value, str):
        return None
    if prop == "concept" and op in ("is-a", "descendent-of", "is-not-a"):
        if value not in cs.concepts:
            return set(cs.concepts) if op == "is-not-a" else set()
        below = _descendants(cs, value)
        if op == "descendent-of":
            return below
        return below | {value} if op == "is-a" else set(cs.concepts) - below - {value}
    if op not in ("=", "in", "not-in"):
        return None
    values = {v.strip() for v in value.split(",")} if op != "=" else {value}
    if prop == "concept":
        chosen = {c for c in values if c in cs.concepts}
    else:
        chosen = {
            c.code
            for c in cs.concepts.values()
            if any(code == prop and _text(v) in values for code, _, v in c.properties)
        }
    return set(cs.concepts) - chosen if op == "not-in" else chosen


def _text(value: Any) -> str:
    """A property value as a filter compares it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # valueCoding
        return str(value.get("code"))
    return str(value)


def _flatten_contains(items: list[dict[str, Any]]) -> dict[tuple[str, str], str | None]:
    out: dict[tuple[str, str], str | None] = {}
    for item in items:
        if item.get("system") and item.get("code") and not item.get("abstract"):
            out[(item["system"], item["code"])] = item.get("display")
        out.update(_flatten_contains(item.get("contains") or []))
    return out


@cache
def _spec_data() -> tuple[dict[str, Any], ...]:
    """The R4 and THO CodeSystems and ValueSets, parsed once per process."""
    blob = gzip.decompress((SPEC_DIR / "terminology.json.gz").read_bytes())
    return tuple(orjson.loads(blob))


def spec_resources() -> Iterable[dict[str, Any]]:
    return _spec_data()


@cache
def _spec_maps() -> tuple[dict[str, Any], ...]:
    """R4's ConceptMaps (spec/conceptmaps.json.gz), for $translate."""
    blob = gzip.decompress((SPEC_DIR / "conceptmaps.json.gz").read_bytes())
    return tuple(orjson.loads(blob))
