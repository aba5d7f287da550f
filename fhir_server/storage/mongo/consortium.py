"""The consortium rule's narrowing (`Clause.patients`, security.md §3.2) on MongoDB, with the
semantics of sqlite/search.py `_in_patient_set`, which is the reference and whose parts the
functions here follow. SQLite answers it with correlated lookups per row; MongoDB's find has
none, so the patients the organization may see are computed first (a few indexed queries:
managed Patients, the care-relationship Tasks it is a party to, the Consents naming it) and
the resources are then matched with `$in` over them, as chains are (mongo/search.py).

Cost: one set per search; it grows with the patients an organization manages, so a hospital
with hundreds of thousands of patients makes a large `$in` (README, MongoDB)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...search import query as q
from ...search.values import date_bounds

if TYPE_CHECKING:
    from .store import MongoSession

Filter = dict[str, Any]
#: Consent.scope of the Consents the rule reads (consentscope: privacy consent)
_PRIVACY = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")


def _ref(p: Any, **more: Any) -> Filter:
    return {"x.reference": {"$elemMatch": {"p": p, **more}}}


def _tok(p: str, **more: Any) -> Filter:
    return {"x.token": {"$elemMatch": {"p": p, **more}}}


def _refs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("x", {}).get("reference", ()))


class Narrowing:
    """The patients Organization/`ps.organization` may see, computed once per search."""

    def __init__(self, session: MongoSession, ps: q.PatientSet) -> None:
        self.db, self.s, self.ps = session.db, session.s, ps
        self.org = ps.organization
        self.roles = self._ids("PractitionerRole", _ref("organization", target_type="Organization",
                                                        target_id=self.org))  # fmt: skip
        self.visible = self._visible()

    def _ids(self, rtype: str, where: Filter) -> set[str]:
        found = self.db[rtype].find({"del": False, **where}, {"_id": 1}, session=self.s)
        return {d["_id"] for d in found}

    def _party(self, r: dict[str, Any]) -> bool:
        """The reference row names the organization or one of its PractitionerRoles."""
        tt, tid = r.get("target_type"), r.get("target_id")
        return (tt == "Organization" and tid == self.org) or (
            tt == "PractitionerRole" and tid in self.roles
        )

    def _visible(self) -> list[str]:
        ps = self.ps
        managed = self._ids("Patient", _ref("organization", target_type="Organization",
                                            target_id=self.org))  # fmt: skip
        shared: set[str] = set()
        for relationship, since in ps.relationships:
            shared |= self._cared_for(relationship, since)
        if ps.consents_at is not None:
            shared |= self._consenting("permit", ps.consents_at)
            shared -= self._consenting("deny", ps.consents_at)
        return sorted(managed | shared)

    def _tasks_of(self, r: q.CareRelationship) -> Filter:
        """Tasks of the relationship: its business status system and its code."""
        return {
            "$and": [
                _tok("business-status", system=r.business_system),
                _tok("code", system=r.code[0], code=r.code[1]),
            ]
        }

    def _task_party(self, tasks: list[dict[str, Any]]) -> set[str]:
        """Ids of the Tasks the organization is a party of: Task.owner, or the requester or
        performer of the ServiceRequest in Task.focus."""
        out = {t["_id"] for t in tasks if any(r["p"] == "owner" and self._party(r)
                                               for r in _refs(t))}  # fmt: skip
        focus = {
            r["target_id"]: t["_id"]
            for t in tasks
            if t["_id"] not in out
            for r in _refs(t)
            if r["p"] == "focus" and r.get("target_type") == "ServiceRequest"
        }
        if focus:
            requests = self.db["ServiceRequest"].find(
                {"_id": {"$in": sorted(focus)}, "del": False}, {"x.reference": 1}, session=self.s
            )
            for sr in requests:
                if any(r["p"] in ("requester", "performer") and self._party(r)
                       for r in _refs(sr)):  # fmt: skip
                    out |= {tid for sid, tid in focus.items() if sid == sr["_id"]}
        return out

    def _cared_for(self, r: q.CareRelationship, since: str) -> set[str]:
        """Task.for of the Tasks of `r` that hold (live, or ended after `since`) and that the
        organization is a party of (sqlite/search.py `_care_task`)."""
        held = {
            "$or": [
                _tok("status", code={"$in": list(r.live)}),
                {"$and": [_tok("status", code={"$in": list(r.ended)}),
                          {"x.date": {"$elemMatch": {"p": "modified",
                                                     "low": {"$gt": date_bounds(since)[0]}}}}]},
            ]
        }  # fmt: skip
        where: Filter = {"$and": [self._tasks_of(r), held, _ref("subject", target_type="Patient")]}
        if self.ps.excluding is not None:
            where["_id"] = {"$ne": self.ps.excluding}
        tasks = list(
            self.db["Task"].find({"del": False, **where}, {"x.reference": 1}, session=self.s)
        )
        parties = self._task_party(tasks)
        return {
            r["target_id"]
            for t in tasks
            if t["_id"] in parties
            for r in _refs(t)
            if r["p"] == "subject" and r.get("target_type") == "Patient"
        }

    def _stands_for(self, r: dict[str, Any], parents: set[str]) -> bool:
        """The organization, one of its roles, or an Organization it is partOf."""
        return self._party(r) or (
            r.get("target_type") == "Organization" and r.get("target_id") in parents
        )

    def _consenting(self, decision: str, at: str) -> set[str]:
        """Patients with a Consent in force at `at` whose provision.type is `decision` and that
        binds the organization (sqlite/search.py `_consent`)."""
        instant = date_bounds(at)[0]
        where = {
            "$and": [
                _ref("patient", target_type="Patient"),
                _tok("provision-type", code=decision),
                _tok("status", code="active"),
                _tok("scope", code=_PRIVACY[1], system=_PRIVACY[0]),
                {"$nor": [{"x.date": {"$elemMatch": {
                    "p": "period", "$or": [{"low": {"$gt": instant}}, {"high": {"$lt": instant}}],
                }}}]},
            ]
        }  # fmt: skip
        org = self.db["Organization"].find_one(
            {"_id": self.org, "del": False}, {"x.reference": 1}, session=self.s
        )
        parents = {
            r["target_id"]
            for r in _refs(org or {})
            if r["p"] == "partof" and r.get("target_type") == "Organization"
        }
        out: set[str] = set()
        for c in self.db["Consent"].find(
            {"del": False, **where}, {"x.reference": 1, "x.token": 1}, session=self.s
        ):
            refs = _refs(c)
            actors = [r for r in refs if r["p"] == "actor"]
            named = any(self._stands_for(r, parents) for r in actors)
            if decision == "permit":
                limited = any(t["p"] == "provision-limited" for t in c["x"].get("token", ()))
                binds = named and not limited
            else:
                binds = named or not any(
                    r.get("target_type") in ("Organization", "PractitionerRole") for r in actors
                )
            if binds:
                out |= {r["target_id"] for r in refs
                        if r["p"] == "patient" and r.get("target_type") == "Patient"}  # fmt: skip
        return out

    def outside_threads(self, r: q.CareRelationship) -> Filter:
        """Communications not partOf a Task of `r` the organization is no party of (a
        consultation's messages are its parties' only)."""
        tasks = list(
            self.db["Task"].find(
                {"del": False, **self._tasks_of(r)}, {"x.reference": 1}, session=self.s
            )
        )
        parties = self._task_party(tasks)
        others = sorted(t["_id"] for t in tasks if t["_id"] not in parties)
        return {"$nor": [_ref("part-of", target_type="Task", target_id={"$in": others})]}

    def filter(self, rtype: str) -> Filter:
        """In the Patient compartment of a visible patient (sqlite `_in_patient_set`)."""
        ps = self.ps
        ors: list[Filter] = []
        if ps.params:
            ors.append(_ref({"$in": list(ps.params)}, target_type="Patient",
                            target_id={"$in": self.visible}))  # fmt: skip
            if ps.shared_unless_patient:
                ors.append({"$nor": [_ref({"$in": list(ps.params)}, target_type="Patient")]})
        for param, ttype, tparams in ps.through:
            seen = self._ids(ttype, _ref({"$in": list(tparams)}, target_type="Patient",
                                         target_id={"$in": self.visible}))  # fmt: skip
            ors.append(_ref(param, target_type=ttype, target_id={"$in": sorted(seen)}))
        if rtype == "Patient":
            ors.append({"_id": {"$in": self.visible}})
        out: Filter = {"$or": ors} if ors else {"_id": {"$in": []}}
        if rtype == "Communication":
            threads = [self.outside_threads(r) for r, _ in ps.relationships if r.confines_messages]
            if threads:
                out = {"$and": [out, *threads]}
        return out
