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
    """Every string value outside the narrative and meta but for _SKIPPED, normalised (in one
    pass: this runs for every resource written)."""
    out: list[str] = []
    _collect(
        {k: v for k, v in resource.items() if k not in ("text", "meta", "resourceType", "id")},
        out,
    )
    return normalize_string("\n".join(out))


#: keys whose strings are not text a user would search for: references, code systems, URLs,
#: and `data` (Attachment.data and Signature.data are base64, SampledData.data numbers; in
#: Synthea's notes and reports they were 30% of the text indexed)
_SKIPPED = frozenset({"reference", "system", "url", "data"})


def _collect(node: dict[str, Any], out: list[str]) -> None:
    """The strings of an object in document order; a string is taken where it is met, not
    by a call of its own (most leaves are strings: this halves the cost of the walk)."""
    for key, value in node.items():
        if key in _SKIPPED or key[0] == "_":
            continue
        kind = type(value)
        if kind is str:
            out.append(value)
        elif kind is dict:
            _collect(value, out)
        elif kind is list:
            _items(value, out)


def _items(values: list[Any], out: list[str]) -> None:
    for value in values:
        kind = type(value)
        if kind is str:
            out.append(value)
        elif kind is dict:
            _collect(value, out)
        elif kind is list:
            _items(value, out)
