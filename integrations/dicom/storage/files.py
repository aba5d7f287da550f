"""Part-10 files kept byte for byte as received, at `<root>/<study>/<series>/<sop>.dcm` (the
UIDs are checked to be digits and dots before they become a path)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def relative(self, study: str, series: str, sop: str) -> str:
        return f"{study}/{series}/{sop}.dcm"

    def write(self, relative: str, data: bytes) -> None:
        """Write whole or not at all: to a temporary name, then renamed over the target, so a
        reader (WADO-RS) never sees half a file and a failed write leaves nothing."""
        target = self.root / relative
        temporary = target.with_name(f".{uuid.uuid4().hex}.part")
        try:
            try:
                out = open(temporary, "wb")  # noqa: SIM115 - closed below
            except FileNotFoundError:  # a new series: its directory first (not every time)
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(temporary, "wb")  # noqa: SIM115
            with out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def path(self, relative: str) -> Path:
        return self.root / relative

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)
