"""The compiled invariants (model/invariants.py) against fhirpathpy, the reference engine:
every R4 invariant, on the elements of the R4 examples it applies to, and on mutated copies
that break some of them (so `false` is compared as well as `true`); and the guards (names whose
absence lets an invariant hold unevaluated) never skip one that fhirpathpy says fails."""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from typing import Any

import pytest
from fhirpathpy import evaluate as fp_evaluate
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from test_validation import EXAMPLES, MUTATIONS, example

from fhir_server.model.invariants import UCUM, Env, Invariant, compile_native
from fhir_server.search.fhirpath import parse_reference
from fhir_server.services import Parts

#: evaluations compared per invariant on the examples (fhirpathpy is slow; the examples repeat
#: themselves): a few by default, more in the long suite (`make test-slow`)
PER_INVARIANT = 60
PER_INVARIANT_DEFAULT = 6
#: what fhirpathpy cannot evaluate: htmlChecks() is FHIR's, not FHIRPath's; Quantities it does
#: not compare (rng-2: low <= high), which test_quantities_compare_by_unit checks by hand
NOT_IN_FHIRPATHPY = frozenset({"txt-1", "txt-2", "rng-2"})
MODEL = models["r4"]
#: where we side with the HL7 validator: que-7's `answer is Boolean` holds for answerBoolean
#: (R4's own Questionnaire examples rely on it); fhirpathpy reads Boolean as System.Boolean only
DIVERGES = frozenset({"que-7"})


def _has_value(items: list[Any]) -> list[bool]:
    """FHIR's hasValue() (fhirpath.html#functions, FHIR additions), which fhirpathpy lacks."""
    return [len(items) == 1 and items[0] is not None and not isinstance(items[0], dict | list)]


def _resolve(items: list[Any]) -> list[Any]:
    """resolve() as validation has it: the type a literal reference names (no database)."""
    out = []
    for item in items:
        parsed = parse_reference(item.get("reference", "")) if isinstance(item, dict) else None
        if parsed is not None and parsed[0] is not None:
            out.append(ResourceNode.create_node({"resourceType": parsed[0]}, parsed[0]))
    return out


OPTIONS = {"userInvocationTable": {"hasValue": {"fn": _has_value, "arity": {0: []}},
                                   "resolve": {"fn": _resolve, "arity": {0: []}}}}


def reference(inv: Invariant, value: Any, env: Env, base: str) -> bool | None:
    """fhirpathpy's verdict, with the element typed by its path (choices resolve)."""
    node = ResourceNode.create_node(value, base)
    variables = {"resource": env.resource, "rootResource": env.root, "ucum": UCUM,
                 "context": value}  # fmt: skip
    # dom-3 applies as() to collections, which strict FHIRPath (and fhirpathpy) refuses; the
    # HL7 validator reads it as ofType()
    expression = inv.expression.replace(".as(", ".ofType(")
    result = fp_evaluate(node, expression, variables, MODEL, OPTIONS)
    if not result:
        return None
    return result[0] if len(result) == 1 and isinstance(result[0], bool) else True


def ours(inv: Invariant, value: Any, env: Env) -> bool | None:
    result = inv.run(value, Env(env.resource, env.root, value))
    return None if result is None else bool(result)


def generic(inv: Invariant, value: Any, env: Env) -> bool | None:
    """The compiler's own version of a hand-compiled invariant."""
    nodes = compile_native(inv.expression)(value, Env(env.resource, env.root, value))
    if not nodes:
        return None
    return nodes[0][0] if len(nodes) == 1 and isinstance(nodes[0][0], bool) else True


def resources() -> list[tuple[dict[str, Any], bool]]:
    """The mutated copies, compared in full, then the examples, compared on a limited number
    of elements per invariant: (resource, whether the limit applies)."""
    out = []
    for name, mutate, _code, _where in MUTATIONS.values():
        broken = copy.deepcopy(example(name))
        mutate(broken)
        out.append((broken, False))
    return out + [(example(name), True) for name in sorted(EXAMPLES)]


@pytest.mark.parametrize(
    "limit", [PER_INVARIANT_DEFAULT, pytest.param(PER_INVARIANT, marks=pytest.mark.slow)]
)
def test_compiled_invariants_agree_with_fhirpathpy(parts: Parts, limit: int) -> None:
    structures = parts.validator.structures
    seen: Counter[tuple[str, str]] = Counter()
    verdicts: dict[str, set[bool | None]] = defaultdict(set)
    mismatches: list[str] = []
    failed: Counter[str] = Counter()
    for resource, limited in resources():
        for inv, value, env, base in structures.contexts(resource):
            key = (inv.key, inv.expression)
            if inv.key in NOT_IN_FHIRPATHPY or (limited and seen[key] >= limit):
                continue
            seen[key] += 1
            try:
                want = reference(inv, value, env, base)
            except Exception as exc:  # noqa: BLE001 - reported below
                failed[f"{inv.key}: {exc}"[:200]] += 1
                continue
            got = ours(inv, value, env)
            also = generic(inv, value, env)
            verdicts[inv.key].add(want)
            if inv.key in DIVERGES:
                continue
            skipped = isinstance(value, dict) and not all(k in value for k in inv.guard)
            # the hand-compiled ones may say true where the expression is empty: both hold;
            # where the walk skips an invariant (its guard), the reference must not fail it
            if (got is False) != (want is False) or also != want or (skipped and want is False):
                mismatches.append(f"{inv.key} on {base}: ours {got}, compiled {also}, "
                                  f"fhirpathpy {want}: {str(value)[:200]}")  # fmt: skip
    assert mismatches == [], "\n".join(mismatches[:30])
    assert not failed, failed
    # the comparison covered the invariants that matter, and saw them fail too
    assert sum(seen.values()) > (2000 if limit == PER_INVARIANT else 600)
    assert len(seen) >= 60
    for key in ("pat-1", "obs-6", "obs-7", "per-1", "dom-2", "dom-3", "dom-4", "dom-5",
                "ref-1", "ext-1"):
        assert False in verdicts[key] and True in verdicts[key], key


def test_quantities_compare_by_unit() -> None:
    """rng-2 (low <= high) on Quantities: same unit compares values; different units are not
    comparable here (empty: the invariant is not failed)."""
    rng_2 = compile_native("low.empty() or high.empty() or (low <= high)")
    env = Env({}, {})

    def run(low: dict[str, Any], high: dict[str, Any]) -> Any:
        return [v for v, _ in rng_2({"low": low, "high": high}, env)]

    mg = {"system": UCUM, "code": "mg"}
    assert run({"value": 1, **mg}, {"value": 2, **mg}) == [True]
    assert run({"value": 3, **mg}, {"value": 2, **mg}) == [False]
    assert run({"value": 3, **mg}, {"value": 2, "system": UCUM, "code": "g"}) == []
