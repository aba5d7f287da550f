"""Text for `_text` (the narrative) and `_content` (all of the resource's text), indexed in an
SQLite FTS5 trigram table so that substrings, Chinese included, are found as users type them."""

from __future__ import annotations

import html
import re
from typing import Any

from .values import normalize_string

#: bounds on one `_text`/`_content` parameter (each value is a substring scan of the text)
MAX_TERMS = 10
MAX_TERM_LENGTH = 100
_TAG = re.compile(r"<[^>]+>")


def narrative_text(resource: dict[str, Any]) -> str:
    """The XHTML of Resource.text.div as plain, normalised text."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return ""
    # html.unescape never fails: a reference to no character becomes U+FFFD (HTML5 rules)
    return normalize_string(html.unescape(_TAG.sub(" ", div)))


def content_text(resource: dict[str, Any]) -> str:
    """Every string value outside the narrative and meta, normalised (in one pass: this runs
    for every resource written)."""
    out: list[str] = []
    _collect(resource, out, top=True)
    return normalize_string("\n".join(out))


def _collect(node: Any, out: list[str], top: bool = False) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if top and key in ("text", "meta", "resourceType", "id"):
                continue
            if key in ("reference", "system", "url") or key.startswith("_"):
                continue
            _collect(value, out)
    elif isinstance(node, list):
        for value in node:
            _collect(value, out)
    elif isinstance(node, str):
        out.append(node)
