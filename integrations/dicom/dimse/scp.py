"""The SCP's services (PS3.4): Verification (C-ECHO), Storage (C-STORE: every storage SOP class
and transfer syntax, kept byte for byte), and Query/Retrieve over the store (C-FIND, C-MOVE,
C-GET; Patient Root and Study Root). Handlers answer with the standard's status codes and log a
line for every refusal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, evt

from fhir_server.context import Principal, RequestContext

from .. import audit, results
from ..dataset import BadInstance
from ..matching import BadMatch, match
from ..service import Dicom
from ..storage.query import Match, compile_query
from ..sync import origin
from . import part10
from .network import NoDelayAE

log = logging.getLogger("integrations.dicom")

#: SOP classes (PS3.4 A.4, C.6.1.3, C.6.2.3): pynetdicom names them, but untyped
Verification = "1.2.840.10008.1.1"
PatientRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.1.1"
PatientRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.1.2"
PatientRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.1.3"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"

#: C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
#: C-FIND/C-MOVE/C-GET statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
PENDING = 0xFF00
CANCEL = 0xFE00

_FIND = {
    str(PatientRootQueryRetrieveInformationModelFind): ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    str(StudyRootQueryRetrieveInformationModelFind): ("STUDY", "SERIES", "IMAGE"),
}
_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
)


def application_entity(dicom: Dicom) -> NoDelayAE:
    """Our AE: its title, the calling AE titles it accepts, its association limit and timeouts,
    and the presentation contexts of every service (storage with any transfer syntax, and the
    SCP role for C-GET's C-STORE sub-operations)."""
    config = dicom.config
    ae = NoDelayAE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.require_calling_aet = list(config.allowed)
    # a peer that stops sending mid-dataset is dropped after this, nothing stored
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs per instance
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES,
                                 scu_role=True, scp_role=True)  # fmt: skip
    for model in (*_FIND, *_RETRIEVE):
        ae.add_supported_context(model)
    return ae


def handlers(dicom: Dicom) -> list[Any]:
    return [
        (evt.EVT_C_ECHO, _echo),
        (evt.EVT_C_STORE, store, [dicom]),
        (evt.EVT_C_FIND, find, [dicom]),
        (evt.EVT_C_MOVE, move, [dicom]),
        (evt.EVT_C_GET, get, [dicom]),
        (evt.EVT_REJECTED, _rejected),
        (evt.EVT_ABORTED, _aborted),
    ]


def _echo(event: Any) -> int:
    return SUCCESS


def _rejected(event: Any) -> None:
    requestor = event.assoc.requestor
    log.warning("association from %s (%s:%s) rejected", requestor.ae_title,
                requestor.address, requestor.port)  # fmt: skip


def _aborted(event: Any) -> None:
    requestor = event.assoc.requestor
    log.warning("association from %s (%s) aborted: anything it sent half is not stored",
                requestor.ae_title, requestor.address)  # fmt: skip


def store(event: Any, dicom: Dicom) -> int:
    """C-STORE: the dataset as received, with the File Meta Information of its presentation
    context (PS3.10 §7.1), kept unchanged; success only once its index row is committed."""
    try:
        dicom.store.put(part10.received(event))
    except BadInstance as exc:
        log.warning("C-STORE from %s refused: %s", event.assoc.requestor.ae_title, exc)
        return DATASET_DOES_NOT_MATCH if exc.tag is not None else CANNOT_UNDERSTAND
    except OSError:
        log.exception("C-STORE could not be stored")
        return OUT_OF_RESOURCES
    dicom.syncer.changed()
    return SUCCESS


def _audit(event: Any, dicom: Dicom, service: str, interaction: str, studies: Any) -> None:
    """Tell the audit trail what a C-FIND, C-MOVE or C-GET answered, as DICOMweb's reads
    are told (audit.py): the calling AE title is the client, its address the network
    access point."""
    requestor = event.assoc.requestor
    ctx = RequestContext(
        base_url=origin(dicom.services.settings) + "/fhir",
        principal=Principal(client_id=f"dicom:{str(requestor.ae_title).strip()}"),
        client_address=requestor.address,
    )
    audit.accessed(dicom.services, ctx, dicom.index, service, f"/dicom/{service}", "",
                   interaction, studies)  # fmt: skip


def _matches(identifier: Dataset, level: str) -> list[Match]:
    out = []
    for element in identifier:
        if element.tag in (0x00080052, 0x00080005) or element.VR == "SQ":
            continue
        value = element.value
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        found = match(element.tag, text, level)
        if found is not None:
            out.append(found)
    return out


def _level(event: Any, allowed: tuple[str, ...]) -> tuple[Dataset, str]:
    identifier = event.identifier
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in allowed:
        raise BadMatch(0x00080052, f"'{level}' is not a level of this information model")
    return identifier, level


def find(event: Any, dicom: Dicom) -> Iterator[tuple[int, Dataset | None]]:
    """C-FIND: every matching key of the identifier matched (PS3.4 C.2.2.2); each match
    returned with the identifier's return keys filled in."""
    model = str(event.request.AffectedSOPClassUID)
    try:
        identifier, level = _level(event, _FIND.get(model, ()))
        rows = dicom.index.find(compile_query(level, _matches(identifier, level)))
    except (BadMatch, ValueError) as exc:
        log.warning("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
        yield IDENTIFIER_DOES_NOT_MATCH, None
        return
    base = ""
    if level == "PATIENT":
        found = results.patients(rows)
    elif level == "STUDY":
        found = results.studies(dicom.index, rows, None, base)
    elif level == "SERIES":
        found = results.series(dicom.index, rows, None, base, False)
    else:
        found = results.instances(rows, None, base, None)
    at = {"PATIENT": None, "STUDY": 0, "SERIES": 1, "IMAGE": 2}[level]
    _audit(event, dicom, "C-FIND", "search-type", [r[at] for r in rows] if at is not None else [])
    keys = [int(e.tag) for e in identifier]
    for item in found:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, _answer(item, keys, level, dicom.config.ae_title)


def _answer(item: dict[str, Any], keys: list[int], level: str, ae_title: str) -> Dataset:
    """The response identifier: the request's keys, with our values where we have them."""
    item.pop("00081190", None)
    full = Dataset.from_json(item)
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    for tag in keys:
        if tag in (0x00080005,):
            continue
        if tag in full:
            out[tag] = full[tag]
        elif tag != 0x00080052:
            out.add_new(tag, _vr(tag), None)
    out.QueryRetrieveLevel = level
    out.RetrieveAETitle = ae_title
    return out


def _vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _to_retrieve(event: Any, dicom: Dicom) -> list[dict[str, Any]]:
    """The instances a C-MOVE or C-GET identifier names (its unique keys, lists allowed)."""
    identifier, _ = _level(event, ("PATIENT", "STUDY", "SERIES", "IMAGE"))
    matches = _matches(identifier, "IMAGE")
    if not matches:
        raise BadMatch(0x0020000D, "a retrieve names its patients, studies, series or instances")
    rows = dicom.index.find(compile_query("IMAGE", matches))
    return [{"uid": r[0], "study_uid": r[2]} for r in rows]


def _paths(dicom: Dicom, found: list[dict[str, Any]]) -> list[tuple[Path, str, str]]:
    """(file, SOP class, transfer syntax) of each instance."""
    out = []
    for item in found:
        row = dicom.index.instance(item["uid"])
        if row is not None:
            out.append((dicom.store.files.path(row["path"]), row["sop_class"],
                        row["transfer_syntax"]))  # fmt: skip
    return out


def move(event: Any, dicom: Dicom) -> Iterator[Any]:
    """C-MOVE: to a destination configured in `dicom_move_destinations` only (0xA801
    otherwise), over a new association proposing the instances' SOP classes."""
    peer = dicom.config.destinations.get(str(event.move_destination).strip())
    if peer is None:
        log.warning("C-MOVE from %s to unknown destination %s refused",
                    event.assoc.requestor.ae_title, event.move_destination)  # fmt: skip
        yield None, None
        return
    try:
        found = _to_retrieve(event, dicom)
        files = _paths(dicom, found)
    except (BadMatch, ValueError) as exc:
        log.warning("C-MOVE from %s refused: %s", event.assoc.requestor.ae_title, exc)
        yield peer.host, peer.port
        yield IDENTIFIER_DOES_NOT_MATCH, None
        return
    _audit(event, dicom, "C-MOVE", "read", {f["study_uid"] for f in found})
    yield peer.host, peer.port, {"contexts": _contexts(files)}
    yield len(files)
    yield from _sub_operations(event, files)


def get(event: Any, dicom: Dicom) -> Iterator[Any]:
    """C-GET: the instances over the same association (the requestor took the SCP role for
    their storage SOP classes)."""
    try:
        found = _to_retrieve(event, dicom)
        files = _paths(dicom, found)
    except (BadMatch, ValueError) as exc:
        log.warning("C-GET from %s refused: %s", event.assoc.requestor.ae_title, exc)
        yield 0
        return
    _audit(event, dicom, "C-GET", "read", {f["study_uid"] for f in found})
    yield len(files)
    yield from _sub_operations(event, files)


def _sub_operations(event: Any, files: list[tuple[Path, str, str]]) -> Iterator[Any]:
    for path, _, _ in files:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, dcmread(path)  # pynetdicom sends it in the negotiated syntax


def _contexts(files: list[tuple[Path, str, str]]) -> list[Any]:
    """At most 128 presentation contexts (PS3.8 §9.3.2.2): per SOP class, the stored syntaxes
    plus the two uncompressed ones."""
    syntaxes: dict[str, set[str]] = {}
    for _, sop_class, syntax in files:
        syntaxes.setdefault(sop_class, set()).add(syntax)
    out = []
    for sop_class, stored in sorted(syntaxes.items())[:128]:
        wanted = sorted(stored) + [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)]
        out.append(build_context(sop_class, list(dict.fromkeys(wanted))))
    return out
