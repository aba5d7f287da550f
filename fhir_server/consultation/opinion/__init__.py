"""Composition/{id}/$consultation-opinion: the printable consultation opinion (会诊意见单),
gathered from the opinion Composition (gather.py), as HTML (html.py) or PDF (pdf.py)."""

from __future__ import annotations

from ...errors import error
from ...operations.registry import Call, Operations, Outcome
from ..codes import OPDEF
from .gather import build
from .html import render_html
from .pdf import render_pdf

OPERATIONS = Operations()


@OPERATIONS.operation("$consultation-opinion", "instance", types=("Composition",),
                      methods=("GET", "POST"),
                      definition=f"{OPDEF}Composition-consultation-opinion")  # fmt: skip
def consultation_opinion(call: Call) -> Outcome:
    """Render one opinion Composition; `format` = html (default) or pdf."""
    fmt = str(call.value("format") or "html").lower()
    if fmt not in ("html", "pdf", "text/html", "application/pdf"):
        raise error(400, "invalid", f"format must be 'html' or 'pdf', got '{fmt}'", "format")
    assert call.rid is not None
    opinion = build(call.services.store.reader(), call.rid)
    if fmt.endswith("pdf"):
        return Outcome(content=render_pdf(opinion), media_type="application/pdf")
    return Outcome(content=render_html(opinion).encode(), media_type="text/html; charset=utf-8")
