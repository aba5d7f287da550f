"""The slip as a self-contained, print-ready HTML page (inline CSS and SVG QR code)."""

from __future__ import annotations

import html

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


def qr_svg(payload: str) -> str:
    """An inline SVG QR code (segno, error correction M)."""
    qr = segno.make(payload, error="m", micro=False)
    svg = qr.svg_inline(scale=3, border=2, omitsize=False)
    return str(svg)


def render_html(slip: Slip) -> str:
    """A self-contained, print-ready A4 page (inline CSS and SVG, no external assets)."""
    e = html.escape

    def grid(rows: list[tuple[str, str]]) -> str:
        cells = "".join(
            f'<div class="f"><span class="k">{e(k)}：</span>{e(v) or "&#160;"}</div>'
            for k, v in rows
        )
        return f'<div class="grid">{cells}</div>'

    meta = _meta_rows(slip)
    sections = [(_impression_title(slip), [slip.impression] if slip.impression else [])]
    sections += [(title, slip.sections.get(code, [])) for code, title in SECTIONS]
    body = "".join(
        f"<section><h3>{e(title)}</h3>"
        + ("".join(f"<p>{e(t)}</p>" for t in texts) if texts else '<p class="none">无</p>')
        + "</section>"
        for title, texts in sections
    )
    stub = grid(_stub_rows(slip))
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>{e(slip.title)} {e(slip.number)}</title>
<style>
@page {{ size: A4; margin: 15mm; }}
body {{ font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", "PingFang SC",
  "Microsoft YaHei", sans-serif; font-size: 11pt; color: #000; max-width: 180mm; margin: auto; }}
h1 {{ text-align: center; font-size: 18pt; margin: 4mm 0 1mm; }}
h2 {{ text-align: center; font-size: 13pt; margin: 0 0 3mm; font-weight: normal; }}
h3 {{ font-size: 11pt; margin: 3mm 0 1mm; border-bottom: 1px solid #999; }}
.stub {{ border: 1px dashed #666; padding: 2mm 3mm; margin-bottom: 3mm; }}
.cut {{ text-align: center; color: #666; font-size: 9pt; margin-bottom: 3mm; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 1mm 4mm; }}
.k {{ color: #333; }}
.head {{ display: flex; justify-content: space-between; align-items: flex-start; }}
.qr {{ text-align: center; font-size: 8pt; }}
p {{ margin: 0.5mm 0; white-space: pre-wrap; }} .none {{ color: #777; }}
.sign {{ margin-top: 8mm; display: grid; grid-template-columns: 1fr 1fr 1fr; }}
</style></head>
<body class="referral-slip direction-{e(slip.direction)}">
<div class="stub"><strong>存根</strong>{stub}</div>
<div class="cut">- - - - - - - - - - - - 沿此线剪开 - - - - - - - - - - - -</div>
<div class="head">
<div><h1>{e(slip.title)}</h1><h2>{e(slip.subtitle)}</h2>{grid(meta)}</div>
<div class="qr" data-qr="{e(slip.qr_payload)}">{qr_svg(slip.qr_payload)}<br>
报到扫码 {e(slip.qr_payload)}</div>
</div>
<section><h3>患者信息</h3>{grid(_rows(slip))}</section>
<section><h3>转出 / 转入</h3>{grid(_parties(slip))}</section>
{body}
<div class="sign"><div>转诊医生（签字）：</div><div>联系电话：{e(slip.source.phone)}</div>
<div>日期：{e(slip.authored)}</div></div>
</body></html>
"""

