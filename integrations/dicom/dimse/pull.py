"""`fhir-server dicom pull --from PACS --study UID`: fetch a study (a referred patient's prior
CT) from a configured PACS into our store, by C-GET (instances on the same association) or
C-MOVE (the PACS sends them to our SCP, which it must know by our AE title)."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt

from fhir_server.services import Services

from ..service import dicom_of
from ..sync import sync_study
from . import listen, scp
from .network import NoDelayAE
from .scp import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

log = logging.getLogger("integrations.dicom")


class PullError(RuntimeError):
    """Why a pull did not happen (unknown PACS, no association, a failure status)."""


@dataclass(frozen=True)
class Pulled:
    completed: int
    failed: int
    warning: int
    imaging_study: str | None


def pull(services: Services, peer_aet: str, study_uid: str, method: str = "get") -> Pulled:
    dicom = dicom_of(services)
    peer = dicom.config.peers.get(peer_aet)
    if peer is None:
        known = ", ".join(dicom.config.peers) or "none"
        raise PullError(f"no PACS '{peer_aet}' in dicom_peers (configured: {known})")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    ae = NoDelayAE(ae_title=dicom.config.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    server = None
    if method == "get":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles: list[Any] = []
        for cx in StoragePresentationContexts[:127]:  # 128 contexts at most, one is the model's
            ae.add_requested_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
            roles.append(build_role(str(cx.abstract_syntax), scp_role=True))
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, scp.store, [dicom])])  # fmt: skip
        model = StudyRootQueryRetrieveInformationModelGet
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        server = _receiver(services)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        model = StudyRootQueryRetrieveInformationModelMove
    if not assoc.is_established:
        if server is not None:
            listen.stop(server)
        raise PullError(f"{peer.ae_title} at {peer.host}:{peer.port} refused the association")
    last = None
    try:
        if method == "get":
            responses = assoc.send_c_get(identifier, model)
        else:
            responses = assoc.send_c_move(identifier, dicom.config.ae_title, model)
        for status, _ in responses:
            if status is not None:
                last = status
    finally:
        assoc.release()
        if server is not None:
            listen.stop(server)
    if last is None:
        raise PullError(f"{peer.ae_title} sent no final response (association lost)")
    code = int(last.Status)
    if code not in (0x0000, 0xB000):
        raise PullError(f"{peer.ae_title} answered status 0x{code:04X}")
    completed = int(last.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
    warning = int(last.get("NumberOfWarningSuboperations", 0) or 0)
    rid = sync_study(services, dicom.index, study_uid) if completed + warning else None
    return Pulled(completed, failed, warning, rid)


def _receiver(services: Services) -> listen.NoDelayServer | None:
    """Our SCP for the C-MOVE's sub-operations, unless one already listens on our port
    (`dicom listen` or `serve --dicom`: it then stores them)."""
    try:
        return listen.start(services)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.info("port in use: the running DICOM listener receives the C-MOVE")
            return None
        raise
