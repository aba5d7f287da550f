"""The opinion as a self-contained, print-ready HTML page."""

from __future__ import annotations

import html

from .gather import Opinion


def render_html(opinion: Opinion) -> str:
    e = html.escape

    def grid(rows: list[tuple[str, str]]) -> str:
        return "".join(f'<div class="f"><b>{e(k)}：</b>{e(v) or "&#160;"}</div>' for k, v in rows)

    sections = "".join(
        f"<section><h3>{e(t)}</h3>"
        + "".join(f"<p>{e(line)}</p>" for line in body.split("\n"))
        + "</section>"
        for t, body in opinion.sections
    )
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{e(opinion.title)}</title>
<style>@page {{ size: A4; margin: 15mm; }}
body {{ font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif; max-width: 180mm;
  margin: auto; }} h1 {{ text-align: center; }} .grid {{ display: grid;
  grid-template-columns: 1fr 1fr; gap: 1mm 4mm; }} h3 {{ border-bottom: 1px solid #999; }}
</style></head><body><h1>{e(opinion.title)}</h1>
<p>{e(opinion.status)} · {e(opinion.date)}</p>
<div class="grid">{grid(opinion.patient)}</div><div class="grid">{grid(opinion.parties)}</div>
{sections}<p>专家签名：{e(opinion.signed) or "（未签署）"}</p></body></html>"""
