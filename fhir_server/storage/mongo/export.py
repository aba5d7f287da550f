"""Bulk Data export in MongoDB (contract.ExportTables): the `export_job` collection, and the
resources an export reads in row (`rid`) order, so that a job can stop after any batch and go
on from there. Job writes are single-document updates conditioned on the worker holding the
job: atomic without a transaction."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ...spec import RESOURCE_TYPES
from ..jobs import Job, Selection
from .search import Compiler, Filter

if TYPE_CHECKING:
    from .store import MongoStore

JOBS = "export_job"


def _job(doc: dict[str, Any]) -> Job:
    return Job(**{k: v for k, v in doc.items() if k != "_id"})


class ExportJobs:
    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.jobs = store.db[JOBS]

    def create(self, job: Job) -> None:
        try:
            self.jobs.insert_one({"_id": job.id, **asdict(job)})
        except DuplicateKeyError:  # a 128-bit random id: never, but never silently
            raise RuntimeError(f"export job {job.id} exists") from None

    def get(self, job_id: str) -> Job | None:
        doc = self.jobs.find_one({"_id": job_id})
        return _job(doc) if doc else None

    def runnable(self) -> list[Job]:
        found = self.jobs.find({"status": {"$in": ["queued", "running"]}}).sort("created")
        return [_job(d) for d in found]

    def claim(self, job: Job, worker: str, lease: float) -> bool:
        taken = self.jobs.find_one_and_update(
            {"_id": job.id, "status": job.status, "worker": job.worker},
            {"$set": {"status": "running", "worker": worker, "lease": lease}},
            return_document=ReturnDocument.AFTER,
        )
        return taken is not None

    def checkpoint(self, job_id: str, worker: str, progress: dict[str, Any], lease: float) -> bool:
        done = self.jobs.update_one(
            {"_id": job_id, "worker": worker, "status": "running"},
            {"$set": {"progress": progress, "lease": lease}},
        )
        return done.matched_count == 1

    def finish(self, job_id: str, worker: str, manifest: dict[str, Any], expires: float) -> bool:
        done = self.jobs.update_one(
            {"_id": job_id, "worker": worker, "status": "running"},
            {"$set": {"status": "complete", "manifest": manifest, "expires": expires,
                      "lease": None}},
        )  # fmt: skip
        return done.matched_count == 1

    def fail(self, job_id: str, worker: str, reason: str, expires: float) -> None:
        self.jobs.update_one(
            {"_id": job_id, "worker": worker},
            {"$set": {"status": "failed", "error": reason, "expires": expires, "lease": None}},
        )

    def delete(self, job_id: str) -> bool:
        return self.jobs.delete_one({"_id": job_id}).deleted_count == 1

    def expired(self, now: float) -> list[str]:
        found = self.jobs.find(
            {"status": {"$in": ["complete", "failed"]}, "expires": {"$lt": now}}, {"_id": 1}
        )
        return [d["_id"] for d in found]

    def ids(self) -> set[str]:
        return {d["_id"] for d in self.jobs.find({}, {"_id": 1})}

    # --- the resources an export reads ------------------------------------------------------

    def _where(self, base_url: str, sel: Selection) -> Filter:
        compiler = Compiler(self.store.reader(), base_url)
        parts = [compiler.where(sel.rtype, list(sel.clauses))]
        if sel.filters:
            parts.append({"$or": [compiler.where(sel.rtype, list(f)) for f in sel.filters]})
        if sel.compartment is not None and sel.rtype == "Patient":
            if sel.patients is not None:
                parts.append({"_id": {"$in": list(sel.patients)}})
        elif sel.compartment is not None:
            ref: dict[str, Any] = {"p": {"$in": list(sel.compartment)}, "target_type": "Patient"}
            if sel.patients is not None:
                ref["target_id"] = {"$in": list(sel.patients)}
            parts.append({"x.reference": {"$elemMatch": ref}})
        if sel.since is not None:
            parts.append({"lu": {"$gt": sel.since}})
        return {"$and": parts}

    def count(self, base_url: str, sel: Selection) -> int:
        return self.store.db[sel.rtype].count_documents(self._where(base_url, sel))

    def batch(
        self, base_url: str, sel: Selection, after: int, limit: int, at: str
    ) -> tuple[list[bytes], int | None]:
        where = {"$and": [self._where(base_url, sel), {"rid": {"$gt": after}}]}
        docs = list(
            self.store.db[sel.rtype].find(where, {"rid": 1, "lu": 1, "json": 1})
            .sort("rid")
            .limit(limit)
        )
        out: list[bytes] = []
        history = self.store.db["history"]
        for d in docs:
            if d["lu"] <= at:
                out.append(bytes(d["json"]))
                continue
            then = history.find_one(
                {"t": sel.rtype, "i": d["_id"], "lu": {"$lte": at}}, sort=[("v", -1)]
            )
            if then is not None and not then["del"]:
                out.append(bytes(then["json"]))
        return out, (docs[-1]["rid"] if docs else None)

    def deleted(self, rtype: str, since: str, at: str) -> list[tuple[str, str]]:
        found = self.store.db[rtype].find(
            {"del": True, "lu": {"$gt": since, "$lte": at}}, {"lu": 1}
        ).sort("_id")
        return [(d["_id"], d["lu"]) for d in found]

    def types_present(self) -> list[str]:
        db = self.store.db
        names = set(db.list_collection_names()) & RESOURCE_TYPES
        return sorted(t for t in names if db[t].find_one({"del": False}, {"_id": 1}) is not None)
