"""Storing one instance, the one path for C-STORE and STOW-RS: the Part-10 bytes unchanged into
the file tree, then its index row committed, and only then success; ImagingStudy follows
(sync.py)."""

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
from .storage.index import Index

log = logging.getLogger("integrations.dicom")


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
        copy. The file is complete before the index names it, and removed again when the
        index refuses it, so no reader ever finds half an instance."""
        raw = scan(data, LAST)
        row = None
        if raw is not None and header is None:  # C-STORE: pydicom only for a study's first
            study, series, sop = raw_uids(raw)
            relative = self.files.relative(study, series, sop)
            row = fast_row(raw, relative, len(data), self.levels)
        if row is None:
            ds = header if header is not None else read_header(data)
            study, series, sop = uids(ds)
            relative = self.files.relative(study, series, sop)
            # BadInstance before anything is written
            row = index_row(ds, relative, len(data), self.levels, raw)
        had = self.index.instance(sop)
        self.files.write(relative, data)
        try:
            replaced = self.index.put(row, datetime.now(UTC).isoformat(timespec="milliseconds"))
        except BaseException:
            if had is None or had["path"] != relative:
                self.files.remove(relative)
            raise
        if replaced is not None:
            self.files.remove(replaced)
        return Stored(study, series, sop, row.instance["sop_class"])


__all__ = ["BadInstance", "InstanceStore", "Stored"]
