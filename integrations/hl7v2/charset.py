"""The character set of a message: MSH-18 (HL7 table 0211, plus the non-standard names Chinese
HIS send), else the configured default, else UTF-8, else GB18030. The whole message is decoded
before it is split: a GBK trail byte can be `|` (0x7C), `^` (0x5E), `~` (0x7E) or `\\` (0x5C),
so splitting bytes would cut names such as 亅 or 乗 in two (design note integrations.md §1.8)."""

from __future__ import annotations

from dataclasses import dataclass

#: MSH-18 values (upper case, spaces and hyphens as sent) -> Python codec. HL7 v2.5 table 0211,
#: and the names HIS vendors use instead; GBK and GB2312 are subsets of GB18030, so one codec
#: decodes all three.
CODECS = {
    "ASCII": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GB 18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "GB 2312": "gb18030",
    "CP936": "gb18030",
    "BIG-5": "big5",
    "BIG5": "big5",
    "KS X 1001": "euc_kr",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}
#: table 0211 names that are real but cannot travel over MLLP (their bytes include the framing
#: characters; HAPI's MinLowerLayerProtocol says the same)
UNFRAMEABLE = ("UNICODE UTF-16", "UNICODE UTF-32", "UTF-16", "UTF-32")


class CharsetError(ValueError):
    """The message cannot be decoded as it says (or as we guessed); `table` is True when MSH-18
    names no charset we know (HL7 error 103, table value not found), else a data error (102)."""

    def __init__(self, text: str, table: bool = False) -> None:
        super().__init__(text)
        self.table = table


@dataclass(frozen=True)
class Decoded:
    text: str
    #: the Python codec used
    codec: str
    #: MSH-18 as sent ('' when empty): the ACK repeats it
    declared: str


def declared_charset(raw: bytes) -> str:
    """MSH-18 (first repetition, first component) read from the bytes of the MSH segment. The
    fields before it are ASCII in practice (application and facility codes); should a name in
    them be GBK, a trail byte could shift the count: the decode that follows then fails or the
    default applies, never a silent misreading of the body."""
    end = len(raw)
    for stop in (b"\r", b"\n"):
        at = raw.find(stop)
        if 0 <= at < end:
            end = at
    head = raw[:end].decode("latin-1")
    if not head.startswith("MSH") or len(head) < 8:
        return ""
    fields = head.split(head[3])
    value = fields[17] if len(fields) > 17 else ""  # fields[0] is "MSH", fields[1] is MSH-2
    for sep in (head[5:6] or "~", head[4:5] or "^"):  # repetition, then component separator
        value = value.split(sep)[0]
    return value.strip()


def codec_for(name: str) -> str | None:
    """The Python codec of an MSH-18 value, None when we know no such charset."""
    key = " ".join(name.upper().split())
    return CODECS.get(key)


def decode(raw: bytes, default: str = "") -> Decoded:
    """The message as text. MSH-18 wins when it names a charset (its bytes must decode in it);
    without MSH-18, `default` (a charset name, the setting hl7_charset), else UTF-8, else
    GB18030 (GB18030 read as UTF-8 fails loudly, while UTF-8 read as GB18030 would turn 张三
    into 寮犱笁: so UTF-8 is tried first)."""
    declared = declared_charset(raw)
    if declared:
        if " ".join(declared.upper().split()) in UNFRAMEABLE:
            raise CharsetError(f"MSH-18 '{declared}' cannot be carried over MLLP", table=True)
        codec = codec_for(declared)
        if codec is None:
            raise CharsetError(f"MSH-18 '{declared}' names no character set we know", table=True)
        return Decoded(_strict(raw, codec, f"MSH-18 '{declared}'"), codec, declared)
    if default:
        codec = codec_for(default)
        if codec is None:
            raise CharsetError(f"the setting hl7_charset '{default}' names no known charset")
        return Decoded(_strict(raw, codec, f"the default charset '{default}'"), codec, "")
    try:
        return Decoded(raw.decode("utf-8"), "utf-8", "")
    except UnicodeDecodeError:
        pass
    return Decoded(_strict(raw, "gb18030", "UTF-8 nor GB18030 (MSH-18 is empty)"), "gb18030", "")


def _strict(raw: bytes, codec: str, said: str) -> str:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"byte {exc.start} (0x{raw[exc.start]:02X}) is not text in {said}"
        ) from None


def encode(text: str, codec: str) -> bytes:
    """The ACK in the message's own charset; characters it cannot hold become `?`."""
    return text.encode(codec, errors="replace")
