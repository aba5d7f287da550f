"""Profile validation: the differentials of our StructureDefinitions (profiles/) applied to a
resource whose meta.profile names one of them (profiling.html; validation.html#profile).

Checked per differential element: cardinality (min/max, slices included), fixed[x] and pattern[x]
values, value[x] types and Reference targets, required bindings (through the terminology
service, skipped while it is absent or does not know the value set) and `constraint` invariants
(FHIRPath, compiled once: model/invariants.py). Extensions whose url is one of our extension
definitions are checked against that definition the same way. A profile derived from another
profile (bodyheight from vitalsigns) is checked against both differentials.

R4's own profiles and extension definitions (spec/profiles.json.gz) are in the catalog too,
compiled on first use: `$validate` checks them when a resource claims them or `profile=` names
them; writes check only ours.

Slices are told apart the simple way our IG models them: an extension slice by the url of its
profile, any other slice by the pattern[x]/fixed[x] on the slice element itself or on its direct
children (e.g. `Extension.extension:source.url`, `Task.output:bed.type`).
"""

from __future__ import annotations

import gzip
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..conformance import resources
from ..errors import Issue
from ..spec import SPEC_DIR
from .invariants import Env, Invariant, compile_invariant

if TYPE_CHECKING:  # typing only: the terminology service answers the binding checks
    from ..terminology import Terminology

__all__ = ["Catalog", "load_catalog", "matches_pattern", "profile_issues", "r4_profiles"]

log = logging.getLogger(__name__)

CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
ERROR_SEVERITIES = frozenset({"error", "fatal"})

Node = tuple[Any, str]  # (JSON value, FHIRPath-like expression of where it is)
Matcher = Callable[[Any], bool]


# --------------------------------------------------------------------------------------------
# The model: profiles compiled from their differentials


@dataclass
class Element:
    """One differential element, reduced to what the validator checks."""

    id: str
    #: (element name, slice name or None) below the root, e.g. [("category", "referralType")]
    segments: list[tuple[str, str | None]]
    min: int | None = None
    max: str | None = None
    fixed: Any = None
    pattern: Any = None
    #: ValueSet canonical of a required binding
    valueset: str | None = None
    #: allowed type codes (for choice elements: which value[x] keys may appear)
    types: tuple[str, ...] = ()
    #: allowed resource types of a Reference
    targets: tuple[str, ...] = ()
    constraints: list[Invariant] = field(default_factory=list)


@dataclass(eq=False)
class Profile:
    url: str
    type: str  # constrained type: a resource type, or Extension
    elements: list[Element]
    #: element id of a slice -> how to tell its members
    slices: dict[str, Matcher]
    base: str | None = None  # baseDefinition, when it is a profile too
    modifier: bool = False  # an extension definition of a modifier extension


@dataclass
class Catalog:
    profiles: dict[str, Profile]  # our resource profiles by url
    extensions: dict[str, Profile]  # our extension definitions by url
    #: R4's constraint StructureDefinitions by url, compiled on first use
    r4: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every known profile's url -> the type it constrains (a targetProfile names a profile)
    types: dict[str, str] = field(default_factory=dict)
    _compiled: dict[str, Profile] = field(default_factory=dict)

    def profile(self, url: str) -> Profile | None:
        """A resource profile or extension definition, ours or R4's."""
        found = self.profiles.get(url) or self.extensions.get(url) or self._compiled.get(url)
        if found is None and url in self.r4:
            found = self._compiled[url] = _profile(self.r4[url], self.types)
        return found

    def chain(self, url: str) -> list[Profile]:
        """The profile and the profiles it derives from (not the base resource)."""
        out: list[Profile] = []
        found = self.profile(url)
        while found is not None and found not in out:
            out.append(found)
            found = self.profile(found.base) if found.base else None
        return out

    def known_extensions(self) -> dict[str, bool]:
        """Every extension url defined (ours and R4's) -> whether it is a modifier."""
        known = {url: bool(sd.get("modifier")) for url, sd in self.r4.items()
                 if sd.get("type") == "Extension"}  # fmt: skip
        known.update({url: p.modifier for url, p in self.extensions.items()})
        return known


def _segments(element_id: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in element_id.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        out.append((name, slice_name or None))
    return out


def _choice_value(definition: dict[str, Any], prefix: str) -> Any:
    """The value of `fixed[x]` / `pattern[x]` on an element definition, or None."""
    for key, value in definition.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return value
    return None


def _target_type(canonical: str, types_by_url: dict[str, str]) -> str:
    if canonical in types_by_url:
        return types_by_url[canonical]
    return canonical.rsplit("/", 1)[-1]


def _element(definition: dict[str, Any], types_by_url: dict[str, str]) -> Element:
    types = definition.get("type") or []
    binding = definition.get("binding") or {}
    return Element(
        id=definition["id"],
        segments=_segments(definition["id"]),
        min=definition.get("min"),
        max=definition.get("max"),
        fixed=_choice_value(definition, "fixed"),
        pattern=_choice_value(definition, "pattern"),
        valueset=binding.get("valueSet") if binding.get("strength") == "required" else None,
        types=tuple(t["code"] for t in types if t.get("code")),
        targets=tuple(
            _target_type(p, types_by_url)
            for t in types
            if t.get("code") == "Reference"
            for p in t.get("targetProfile") or ()
        ),
        constraints=[
            compile_invariant(c["key"], c.get("severity", "error"), c.get("human", ""),
                              c["expression"], frozenset())
            for c in definition.get("constraint") or ()
            if c.get("expression")
        ],
    )  # fmt: skip


def _slice_matcher(definition: dict[str, Any], children: list[dict[str, Any]]) -> Matcher:
    """How to recognise the members of a slice (see the module docstring)."""
    name = definition["path"].rsplit(".", 1)[-1]
    if name in ("extension", "modifierExtension"):
        urls = {p for t in definition.get("type") or () for p in t.get("profile") or ()}
        if urls:
            return lambda v: isinstance(v, dict) and v.get("url") in urls
    own_fixed, own_pattern = (
        _choice_value(definition, "fixed"),
        _choice_value(definition, "pattern"),
    )
    tests: list[Matcher] = []
    if own_fixed is not None or own_pattern is not None:

        def own(v: Any) -> bool:
            return (own_fixed is None or v == own_fixed) and (
                own_pattern is None or matches_pattern(v, own_pattern)
            )

        tests.append(own)
    prefix = definition["id"] + "."
    for child in children:
        # a child or deeper (vitalsigns: category:VSCat.coding.system and .code are fixed)
        steps = [part.partition(":")[0] for part in child["id"][len(prefix):].split(".")]
        fixed, pattern = _choice_value(child, "fixed"), _choice_value(child, "pattern")
        if fixed is None and pattern is None:
            continue

        def test(v: Any, path: list[str] = steps, f: Any = fixed, p: Any = pattern) -> bool:
            nodes: list[Node] = [(v, "")]
            for key in path:
                nodes = [c for n in nodes for c in _children(n, key)]
            return any((f is None or x == f) and (p is None or matches_pattern(x, p))
                       for x, _ in nodes)  # fmt: skip

        tests.append(test)
    return lambda v: bool(tests) and all(t(v) for t in tests)


def _profile(sd: dict[str, Any], types_by_url: dict[str, str]) -> Profile:
    definitions = (sd.get("differential") or {}).get("element") or []
    slices: dict[str, Matcher] = {}
    for d in definitions:
        if ":" in d["id"].rsplit(".", 1)[-1]:
            prefix = d["id"] + "."
            kids = [c for c in definitions if c["id"].startswith(prefix)]
            slices[d["id"]] = _slice_matcher(d, kids)
    base = sd.get("baseDefinition")
    profile = Profile(sd["url"], sd["type"], [_element(d, types_by_url) for d in definitions],
                      slices, base if base and not base.startswith(CORE_SD + sd["type"]) else None)
    root = definitions[0] if definitions and "." not in definitions[0]["id"] else {}
    profile.modifier = bool(root.get("isModifier"))
    return profile


def load_catalog(
    dirs: Iterable[Path],
    r4: Sequence[dict[str, Any]] = (),
    stored: Iterable[dict[str, Any]] = (),
) -> Catalog:
    """Compile the constraint StructureDefinitions (profiles and extensions) found in dirs,
    then those among `stored` (written over REST), which replace ones with the same url;
    R4's (`r4`) are kept to compile on first use."""
    sds = [
        r
        for r in itertools.chain(resources(dirs), stored)
        if r.get("resourceType") == "StructureDefinition" and r.get("derivation") == "constraint"
    ]
    types_by_url = {r["url"]: r["type"] for r in itertools.chain(r4, sds)}
    catalog = Catalog({}, {}, {sd["url"]: sd for sd in r4}, types_by_url)
    for sd in sds:
        target = catalog.extensions if sd.get("type") == "Extension" else catalog.profiles
        target[sd["url"]] = _profile(sd, types_by_url)
    return catalog


@cache
def r4_profiles() -> tuple[dict[str, Any], ...]:
    """R4's profiles and extension definitions (differentials), parsed once per process."""
    blob = gzip.decompress((SPEC_DIR / "profiles.json.gz").read_bytes())
    return tuple(orjson.loads(blob))


# --------------------------------------------------------------------------------------------
# Walking instances


def _children(node: Node, name: str) -> list[Node]:
    """The values of element `name` (``value[x]`` matches any ``valueFoo``) under a node."""
    value, expr = node
    if not isinstance(value, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        keys = [k for k in value if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()]
    else:
        keys = [name] if name in value else []
    out: list[Node] = []
    for key in keys:
        item = value[key]
        if isinstance(item, list):
            out.extend((x, f"{expr}.{key}[{i}]") for i, x in enumerate(item) if x is not None)
        elif item is not None:
            out.append((item, f"{expr}.{key}"))
    return out


def _instances(profile: Profile, root: Node, segments: list[tuple[str, str | None]]) -> list[Node]:
    nodes = [root]
    element_id = profile.type
    for name, slice_name in segments:
        element_id += f".{name}"
        nodes = [c for n in nodes for c in _children(n, name)]
        if slice_name is not None:
            element_id += f":{slice_name}"
            member = profile.slices.get(element_id)
            nodes = [n for n in nodes if member is None or member(n[0])]
    return nodes


def matches_pattern(value: Any, pattern: Any) -> bool:
    """pattern[x] semantics: every element of the pattern is present in the value; a pattern
    list item must match some item of the value's list."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches_pattern(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(i, p) for i in items) for p in pattern)
    return bool(value == pattern)


_REF_TYPE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")


# --------------------------------------------------------------------------------------------
# Checks


def _codings(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of a code, Coding or CodeableConcept value."""
    if isinstance(value, str):
        return [(None, value, None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value):
        return [c for x in value.get("coding") or () for c in _codings(x)]
    return [(value.get("system"), value.get("code"), value.get("display"))]


def _binding_issue(
    service: Terminology | None, valueset: str, value: Any, expr: str
) -> Issue | None:
    """A required binding: a code/Coding must be in the value set; a CodeableConcept must have at
    least one coding in it (terminologies.html#required). A value set the terminology does not
    know (or no terminology) cannot be checked here."""
    if service is None:
        return None
    verdicts: list[tuple[bool, str]] = []
    for system, code, _display in _codings(value):
        if code is None:
            continue
        verdict = service.validate_code(valueset, system, code)  # display: not checked
        if verdict is None:
            return None  # value set unknown: skip
        if verdict[0]:
            return None
        verdicts.append(verdict)
    if not verdicts:
        return None  # no code to check (text only)
    shown = ", ".join(f"{s}#{c}" if s else str(c) for s, c, _ in _codings(value))
    reason = verdicts[0][1]
    return Issue(
        "code-invalid",
        f"{shown} is not in the required value set {valueset}" + (f": {reason}" if reason else ""),
        "error",
        expr,
    )


def _check_value(
    el: Element, value: Any, expr: str, service: Terminology | None
) -> Iterator[Issue]:
    if el.fixed is not None and value != el.fixed:
        yield Issue("value", f"Value must be exactly {_show(el.fixed)} (element {el.id})", "error",
                    expr)  # fmt: skip
    if el.pattern is not None and not matches_pattern(value, el.pattern):
        yield Issue("value", f"Value must match the pattern {_show(el.pattern)} (element {el.id})",
                    "error", expr)  # fmt: skip
    if el.valueset is not None:
        issue = _binding_issue(service, el.valueset, value, expr)
        if issue is not None:
            yield issue
    if el.targets and isinstance(value, dict) and isinstance(value.get("reference"), str):
        m = _REF_TYPE.search(value["reference"])
        if m is not None and m.group(1) not in el.targets:
            yield Issue("value", f"Reference to a {m.group(1)} is not allowed here; allowed: "
                        f"{', '.join(el.targets)} (element {el.id})", "error", expr)  # fmt: skip


def _show(value: Any) -> str:
    from .literal import dumps

    return dumps(value).decode()


def _check_choice_types(el: Element, parent: Node) -> Iterator[Issue]:
    name = el.segments[-1][0]
    if not el.types or not name.endswith("[x]") or not isinstance(parent[0], dict):
        return
    stem = name[:-3]
    allowed = {stem + t[:1].upper() + t[1:] for t in el.types}
    for key in parent[0]:
        if key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper() and key not in allowed:
            yield Issue("value", f"{key} is not allowed here; use {' or '.join(sorted(allowed))} "
                        f"(element {el.id})", "error", f"{parent[1]}.{key}")  # fmt: skip


def _check_constraints(el: Element, node: Node, resource: dict[str, Any]) -> Iterator[Issue]:
    env = Env(resource, resource)
    for c in el.constraints:
        if not c.holds(node[0], env):
            yield Issue("invariant", f"Constraint {c.key} failed: {c.human}",
                        "error" if c.severity == "error" else "warning", node[1])  # fmt: skip


def check(
    profile: Profile, root: Node, resource: dict[str, Any], service: Terminology | None = None
) -> list[Issue]:
    """Every issue of one instance (a resource, or an extension) against one profile."""
    issues: list[Issue] = []
    for el in profile.elements:
        if not el.segments:
            issues.extend(i for i in _check_constraints(el, root, resource))
            continue
        name, slice_name = el.segments[-1]
        for parent in _instances(profile, root, el.segments[:-1]):
            nodes = _children(parent, name)
            if slice_name is not None and el.id in profile.slices:
                nodes = [n for n in nodes if profile.slices[el.id](n[0])]
            where = f"{parent[1]}.{name.replace('[x]', '')}"
            label = el.id if slice_name else where
            if el.min and len(nodes) < el.min:
                issues.append(Issue(
                    "required",
                    f"{label}: minimum required = {el.min}, but only found {len(nodes)}"
                    f" (profile {profile.url})",
                    "error", where,
                ))  # fmt: skip
            if el.max not in (None, "*") and len(nodes) > int(el.max or 0):
                issues.append(Issue(
                    "structure",
                    f"{label}: maximum allowed = {el.max}, but found {len(nodes)}"
                    f" (profile {profile.url})",
                    "error", where,
                ))  # fmt: skip
            issues.extend(_check_choice_types(el, parent))
            for node in nodes:
                issues.extend(_check_value(el, node[0], node[1], service))
                issues.extend(_check_constraints(el, node, resource))
    return issues


def _extension_nodes(value: Any, expr: str) -> Iterator[Node]:
    """Every extension / modifierExtension anywhere in a resource, with its expression."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("contained",):
                continue
            if key in ("extension", "modifierExtension") and isinstance(item, list):
                for i, e in enumerate(item):
                    yield e, f"{expr}.{key}[{i}]"
            yield from _extension_nodes(item, f"{expr}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _extension_nodes(item, f"{expr}[{i}]")


def profile_issues(
    resource: dict[str, Any],
    catalog: Catalog,
    service: Terminology | None,
    extra: Sequence[str] = (),
    all_claimed: bool = False,
) -> list[Issue]:
    """The issues of a resource against those of its meta.profile that are ours (or all it
    claims that the catalog knows, with `all_claimed`), and against the `extra` profiles (which
    must be known). Only claimed or requested profiles are checked (validation.html#profile)."""
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    urls = [str(p).split("|", 1)[0] for p in claimed if isinstance(p, str)] if isinstance(
        claimed, list) else []  # fmt: skip
    rtype = resource.get("resourceType", "")
    issues: list[Issue] = []
    chosen: list[Profile] = []
    for url in dict.fromkeys(urls):
        if url in catalog.profiles or (all_claimed and catalog.profile(url) is not None):
            chosen += catalog.chain(url)
    for url in extra:
        found = catalog.chain(url.split("|", 1)[0])
        if not found:
            issues.append(Issue("not-found", f"Profile {url} is not known to this server",
                                "error", "profile"))  # fmt: skip
        chosen += found
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        return issues
    for profile in chosen:
        if profile.type != rtype:
            issues.append(Issue("invalid", f"Profile {profile.url} is for {profile.type}, "
                                f"not {rtype}", "error", f"{rtype}.meta.profile"))  # fmt: skip
            continue
        issues.extend(check(profile, (resource, rtype), resource, service))
    for ext, expr in _extension_nodes(resource, rtype):
        url = str(ext.get("url")) if isinstance(ext, dict) else ""
        definition = catalog.extensions.get(url) or (catalog.profile(url) if all_claimed
                                                     else None)  # fmt: skip
        if definition is not None:
            issues.extend(check(definition, (ext, expr), resource, service))
    return list(dict.fromkeys(issues))


def has_errors(issues: Iterable[Issue]) -> bool:
    return any(i.severity in ERROR_SEVERITIES for i in issues)
