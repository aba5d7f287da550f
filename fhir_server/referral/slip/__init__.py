"""ServiceRequest/{id}/$referral-slip: the printable 双向转诊单 (上转单/下转单), gathered from the
referral's resources (gather.py) and rendered as HTML (html.py) or PDF (pdf.py)."""

from __future__ import annotations

from ...errors import error
from ...operations.registry import Call, Operations, Outcome
from ..codes import OPDEF
from .gather import build
from .html import render_html
from .pdf import render_pdf

OPERATIONS = Operations()


operation = OPERATIONS.operation


@operation(
    "$referral-slip",
    "instance",
    types=("ServiceRequest",),
    methods=("GET", "POST"),
    definition=f"{OPDEF}ServiceRequest-referral-slip",
)
def referral_slip(call: Call) -> Outcome:
    """Render the slip of one ServiceRequest; `format` = html (default) or pdf."""
    fmt = str(call.value("format") or "html").lower()
    if fmt not in ("html", "pdf", "text/html", "application/pdf"):
        raise error(400, "invalid", f"format must be 'html' or 'pdf', got '{fmt}'", "format")
    assert call.rid is not None
    slip = build(call.services, call.services.store.reader(), call.rid)
    if fmt.endswith("pdf"):
        return Outcome(content=render_pdf(slip), media_type="application/pdf")
    return Outcome(content=render_html(slip).encode(), media_type="text/html; charset=utf-8")

