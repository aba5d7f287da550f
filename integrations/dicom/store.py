"""Storing one instance, the one path for C-STORE and STOW-RS: the Part-10 bytes unchanged into
the file tree, then its index row committed, and only then success; ImagingStudy follows
(sync.py; for STOW-RS it comes first: `prepare`, the ImagingStudy written as the caller, then
`keep`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom import Dataset

from .dataset import (
    LAST,
    BadInstance,
    Levels,
    fast_row,
    index_row,
    raw_uids,
    read_header,
    uids,
)
from .header import scan
from .storage.files import Files
from .storage.index import Index, InstanceRow

log = logging.getLogger("integrations.dicom")


@dataclass(frozen=True)
class Pending:
    """An instance read and checked, not yet kept: its index row and its bytes."""

    row: InstanceRow
    data: bytes


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sop: str
    sop_class: str


class InstanceStore:
    def __init__(self, files: Files, index: Index) -> None:
        self.files, self.index = files, index
        self.levels = Levels()

    def put(self, data: bytes, header: Dataset | None = None) -> Stored:
        """Keep `data` (a Part-10 instance) and index it; BadInstance (nothing stored) when it
        is not an instance the store can keep. A re-sent SOP Instance UID replaces the earlier
        copy."""
        return self.keep(self.prepare(data, header))

    def prepare(self, data: bytes, header: Dataset | None = None) -> Pending:
        """The index row `data` would get; BadInstance before anything is written."""
        raw = scan(data, LAST)
        row = None
        if raw is not None and header is None:  # C-STORE: pydicom only for a study's first
            study, series, sop = raw_uids(raw)
            row = fast_row(raw, self.files.relative(study, series, sop), len(data), self.levels)
        if row is None:
            ds = header if header is not None else read_header(data)
            study, series, sop = uids(ds)
            relative = self.files.relative(study, series, sop)
            row = index_row(ds, relative, len(data), self.levels, raw)
        return Pending(row, data)

    def keep(self, pending: Pending) -> Stored:
        """Write a prepared instance: the file is complete before the index names it, and
        removed again when the index refuses it, so no reader ever finds half an instance."""
        row, it = pending.row, pending.row.instance
        relative, sop = it["path"], it["uid"]
        self.files.write(relative, pending.data)
        try:
            replaced = self.index.put(row, datetime.now(UTC).isoformat(timespec="milliseconds"))
        except BaseException:
            had = self.index.instance(sop)  # as before: the transaction was rolled back
            if had is None or had["path"] != relative:
                self.files.remove(relative)
            raise
        if replaced is not None:
            self.files.remove(replaced)
        return Stored(it["study_uid"], it["series_uid"], sop, it["sop_class"])


__all__ = ["BadInstance", "InstanceStore", "Pending", "Stored"]
