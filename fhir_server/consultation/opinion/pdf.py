"""The opinion as an A4 PDF with the referral slip's CJK font embedded (referral/fonts/)."""

from __future__ import annotations

import html
import io
from typing import Any

from ...referral.slip.pdf import register_font
from .gather import Opinion


def render_pdf(opinion: Opinion) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    font = register_font()
    base = ParagraphStyle("base", fontName=font, fontSize=10, leading=14, wordWrap="CJK")
    title = ParagraphStyle("title", parent=base, fontSize=17, leading=22, alignment=1)
    heading = ParagraphStyle("heading", parent=base, fontSize=12, leading=16, spaceBefore=6)

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(html.escape(text), style)

    story: list[Any] = [p(opinion.title, title), p(f"{opinion.status}  {opinion.date}")]
    story += [p(f"{k}：{v}") for k, v in opinion.patient + opinion.parties]
    for section_title, body in opinion.sections:
        story.append(p(section_title, heading))
        story.extend(p(line) for line in body.split("\n"))  # one Paragraph per line: fast
    story += [Spacer(1, 8 * mm), p(f"专家签名：{opinion.signed or '（未签署）'}")]
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm,
                      topMargin=12 * mm, bottomMargin=12 * mm, title=opinion.title,
                      author="fhir-server").build(story)  # fmt: skip
    return out.getvalue()
