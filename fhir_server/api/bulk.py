"""The Bulk Data status URL and output files (Bulk Data Access IG 2.0.0, export.html "Bulk
Data Status Request", "Bulk Data Delete Request", "Bulk Data Output File Request"). Each
answers only the caller who kicked the export off (the same client, for the same user); to
anyone else a job does not exist (404)."""

from __future__ import annotations

import re
import shutil
import time
from email.utils import formatdate

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..errors import error, information
from ..interactions.hooks import Access
from ..operations import export
from ..storage.contract import Job
from . import http
from .routes import _context, _services

router = APIRouter()
_NAME = re.compile(r"[A-Za-z]{1,64}\.ndjson")


async def _job(request: Request, job_id: str) -> Job:
    """The caller's job, or 404 for one that is not theirs, unknown or expired."""
    services, ctx = _services(request), _context(request)
    job = await run_in_threadpool(services.store.exports.get, job_id)
    if job is None or job.owner != export.owner(ctx.principal) or (
        job.expires is not None and job.expires < time.time()
    ):
        raise error(404, "not-found", f"No export {job_id} of yours is known")
    if services.hooks.on_access:  # downloads and polls are accesses too (the audit trail)
        path = request.url.path
        services.hooks.accessed(Access(ctx, request.method, path, "operation"))
    return job


@router.api_route(f"/{export.PATH}/{{job_id}}", methods=["GET", "HEAD"])
async def status(request: Request, job_id: str) -> Response:
    """202 with X-Progress while the job runs; the manifest (200, application/json) once it
    is complete; 500 with an OperationOutcome when it failed."""
    job = await _job(request, job_id)
    if job.status in ("queued", "running"):
        progress = job.progress or {}
        done, total = progress.get("done", 0), progress.get("total")
        text = "queued" if job.status == "queued" or total is None else (
            f"{done * 100 // max(total, 1)}% ({done:,} of {total:,} resources)")  # fmt: skip
        return Response(status_code=202, headers={"X-Progress": text, "Retry-After": "1"})
    if job.status == "failed":
        raise error(500, "exception", job.error or "The export failed")
    assert job.manifest is not None and job.expires is not None
    headers = {"Expires": formatdate(job.expires, usegmt=True)}
    return Response(orjson.dumps(job.manifest), 200, headers, "application/json")


@router.delete(f"/{export.PATH}/{{job_id}}")
async def delete(request: Request, job_id: str) -> Response:
    """Cancel a running export or remove a finished one and its files (202)."""
    job = await _job(request, job_id)
    services = _services(request)
    await run_in_threadpool(services.store.exports.delete, job.id)
    # a running job's worker sees it gone at its next checkpoint and removes its files
    folder = export.job_dir(services.settings, job.id)
    if job.status not in ("queued", "running"):
        await run_in_threadpool(shutil.rmtree, folder, True)
    return http.fhir_response(request, information(f"Export {job.id} deleted"), 202)


@router.get(f"/{export.PATH}/{{job_id}}/{{name}}")
async def output_file(request: Request, job_id: str, name: str) -> Response:
    """One file of a complete export, as application/fhir+ndjson."""
    job = await _job(request, job_id)
    listed = {
        item["url"].rsplit("/", 1)[-1]
        for key in ("output", "deleted", "error")
        for item in (job.manifest or {}).get(key, [])
    }
    if job.status != "complete" or name not in listed or not _NAME.fullmatch(name):
        raise error(404, "not-found", f"Export {job_id} has no file {name}")
    path = export.job_dir(_services(request).settings, job.id) / name
    return FileResponse(path, media_type="application/fhir+ndjson")

