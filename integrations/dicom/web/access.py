"""DICOMweb answers a caller exactly what an ImagingStudy search answers them: the studies
whose ImagingStudy the core's policy lets them see (fhir_server/policy, with the caller's
bearer token), decided by the core's own search of ImagingStudy by id."""

from __future__ import annotations

from fhir_server.context import RequestContext
from fhir_server.interactions.search import find
from fhir_server.policy.enforce import authorize
from fhir_server.services import Services

from ..storage.index import Index

#: ImagingStudy ids asked about per search (the URL of one core query)
_CHUNK = 200


def check(services: Services, ctx: RequestContext, interaction: str) -> None:
    """403 when no granted scope permits `interaction` on ImagingStudy at all."""
    authorize(ctx, services, interaction, "ImagingStudy")


def check_stow(services: Services, ctx: RequestContext) -> None:
    """403 unless some granted scope permits both create and update of ImagingStudy (STOW-RS
    writes one per study); which patients' studies the caller may store is the write path's
    decision, per study (sync.sync_study)."""
    for interaction in ("create", "update"):
        authorize(ctx, services, interaction, "ImagingStudy")


def visible(
    services: Services, ctx: RequestContext, index: Index, study_uids: list[str],
    interaction: str = "search-type",
) -> set[str]:
    """Those of `study_uids` the caller may see. Without a token (auth off) every stored
    study; with one, those whose ImagingStudy its search of ImagingStudy finds (a study whose
    ImagingStudy is not written yet is not shown)."""
    if ctx.principal.kind == "anonymous":
        return set(study_uids)
    access = authorize(ctx, services, interaction, "ImagingStudy")
    ids = index.resource_ids(study_uids)
    if access is None or not access.narrowed:
        return set(ids)
    by_id = {rid: uid for uid, rid in ids.items()}
    session = services.store.reader()
    seen: set[str] = set()
    rids = sorted(by_id)
    for start in range(0, len(rids), _CHUNK):
        chunk = rids[start : start + _CHUNK]
        found = find(session, services, ctx, "ImagingStudy", "_id=" + ",".join(chunk),
                     limit=None, interaction=interaction)  # fmt: skip
        seen |= {by_id[i] for _, i in found}
    return seen
