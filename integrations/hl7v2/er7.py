"""A fast tokenizer for HL7 v2 messages in ER7 (pipe-delimited) encoding, over decoded text.

HL7 v2.5 ch. 2 §2.5-2.7: segments end with CR (LF and CRLF are accepted too), MSH-1 is the field
separator and MSH-2 the component, repetition, escape and subcomponent characters (and, from
v2.7, the truncation character). Splitting is lazy and values are unescaped only when read: the
listener reads a handful of MSH fields per message, the mapper what its maps name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ParseError(ValueError):
    """Not an ER7 message: what is wrong (the listener answers AR)."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    #: the Python codec the message was decoded with: \Xhh..\ escapes are bytes in it
    charset: str = "utf-8"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written in messages we build."""
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT = Delimiters()


class Segment:
    """One segment; `field(n)` is SEG-n as the standard numbers it (for MSH, MSH-1 is the field
    separator itself). Fields are returned raw (escaped); use `value` for text."""

    __slots__ = ("name", "fields", "d")

    def __init__(self, text: str, d: Delimiters) -> None:
        parts = text.split(d.field)
        self.name = parts[0]
        self.d = d
        if self.name in ("MSH", "FHS", "BHS"):
            parts.insert(1, d.field)  # MSH-1 is the separator between the name and MSH-2
        self.fields = parts

    def field(self, n: int) -> str:
        """Raw SEG-n ('' when absent)."""
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        """The repetitions of SEG-n, raw, without empty ones."""
        raw = self.field(n)
        if not raw or (n == 2 and self.name == "MSH"):
            return [raw] if raw else []
        return [r for r in raw.split(self.d.repetition) if r]

    def value(self, n: int, component: int = 1, sub: int = 1, rep: int = 0) -> str:
        """SEG-n.component.sub of repetition `rep`, unescaped; '' when absent or `""` (the
        explicit null, HL7 v2.5 §2.5.3: the receiver should delete the value)."""
        raw = self.field(n)
        if not raw:
            return ""
        if self.name == "MSH" and n <= 2:
            return raw
        d = self.d
        if d.repetition in raw:
            reps = raw.split(d.repetition)
            raw = reps[rep] if rep < len(reps) else ""
        elif rep:
            return ""
        return leaf(raw, component, sub, d)

    def composite(self, n: int, rep: int = 0) -> Composite:
        reps = self.reps(n)
        return Composite(reps[rep] if rep < len(reps) else "", self.d)

    def composites(self, n: int) -> list[Composite]:
        return [Composite(r, self.d) for r in self.reps(n)]

    def text(self) -> str:
        """The segment as written (raw)."""
        if self.name in ("MSH", "FHS", "BHS"):
            return self.name + self.d.field + self.d.field.join(self.fields[2:])
        return self.d.field.join(self.fields)

    def __repr__(self) -> str:
        return f"Segment({self.text()!r})"


class Composite:
    """One repetition of a field: components (1-based) and their subcomponents, unescaped on
    read."""

    __slots__ = ("raw", "d", "_parts")

    def __init__(self, raw: str, d: Delimiters) -> None:
        self.raw = raw
        self.d = d
        self._parts: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.raw) and self.raw != '""'

    def part(self, component: int) -> str:
        """Raw component (subcomponents still joined)."""
        if self._parts is None:
            self._parts = self.raw.split(self.d.component)
        parts = self._parts
        return parts[component - 1] if component <= len(parts) else ""

    def __getitem__(self, component: int) -> str:
        """Component `component`, first subcomponent, unescaped."""
        return leaf(self.part(component), 1, 1, self.d)

    def sub(self, component: int, sub: int) -> str:
        return leaf(self.part(component), 1, sub, self.d)

    def component(self, component: int) -> Composite:
        """Component `component` as a composite whose parts are its subcomponents (a datatype
        inside a datatype, e.g. CX.4 HD)."""
        d = self.d
        inner = Delimiters(d.field, d.subcomponent, d.repetition, d.escape, d.subcomponent,
                           d.charset)  # fmt: skip
        return Composite(self.part(component), inner)


def leaf(raw: str, component: int, sub: int, d: Delimiters) -> str:
    if component > 1 or d.component in raw:
        parts = raw.split(d.component)
        raw = parts[component - 1] if component <= len(parts) else ""
    if sub > 1 or d.subcomponent in raw:
        parts = raw.split(d.subcomponent)
        raw = parts[sub - 1] if sub <= len(parts) else ""
    if raw == '""':
        return ""
    return unescape(raw, d) if d.escape in raw else raw


class Message:
    """A decoded message: its segments in order, split at CR, LF or CRLF."""

    __slots__ = ("segments", "d")

    def __init__(self, segments: list[Segment], d: Delimiters) -> None:
        self.segments = segments
        self.d = d

    @classmethod
    def parse(cls, text: str, charset: str = "utf-8") -> Message:
        text = text.strip("\r\n\x00 \t")
        if not text.startswith("MSH") or len(text) < 8:
            raise ParseError("the message does not start with an MSH segment")
        sep = text[3]
        end = text.find(sep, 4)
        encoding = text[4:end] if end > 0 else ""
        if sep.isalnum() or len(encoding) < 4 or len(set(sep + encoding[:4])) != 5:
            raise ParseError("MSH-1/MSH-2 do not hold five distinct delimiter characters")
        d = Delimiters(sep, encoding[0], encoding[1], encoding[2], encoding[3], charset)
        lines = _LINES.split(text)
        segments = [Segment(line, d) for line in lines if line]
        return cls(segments, d)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    def text(self) -> str:
        return "\r".join(s.text() for s in self.segments) + "\r"


_LINES = re.compile(r"\r\n|\r|\n")

# --- escape sequences (HL7 v2.5 ch. 2 §2.7) ---------------------------------------------------

#: formatting commands of FT that mean a line break; the others (.in, .ti, .ce, .fi, .nf, \H\,
#: \N\) change only presentation and are dropped
_LINE_BREAKS = (".br", ".sp")


def unescape(raw: str, d: Delimiters) -> str:
    """\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ as the delimiters they stand for, \\Xhh..\\ as bytes in the
    message's charset, \\.br\\ (and \\.sp\\) as a line break; highlighting and other formatting
    dropped, unknown sequences kept as written."""
    e = d.escape
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        j = raw.find(e, i)
        if j < 0:
            out.append(raw[i:])
            break
        out.append(raw[i:j])
        k = raw.find(e, j + 1)
        if k < 0:  # a lone escape character: kept
            out.append(raw[j:])
            break
        seq = raw[j + 1 : k]
        out.append(_escape_value(seq, d, raw[j : k + 1]))
        i = k + 1
    return "".join(out)


def _escape_value(seq: str, d: Delimiters, written: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape}  # fmt: skip
    if seq in simple:
        return simple[seq]
    head = seq[:1]
    if head == "X" and len(seq) > 1:
        try:
            return bytes.fromhex(seq[1:]).decode(d.charset)
        except (ValueError, LookupError):
            raise ValueError(f"{written} is not hexadecimal text in {d.charset}") from None
    if seq.startswith(_LINE_BREAKS):
        count = seq[3:].strip()
        return "\n" * (int(count) if count.isdigit() and seq.startswith(".sp") else 1)
    if seq in ("H", "N") or seq.startswith((".in", ".ti", ".sk", ".ce", ".fi", ".nf")):
        return ""
    if head in ("C", "M"):  # ISO 2022 character set switches: the text is already decoded
        return ""
    return written


def escape(text: str, d: Delimiters = DEFAULT) -> str:
    """Text made safe for a field (for the ACK's MSA-3 and ERR-8): delimiters as escapes, line
    breaks as \\.br\\."""
    e = d.escape
    out = text.replace(e, f"{e}E{e}")
    for char, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"),
                       (d.repetition, "R")):  # fmt: skip
        out = out.replace(char, f"{e}{code}{e}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
