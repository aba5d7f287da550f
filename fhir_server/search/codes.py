"""Token modifiers answered by the terminology service (search.html#token): `:in` and
`:not-in` (members of a value set) and `:below`/`:above` (a code with its descendants or
ancestors in a hierarchical code system). Each is resolved here, before SQL, into the list
of (system, code) pairs it stands for, which the compiler turns into an IN over the token
index; `:not-in` becomes `:not` over that list."""

from __future__ import annotations

from dataclasses import replace

from ..errors import error
from ..terminology import Terminology, split_canonical
from .query import Clause, split_token, unescape

TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "below", "above"})


def resolve(clauses: list[Clause], term: Terminology) -> list[Clause]:
    """The clauses with every terminology modifier (also inside chains and _has) resolved."""
    return [_resolve(c, term) for c in clauses]


def _resolve(c: Clause, term: Terminology) -> Clause:
    if c.chain is not None:
        return replace(c, chain=_resolve(c.chain, term))
    if c.has is not None:
        other, ref, inner = c.has
        return replace(c, has=(other, ref, _resolve(inner, term)))
    if c.param.type != "token" or c.modifier not in TERMINOLOGY_MODIFIERS:
        return c
    name = f"{c.param.code}:{c.modifier}"
    codes: dict[tuple[str, str], None] = {}
    for raw in c.values:
        value = unescape(raw)
        if c.modifier in ("in", "not-in"):
            codes.update(dict.fromkeys(_members(term, value, name)))
            continue
        system, code = split_token(raw)
        if not system or not code:
            raise error(400, "invalid", f"{name} takes system|code, not '{value}'", name)
        system, code = unescape(system), unescape(code)
        related = term.expand_codes(system, code, c.modifier)
        if related is None:
            raise error(
                400,
                "not-supported",
                f"{name}: {system}#{code} is not a concept of a code system held here "
                "(R4, HL7 Terminology and ours)",
                name,
            )
        codes.update(dict.fromkeys((system, r) for r in related))
    modifier = "not" if c.modifier == "not-in" else None
    return replace(c, modifier=modifier, codes=tuple(codes))


def _members(term: Terminology, url: str, name: str) -> list[tuple[str, str]]:
    if term.value_set(url) is None:
        raise error(400, "not-found", f"{name}: ValueSet {url} is not known here", name)
    entries = term.expand(url)
    if entries is None:
        raise error(
            400,
            "too-costly",
            f"{name}: ValueSet {split_canonical(url)[0]} includes codes that cannot be "
            "enumerated here (e.g. all of SNOMED CT or LOINC)",
            name,
        )
    return [(system, code) for system, code, _ in entries]
