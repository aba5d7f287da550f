"""DICOMweb reads told to the audit trail the way the FHIR routes tell it theirs (hooks.Access,
fhir_server/audit): a QIDO-RS search as a search of ImagingStudy with its query, a WADO-RS
retrieve as a read; the entities are the ImagingStudy versions of the studies answered, so the
AuditEvents name each study (its ImagingStudy identifies it by Study Instance UID) and carry
one event per patient, as IHE BALP asks of FHIR reads (security.md §4)."""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.context import RequestContext
from fhir_server.interactions.hooks import Access
from fhir_server.services import Services

from .storage.index import Index


def accessed(
    services: Services, ctx: RequestContext, index: Index, method: str, path: str, query: str,
    interaction: str, study_uids: Iterable[str],
) -> None:
    """Queue the access (cheap: the trail's writer expands it); nothing while audit is off."""
    if not services.hooks.on_access:
        return
    ids = index.resource_ids(sorted(set(study_uids)))
    session = services.store.reader()
    versions = []
    for rid in ids.values():
        current = session.current("ImagingStudy", rid)
        if current is not None and not current[1].deleted:
            versions.append(current[1])
    services.hooks.accessed(Access(ctx, method, path, interaction, tuple(versions), query=query))
