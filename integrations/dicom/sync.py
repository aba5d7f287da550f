"""Keeping each study's ImagingStudy current with the instance store, through the core's
validated write path (conditional update on the study's identifier: a re-sent study updates
its ImagingStudy, an unchanged one makes no new version). The subject is the Patient with the
study's PatientID under its issuer's system (integrations/patients.py), created when there is
none; basedOn the one ServiceRequest with the accession number as identifier."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError, error
from fhir_server.interactions import write
from fhir_server.interactions.hooks import transaction
from fhir_server.interactions.search import find
from fhir_server.services import Services
from fhir_server.settings import Settings
from integrations.patients import identifier_system

from . import imaging_study as fhir
from .storage.index import Index, InstanceRow
from .store import Pending

log = logging.getLogger("integrations.dicom")


def origin(settings: Settings) -> str:
    """This server's origin as the integration names it in Endpoints (the same in every
    process, so the Endpoints never flap): from public_base_url, else host and port."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/").removesuffix("/fhir")
    return f"http://{settings.host}:{settings.port}"


def sync_study(
    services: Services,
    index: Index,
    study_uid: str,
    caller: RequestContext | None = None,
    pending: Sequence[Pending] = (),
    keep: Callable[[Pending], object] | None = None,
) -> str | None:
    """Write the ImagingStudy of one study as the index has it now; its id, or None when
    the study has no instances or the ImagingStudy was refused (logged). The index is read
    inside the write transaction, so of two processes syncing the same study the later
    writer always writes the later state.

    STOW-RS passes its `caller` and the `pending` instances: the ImagingStudy (and a Patient
    created for it) is then written as that caller, through the policy like any write of
    theirs (security.md §3.2), with the pending instances counted, and `keep` stores them
    only once it was allowed, inside the same transaction: a refusal (FhirError, raised)
    stores none of them."""
    system = RequestContext(base_url=origin(services.settings) + "/fhir")
    ctx = caller or system
    study = None
    try:
        with transaction(services, ctx) as session:
            study, series, instances = _state(index, study_uid, [p.row for p in pending])
            if study is None or not instances:
                return None
            revision = study["revision"]
            subject = _subject(session, services, ctx, study)
            based_on = _order(session, services, system, study["accession"])
            endpoints = _endpoints(session, services, system)
            resource = fhir.imaging_study(study, series, instances, subject, based_on, endpoints)
            rid = _write(session, services, ctx, system, study_uid, resource)
            if pending:
                assert keep is not None
                for item in pending:
                    keep(item)
                kept = index.study(study_uid)
                assert kept is not None
                revision = kept["revision"]
    except FhirError as exc:
        if caller is not None:
            raise
        log.error("ImagingStudy of study %s refused: %s", study_uid, _diagnostics(exc))
        index.mark_synced(study_uid, study["revision"] if study else 0, "")
        return None
    index.mark_synced(study_uid, revision, rid)
    return rid


def _state(
    index: Index, study_uid: str, adding: list[InstanceRow]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """(study, series, instances) as the index has them, with `adding` (instances of this
    study about to be stored) in place: the later instance's study and series attributes
    win, as Index.put makes them; ordered as the index orders them (no number first)."""
    study = index.study(study_uid)
    instances = index.instances(study_uid)
    series = index.series_of(study_uid)
    if not adding:
        return study, series, instances
    study = {**(study or {"revision": 0}), **adding[-1].study}
    by_series = {s["uid"]: s for s in series}
    by_uid = {i["uid"]: i for i in instances}
    for row in adding:
        by_series[row.series["uid"]] = row.series
        by_uid[row.instance["uid"]] = row.instance
    series = sorted(
        by_series.values(), key=lambda s: (s["number"] is not None, s["number"] or 0, s["uid"])
    )
    instances = sorted(
        by_uid.values(),
        key=lambda i: (i["series_uid"], i["number"] is not None, i["number"] or 0, i["uid"]),
    )
    return study, series, instances


def _write(
    session: Any,
    services: Services,
    ctx: RequestContext,
    system: RequestContext,
    study_uid: str,
    resource: dict[str, Any],
) -> str:
    """Create or update the study's ImagingStudy as `ctx`; the one to update is found by
    the study's identifier whoever the caller (an ImagingStudy the caller may not see is
    not theirs to update: 404 from the write path, never a second one beside it)."""
    query = "identifier=" + fhir.study_identifier(study_uid)
    found = find(session, services, system, "ImagingStudy", query)
    if len(found) > 1:
        raise error(412, "multiple-matches", f"Several ImagingStudies have {query}")
    if found:
        rid = found[0][1]
        validated = services.validator({**resource, "id": rid})
        result = write.update(session, services, ctx, "ImagingStudy", rid, validated)
    else:
        result = write.create(session, services, ctx, "ImagingStudy", services.validator(resource))
    assert result.stored is not None
    return result.stored.id


def _subject(session: Any, services: Services, ctx: RequestContext, study: dict) -> str:
    """Patient/<id> of the study's PatientID under its issuer's system, created from the
    study's patient attributes when no Patient has it. Without a PatientID the study gets a
    Patient of its own (identified by the study, so a re-send finds it again)."""
    system = identifier_system(services.settings, study["issuer"] or None)
    value = study["patient_id"]
    if not value:
        system, value = fhir.UID_SYSTEM, f"urn:oid:{study['uid']}"
    criteria = f"identifier={_escape(system)}|{_escape(value)}"
    found = find(session, services, ctx, "Patient", criteria)
    if len(found) > 1:
        log.warning("%d Patients have identifier %s|%s; the study names the first",
                    len(found), system, value)  # fmt: skip
    if found:
        return f"Patient/{found[0][1]}"
    new = fhir.patient(system, value, study["attrs"])
    if not study["patient_id"]:
        new["identifier"] = [{"system": system, "value": value}]
    result = write.create(session, services, ctx, "Patient", services.validator(new))
    assert result.stored is not None
    return f"Patient/{result.stored.id}"


def _order(session: Any, services: Services, ctx: RequestContext, accession: str) -> str | None:
    """The one ServiceRequest identified by the accession number (ADT/ORM from the HIS); none
    or several: no basedOn."""
    if not accession:
        return None
    found = find(session, services, ctx, "ServiceRequest", f"identifier={_escape(accession)}")
    if len(found) == 1:
        return f"ServiceRequest/{found[0][1]}"
    if found:
        log.warning("several ServiceRequests have accession number %s: no basedOn", accession)
    return None


def _endpoints(session: Any, services: Services, ctx: RequestContext) -> list[str]:
    """The shared Endpoints, written when missing or changed (an unchanged PUT writes no
    version): DICOMweb, and IHE IID when a viewer is configured."""
    base = origin(services.settings)
    wanted = [fhir.endpoint_wado(base + "/dicom-web")]
    if services.settings.dicom_viewer_url:
        wanted.append(fhir.endpoint_iid(base + "/iid"))
    for endpoint in wanted:
        write.update(session, services, ctx, "Endpoint", endpoint["id"],
                     services.validator(endpoint))  # fmt: skip
    return [f"Endpoint/{e['id']}" for e in wanted]


def _escape(value: str) -> str:
    """A token search value with its reserved characters escaped (search.html#escaping)."""
    for ch in ("\\", ",", "|", "$"):
        value = value.replace(ch, "\\" + ch)
    return value.replace("%", "%25").replace("&", "%26").replace("+", "%2B").replace("#", "%23")


def _diagnostics(exc: FhirError) -> str:
    return "; ".join(f"{i.code} at {i.expression}: {i.diagnostics}" for i in exc.issues) or str(exc)


class Syncer:
    """A background thread that syncs changed studies: at most `delay` seconds after the
    first change it sees, or sooner once `quiet` seconds pass without another instance, so
    a study pushed instance by instance is written a few times, not once per instance.
    After a sync, while nothing arrives, it prepares WADO-RS metadata (`warm`)."""

    def __init__(
        self,
        services: Services,
        index: Index,
        warm: Any = None,
        quiet: float = 0.5,
        delay: float = 5.0,
    ) -> None:
        self.services, self.index, self.warm = services, index, warm
        self.quiet, self.delay = quiet, delay
        self._event = threading.Event()
        self._stop = False
        self._last = 0.0
        self._thread = threading.Thread(target=self._run, name="imagingstudy-sync", daemon=True)

    def start(self) -> Syncer:
        self._event.set()  # studies left unsynced by an earlier run
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def changed(self) -> None:
        self._last = time.monotonic()
        self._event.set()

    def stop(self) -> None:
        if not self.running:
            return
        self._stop = True
        self._event.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop:
            self._event.wait()
            first = time.monotonic()
            while not self._stop:
                now = time.monotonic()
                if now - self._last >= self.quiet or now - first >= self.delay:
                    break
                time.sleep(min(self.quiet, 0.05))
            self._event.clear()
            self.sync_all()
            if self.warm is not None:
                self.warm(lambda: self._event.is_set() or self._stop)

    def sync_all(self) -> int:
        done = 0
        while True:
            pending = self.index.unsynced()
            if not pending:
                return done
            for uid in pending:
                try:
                    sync_study(self.services, self.index, uid)
                except Exception:
                    log.exception("ImagingStudy sync of study %s failed", uid)
                    return done
                done += 1
