"""Text for `_text` (the narrative) and `_content` (all of the resource's text), indexed in an
SQLite FTS5 trigram table so that substrings, Chinese included, are found as users type them."""

from __future__ import annotations

import re
from typing import Any

from .values import normalize_string

#: bounds on one `_text`/`_content` parameter (each value is a substring scan of the text)
MAX_TERMS = 10
MAX_TERM_LENGTH = 100
_TAG = re.compile(r"<[^>]+>")
_ENTITY = re.compile(r"&(nbsp|amp|lt|gt|quot|#\d+);")
_ENTITIES = {"nbsp": " ", "amp": "&", "lt": "<", "gt": ">", "quot": '"'}


def narrative_text(resource: dict[str, Any]) -> str:
    """The XHTML of Resource.text.div as plain, normalised text."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return ""
    plain = _ENTITY.sub(_entity, _TAG.sub(" ", div))
    return normalize_string(plain)


def _entity(m: re.Match[str]) -> str:
    name = m.group(1)
    return chr(int(name[1:])) if name.startswith("#") else _ENTITIES[name]


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
