"""The active Subscriptions of one resource type, arranged so that a written resource is checked
only against those that could match it: each Subscription is keyed by the values of one of
its exact clauses (`_id`, a token's code, a reference's id), so a write meets only those keyed
by values it has, plus the few without such a clause. Those the index rows cannot decide
(chains, _has, ...) are prepared once by the store (`subscriptions.compile_match`) and asked
of a resource together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..search import query as q
from ..storage.contract import IndexRows, SubscriptionTables

if TYPE_CHECKING:
    from .notifier import Active

Key = tuple[str, str]


@dataclass(frozen=True)
class Watch:
    keyed: dict[Key, list[Active]]
    unkeyed: list[Active]
    #: the parameters whose index rows the clauses read (the others are not extracted)
    codes: frozenset[str]
    #: by Subscription id, for those the search engine decides
    compiled: dict[str, Any]

    @classmethod
    def build(cls, subs: list[Active], base_url: str, tables: SubscriptionTables) -> Watch:
        keyed: dict[Key, list[Active]] = {}
        unkeyed: list[Active] = []
        compiled: dict[str, Any] = {}
        codes: set[str] = set()
        for sub in subs:
            criteria = sub.criteria
            codes |= {name for c in criteria.clauses for name in c.param.names}
            keys = next(filter(None, (_keys(c, base_url) for c in criteria.clauses)), None)
            if keys is None:
                unkeyed.append(sub)
            for key in keys or ():
                keyed.setdefault(key, []).append(sub)
            if not criteria.in_memory:
                clauses = list(criteria.clauses)
                compiled[sub.id] = tables.compile_match(base_url, criteria.rtype, clauses)
        return cls(keyed, unkeyed, frozenset(codes), compiled)

    def candidates(self, rid: str, rows: IndexRows) -> list[Active]:
        """The Subscriptions that could match a version with these index rows."""
        found = {id(s): s for s in self.unkeyed}
        keyed = self.keyed
        if not keyed:
            return list(found.values())
        keys: list[Key] = [("_id", rid)]
        keys += [(f"token:{r[0]}", r[2]) for r in rows.get("token", ())]
        keys += [(f"reference:{r[0]}", r[2]) for r in rows.get("reference", ())]
        for key in keys:
            for sub in keyed.get(key, ()):
                found[id(sub)] = sub
        return list(found.values())


def _keys(c: q.Clause, base_url: str) -> list[Key] | None:
    """The keys of an exact clause (one per ORed value), None when it has none."""
    if c.chain or c.has or c.codes is not None:
        return None
    code, kind, mod = c.param.code, c.param.type, c.modifier
    if code == "_id":
        return [("_id", v) for v in c.values] if mod is None else None
    if kind == "token" and mod is None:
        tokens = [q.split_token(v)[1] for v in c.values]
        if "" in tokens:
            return None
        return [(f"token:{name}", t) for name in c.param.names for t in tokens]  # union: parts
    if kind == "reference" and (mod is None or mod in c.param.targets):
        ids = []
        for raw in c.values:
            v = q.unescape(raw)
            if base_url and v.startswith(base_url + "/"):
                v = v[len(base_url) + 1 :]
            if "://" in v or v.startswith("urn:"):
                return None
            parts = v.split("/")
            ids.append(parts[1] if len(parts) in (2, 4) else v)
        return [(f"reference:{code}", i) for i in ids]
    return None
