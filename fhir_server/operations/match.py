"""Patient/$match (http://hl7.org/fhir/R4/patient-operation-match.html): the patient index of
the consortium. Candidates come from index lookups on the strong attributes (national ID,
other identifiers, phone, birth date, name), confined to what the caller may search; each is
scored by match_rules and graded with the match-grade extension."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import Issue, error, operation_outcome
from ..model.validate import check_body
from ..policy import enforce
from ..search import pinyin
from ..search import query as q
from . import match_rules as rules
from .registry import Call, Operations, Outcome

OPERATIONS = Operations()
DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-match"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
#: candidates read per lookup: a name or a birth date shared by more people than this is not
#: what decides a match (each needs more evidence, which has a lookup of its own)
PER_LOOKUP = 200
#: pinyin readings of the asked name looked up at most (polyphonic names have several)
MAX_READINGS = 4


@OPERATIONS.operation("$match", "type", ("Patient",), definition=DEFINITION)
def match(call: Call) -> Outcome:
    """A searchset of the patients like `resource`, most likely first, each with search.score
    and its match grade; warnings (a malformed national ID) in an OperationOutcome entry."""
    services, settings = call.services, call.services.settings
    patient = call.value("resource")
    if not isinstance(patient, dict):
        raise error(400, "required", "$match needs a Patient in parameter 'resource'", "resource")
    check_body(patient, "Patient")
    services.validator(patient)  # a valid instance, as $match requires (mandatory or not)
    only_certain = _boolean(call, "onlyCertainMatches")
    count = _count(call, settings.default_count)
    systems = [s.strip() for s in settings.national_id_systems.split(",") if s.strip()]
    query = rules.person(patient, systems)
    warnings = [
        Issue(
            "value",
            f"National ID '{value}' {reason}: not used for matching (GB 11643-1999)",
            "warning",
            f"Parameters.parameter[0].resource.identifier[{i}].value",
        )
        for i, value, reason in query.bad_national_ids
    ]
    session = services.store.reader()
    narrowing = enforce.narrow(call.ctx, services, "search-type", "Patient", [])
    scored = []
    possible = settings.match_possible
    for pid, raw in _candidates(session, call.ctx.base_url, query, narrowing, possible):
        candidate = orjson.loads(raw)
        found = rules.person(candidate, systems)
        if found.replaced:  # merged away: the record that replaced it is the one to use
            continue
        value = rules.score(rules.evidence(query, found))
        grade = rules.grade(value, settings.match_certain, settings.match_probable, possible)
        if grade is not None:
            scored.append((value, pid, raw, grade))
    scored.sort(key=lambda s: (-s[0], s[1]))
    if only_certain:
        certain = [s for s in scored if s[3] == "certain"]
        if len(certain) > 1:
            warnings.append(Issue(
                "multiple-matches",
                f"{len(certain)} records match with certainty; none is returned "
                "(onlyCertainMatches)", "information",
            ))  # fmt: skip
        scored = certain if len(certain) == 1 else []
    entries = [_entry(call.ctx.base_url, *s) for s in scored[:count]]
    if warnings:
        outcome = orjson.dumps(operation_outcome(warnings))
        entries.append(b'{"resource":' + outcome + b',"search":{"mode":"outcome"}}')
    head = orjson.dumps({"resourceType": "Bundle", "type": "searchset",
                         "total": min(len(scored), count)})  # fmt: skip
    return Outcome(head[:-1] + b',"entry":[' + b",".join(entries) + b"]}")


def _candidates(
    session: Any, base: str, query: rules.Person, narrowing: list[q.Clause], possible: float
) -> list[tuple[str, bytes]]:
    """(id, json) of the current Patients sharing a looked-up attribute with the query, each
    once, within what the caller may search (the same narrowing as a search)."""
    ids: dict[str, None] = {}
    for lookup in _lookups(query, rules.lookups(query, possible)):
        for _, pid in session.match_ids(base, "Patient", [*narrowing, lookup], PER_LOOKUP):
            ids.setdefault(pid)
    out = []
    for pid in ids:
        current = session.current("Patient", pid)
        if current is not None and current[1].json is not None:
            out.append((pid, current[1].json))
    return out


def _lookups(query: rules.Person, wanted: set[str]) -> list[q.Clause]:
    """One index lookup per wanted attribute of the query (rules.lookups)."""
    token, string = q.Param("identifier", "token"), q.Param("name", "string")
    date = q.Param("birthdate", "date")
    out: list[q.Clause] = []
    if "national-id" in wanted:
        out += [q.Clause(token, (value, value.lower())) for value in sorted(query.national_ids)]
    if "identifier" in wanted:
        out += [q.Clause(token, (f"{system}|{value}",)) for system, value in
                sorted(query.identifiers) if _plain(system) and _plain(value)]  # fmt: skip
    if "phone" in wanted:
        out += [q.Clause(q.Param("phone", "token"), (d, f"+86{d}", f"+86 {d}"))
                for d in sorted(query.phones)]  # fmt: skip
    if query.birth_date:
        dates = [query.birth_date] if "birth-date" in wanted else []
        if "birth-date-swapped" in wanted:
            dates.append(rules.swapped(query.birth_date) or query.birth_date)
        if dates:
            out.append(q.Clause(date, tuple(dict.fromkeys(dates))))
    if "name" in wanted:
        # names through the value index (a prefix: 张三 also finds 张三丰, scored lower)
        out += [q.Clause(string, (n,)) for n in sorted(query.names) if pinyin.has_han(n)]
        readings = sorted(r for r in query.pinyin if pinyin.romanised(r))[:MAX_READINGS]
        out += [q.Clause(string, (r,)) for r in readings]
    return [c for c in out if all(_plain(v) for v in c.values)]


def _plain(value: str) -> bool:
    """Free of the characters search values escape (search.html#escaping): a value holding
    one is not looked up (it is still scored when another lookup finds its record)."""
    return not any(ch in value for ch in "\\,$") and value.count("|") <= 1


def _entry(base: str, score: float, pid: str, raw: bytes, grade: str) -> bytes:
    search = {
        "extension": [{"url": MATCH_GRADE, "valueCode": grade}],
        "mode": "match",
        "score": score,
    }
    url = orjson.dumps(f"{base}/Patient/{pid}")
    return (b'{"fullUrl":' + url + b',"resource":' + raw + b',"search":'
            + orjson.dumps(search) + b"}")  # fmt: skip


def _boolean(call: Call, name: str) -> bool:
    value = call.value(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise error(400, "invalid", f"'{name}' must be a boolean", name)


def _count(call: Call, default: int) -> int:
    value = call.value("count")
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise error(400, "invalid", "'count' must be a positive integer", "count")
    return value
