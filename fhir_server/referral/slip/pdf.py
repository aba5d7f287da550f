"""The slip as an A4 PDF (reportlab) with the CJK font embedded and the QR code drawn as
vector squares, so it prints the same on machines without Chinese fonts."""

from __future__ import annotations

import html
import io
from functools import cache
from pathlib import Path
from typing import Any

import segno

from .gather import (
    SECTIONS,
    Slip,
    _impression_title,
    _meta_rows,
    _parties,
    _rows,
    _stub_rows,
)

FONT_DIR = Path(__file__).resolve().parent.parent / "fonts"


FONT_FILE = FONT_DIR / "wqy-microhei.ttc"


FONT_NAME = "WenQuanYiMicroHei"



@cache
def register_font() -> str:
    """Register the vendored CJK TrueType font with reportlab once; its name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont(FONT_NAME, str(FONT_FILE), subfontIndex=0))
    return FONT_NAME


def render_pdf(slip: Slip) -> bytes:
    """An A4 PDF with the font embedded (subset) and the QR code drawn as vector squares."""
    from reportlab.graphics.shapes import Drawing, Rect
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = register_font()
    e = html.escape
    base = ParagraphStyle("base", fontName=font, fontSize=10, leading=14, wordWrap="CJK")
    small = ParagraphStyle("small", parent=base, fontSize=8, leading=10)
    title = ParagraphStyle("title", parent=base, fontSize=17, leading=22, alignment=1)
    subtitle = ParagraphStyle("subtitle", parent=base, fontSize=12, leading=16, alignment=1)
    heading = ParagraphStyle(
        "heading", parent=base, fontSize=11, leading=15, spaceBefore=5, textColor=colors.black
    )

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(e(text).replace("\n", "<br/>"), style)

    def grid(rows: list[tuple[str, str]], columns: int = 3) -> Table:
        cells = [p(f"{k}：{v}") for k, v in rows]
        while len(cells) % columns:
            cells.append(p(""))
        data = [cells[i : i + columns] for i in range(0, len(cells), columns)]
        table = Table(data, colWidths=[180 * mm / columns] * columns)
        table.setStyle(
            TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 2)])
        )
        return table

    qr = segno.make(slip.qr_payload, error="m", micro=False)
    matrix = [list(row) for row in qr.matrix]
    module = 1.0 * mm
    size = (len(matrix) + 4) * module
    drawing = Drawing(size, size)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                drawing.add(
                    Rect(
                        (x + 2) * module,
                        size - (y + 3) * module,
                        module,
                        module,
                        fillColor=colors.black,
                        strokeColor=None,
                    )
                )
    meta = _meta_rows(slip)
    head = Table(
        [
            [
                [p(slip.title, title), p(slip.subtitle, subtitle), grid(meta, 2)],
                [drawing, p(f"报到扫码 {slip.qr_payload}", small)],
            ]
        ],
        colWidths=[180 * mm - size - 4 * mm, size + 4 * mm],
    )
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    stub = Table(
        [
            [
                [
                    p("存根", heading),
                    grid(_stub_rows(slip)),
                ]
            ]
        ],
        colWidths=[180 * mm],
    )
    stub.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.5, colors.grey)]))
    story: list[Any] = [
        stub,
        p("- - - - - - - - 沿此线剪开 - - - - - - - -", small),
        Spacer(1, 3 * mm),
        head,
        p("患者信息", heading),
        grid(_rows(slip)),
        p("转出 / 转入", heading),
        grid(_parties(slip)),
    ]
    sections = [(_impression_title(slip), [slip.impression] if slip.impression else [])]
    sections += [(t, slip.sections.get(code, [])) for code, t in SECTIONS]
    for section_title, texts in sections:
        story.append(p(section_title, heading))
        # one Paragraph per line: reportlab lays out <br/> breaks in quadratic time
        story.extend([p(line) for t in texts for line in t.split("\n")] or [p("无")])
    story += [
        Spacer(1, 8 * mm),
        grid([("转诊医生（签字）", ""), ("联系电话", slip.source.phone), ("日期", slip.authored)]),
    ]
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=f"{slip.title} {slip.number}",
        author="fhir-server",
        subject=slip.qr_payload,
    )
    doc.build(story)
    return out.getvalue()

