"""SMART scopes into Grants (SMART App Launch 2.x scopes-and-launch-context.html, §1.4 of
security.md), and the pure decision over them: no HTTP needed."""

from __future__ import annotations

import random

import pytest

from fhir_server.context import Principal
from fhir_server.errors import FhirError
from fhir_server.policy.decide import allowed, combine
from fhir_server.policy.scopes import Grant, parse_scope, parse_scopes
from fhir_server.search import query as q

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def test_v2_letters_become_the_interaction_set() -> None:
    assert parse_scope("patient/Observation.rs") == Grant(
        "patient", "Observation", frozenset("rs")
    )
    assert parse_scope("user/*.cruds") == Grant("user", "*", frozenset("cruds"))
    assert parse_scope("system/Patient.c") == Grant("system", "Patient", frozenset("c"))


@pytest.mark.parametrize(
    ("v1", "v2"),
    [("read", "rs"), ("write", "cud"), ("*", "cruds")],
)
def test_v1_maps_to_v2_as_permission_v1_says(v1: str, v2: str) -> None:
    assert parse_scope(f"patient/Observation.{v1}") == parse_scope(f"patient/Observation.{v2}")


def test_granular_criteria_become_search_pairs() -> None:
    grant = parse_scope(f"patient/Observation.rs?category={LAB}")
    assert grant is not None
    assert grant.criteria == (("category", LAB),)
    assert grant.letters == frozenset("rs")


@pytest.mark.parametrize(
    "scope",
    [
        "launch",
        "launch/patient",
        "openid",
        "fhirUser",
        "offline_access",
        "online_access",
        "patient/Observation.dus",  # out of order
        "patient/Observation.rr",  # repeated
        "patient/Observation.x",
        "patient/Observation.",
        "patient/Observation",
        "patient/NotAType.rs",
        "admin/Observation.rs",
        "patient/Observation.read?category=x",  # criteria are v2 only
        "patient/Observation.rs?",  # empty criteria
        "patient/Observation.rs?category",  # no value
        " patient/Observation.rs",
        "patient/Observation.rs ",
    ],
)
def test_non_resource_and_malformed_scopes_grant_nothing(scope: str) -> None:
    assert parse_scope(scope) is None


def test_a_scope_list_keeps_only_resource_grants() -> None:
    grants = parse_scopes("openid fhirUser launch/patient patient/Patient.r patient/Observation.rs")
    assert [(g.rtype, "".join(sorted(g.letters))) for g in grants] == [
        ("Patient", "r"),
        ("Observation", "rs"),
    ]


def _named_letters(scope: str) -> set[str]:
    """What a scope string names, worked out independently of the parser: its v1 word or
    the letters after the dot, before any `?`."""
    permission = scope.split(".", 1)[1].split("?", 1)[0] if "." in scope else ""
    return set({"read": "rs", "write": "cud", "*": "cruds"}.get(permission, permission))


def test_random_scopes_never_grant_more_than_they_name() -> None:
    """Property: for random strings built from scope pieces, a parsed grant allows only
    letters the string names, only the type it names, at the level it names."""
    rng = random.Random(20240610)
    levels = ["patient", "user", "system", "admin", "", "patient/"]
    types = ["Observation", "*", "Patient", "Bogus", "", "Observation.rs"]
    perms = ["read", "write", "*", "rs", "cruds", "sr", "cud", "x", "", "r?code=1", "rs?", "c*"]
    seps = ["/", ".", "//", ""]
    for _ in range(5000):
        scope = (
            rng.choice(levels) + rng.choice(seps) + rng.choice(types) + rng.choice(seps[:2])
            + rng.choice(perms)
        )
        if rng.random() < 0.2:
            scope = scope[: rng.randrange(len(scope) + 1)]
        grant = parse_scope(scope)
        if grant is None:
            continue
        assert grant.letters <= _named_letters(scope), scope
        assert grant.letters
        assert scope.startswith(f"{grant.level}/{grant.rtype}."), scope


def test_patient_level_grant_without_patient_in_context_permits_nothing() -> None:
    principal = Principal(kind="patient", scopes=("patient/Observation.rs",))
    assert allowed(principal, "read", "Observation") == []
    with_patient = Principal(kind="patient", patient="p1", scopes=("patient/Observation.rs",))
    assert len(allowed(with_patient, "read", "Observation")) == 1


@pytest.mark.parametrize(
    ("interaction", "letter"),
    [
        ("read", "r"), ("vread", "r"), ("history-instance", "r"), ("search-type", "s"),
        ("search-system", "s"), ("history-type", "s"), ("create", "c"), ("update", "u"),
        ("patch", "u"), ("delete", "d"),
    ],
)
def test_each_interaction_needs_its_letter(interaction: str, letter: str) -> None:
    others = "".join(c for c in "cruds" if c != letter)
    lacking = Principal(kind="user", scopes=(f"user/Observation.{others}",))
    having = Principal(kind="user", scopes=(f"user/Observation.{letter}",))
    assert allowed(lacking, interaction, "Observation") == []
    assert allowed(having, interaction, "Observation") != []
    assert allowed(having, interaction, "Condition") == []


def test_unknown_interaction_is_denied() -> None:
    principal = Principal(kind="user", scopes=("user/*.cruds",))
    assert allowed(principal, "$everything", "Patient") == []


def test_union_of_grants_is_the_least_restrictive_when_it_contains_the_others() -> None:
    a = q.Clause(q.Param("category", "token"), ("lab",))
    b = q.Clause(q.Param("code", "token"), ("x",))
    assert combine([[a, b], [a]]) == [a]
    assert combine([[a], []]) == []
    with pytest.raises(FhirError) as refused:
        combine([[a], [b]])  # an OR of different criteria: refused, never widened
    assert refused.value.status == 403
