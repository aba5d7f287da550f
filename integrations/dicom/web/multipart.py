"""multipart/related (RFC 2387) as DICOMweb uses it (PS3.18 §8.6.1.2): writing the parts of a
WADO-RS response, reading the parts of a STOW-RS request."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from email.message import Message


def boundary() -> str:
    return uuid.uuid4().hex


def content_type(part_type: str, bound: str, transfer_syntax: str | None = None) -> str:
    """The response's Content-Type: the part type quoted in `type` (RFC 2387 §3.1)."""
    value = f'multipart/related; type="{part_type}"; boundary={bound}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def parts(items: Iterable[tuple[str, bytes]], bound: str) -> Iterator[bytes]:
    """The body, part by part: (Content-Type of the part, its bytes)."""
    for ctype, data in items:
        yield f"--{bound}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    yield f"--{bound}--\r\n".encode()


class BadMultipart(ValueError):
    """A request body that is not the multipart/related it says it is."""


def parameters(header: str) -> tuple[str, dict[str, str]]:
    """A Content-Type or Accept item as (media type, parameters), lower-case names."""
    message = Message()
    message["content-type"] = header
    params = {k.lower(): v for k, v in (message.get_params() or [])[1:]}
    return message.get_content_type(), params


def split(body: bytes, header: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers with lower-case names, content)."""
    media, params = parameters(header)
    bound = params.get("boundary")
    if not media.startswith("multipart/") or not bound:
        raise BadMultipart("Content-Type must be multipart/related with a boundary")
    delimiter = b"--" + bound.encode("latin-1")
    pieces = body.split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise BadMultipart("the multipart body has no closing boundary (truncated?)")
    out = []
    for piece in pieces[1:-1]:
        piece = piece[2:] if piece.startswith(b"\r\n") else piece.lstrip(b"\n")
        head, sep, content = piece.partition(b"\r\n\r\n")
        if not sep:
            raise BadMultipart("a part has no header section")
        headers = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        out.append((headers, content[:-2] if content.endswith(b"\r\n") else content))
    return out

