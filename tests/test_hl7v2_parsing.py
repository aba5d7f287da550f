"""The pure parts of the HL7 v2 integration: MLLP framing, charset detection, the tokenizer and
its escape sequences (HL7 v2.5 ch. 2 §2.7), and the identifier-system rule every integration
shares. Expectations from the standard's text, worked out by hand."""

from __future__ import annotations

import pytest

from fhir_server.referral.codes import SID
from fhir_server.settings import Settings
from integrations.hl7v2 import mllp
from integrations.hl7v2.charset import CharsetError, declared_charset, decode
from integrations.hl7v2.er7 import DEFAULT, Message, ParseError, escape, unescape
from integrations.patients import LOCAL, identifier_system

MSH = "MSH|^~\\&|HIS|HZFIRST|YLFHIR|YLT|20240301||ADT^A01|1|P|2.4|||||CHN|{}\r"


def test_framing_splits_joined_and_split_frames_and_measures_big_ones() -> None:
    framer = mllp.Framer(max_bytes=10)
    # two frames in one read, the second one split over two reads, CR LF between frames
    events = list(framer.feed(b"\x0bMSH|a\x1c\r\n\x0bMSH|"))
    assert events == [mllp.Frame(b"MSH|a")] and framer.partial == b"MSH|"
    assert list(framer.feed(b"b\x1c\r")) == [mllp.Frame(b"MSH|b")]
    # 25 bytes against a limit of 10: measured, refused, its head kept
    assert list(framer.feed(b"\x0b" + b"x" * 25 + b"\x1c\r")) == [mllp.Oversize(b"x" * 25, 25)]
    # a start block inside a frame: the first frame has no end
    assert list(framer.feed(b"\x0bMSH|c\x0bMSH|d\x1c\r")) == [mllp.Cut(b"MSH|c"),
                                                              mllp.Frame(b"MSH|d")]
    # anything but whitespace outside a frame: the framing is lost
    assert list(framer.feed(b"GET /")) == [mllp.Junk(b"GET /")]


def test_a_frame_far_over_the_limit_is_never_held_whole() -> None:
    framer = mllp.Framer(max_bytes=1000)
    list(framer.feed(b"\x0b"))
    for _ in range(100):  # 6.4 MB in 64 kB reads
        assert list(framer.feed(b"y" * 65536)) == []
        assert len(framer.buf) <= mllp.HEAD
    [event] = list(framer.feed(b"\x1c\r"))
    assert isinstance(event, mllp.Oversize) and event.size == 100 * 65536


def test_the_charset_is_read_before_the_message_is_split() -> None:
    text = MSH.format("GB 18030-2000") + "PID|1||1^^^HZ||葉^瑋\r"
    raw = text.encode("gb18030")
    # the bytes hold `~` and `|` inside the name (葉 = C8 7E, 瑋 = AC 7C)
    assert raw.count(b"|") == text.count("|") + 1
    assert declared_charset(raw) == "GB 18030-2000"
    decoded = decode(raw)
    assert (decoded.codec, decoded.text) == ("gb18030", text)
    assert Message.parse(decoded.text).first("PID").value(5, 2) == "瑋"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("declared", "body", "codec"),
    [
        ("UNICODE UTF-8", "张三".encode(), "utf-8"),
        ("GBK", "张三".encode("gbk"), "gb18030"),  # GBK and GB2312: GB18030 decodes both
        ("GB2312", "张三".encode("gb2312"), "gb18030"),
        ("", "张三".encode(), "utf-8"),  # no MSH-18: UTF-8 first...
        ("", "张三".encode("gb18030"), "gb18030"),  # ... which GBK bytes are not
    ],
)
def test_charsets_by_msh18_else_utf8_else_gb18030(declared: str, body: bytes, codec: str) -> None:
    raw = MSH.format(declared).encode() + b"PID|1||1||" + body + b"\r"
    decoded = decode(raw)
    assert decoded.codec == codec and "张三" in decoded.text


def test_a_wrong_or_unknown_charset_is_an_error_not_mojibake() -> None:
    gbk = MSH.format("UNICODE UTF-8").encode() + "张三".encode("gbk")
    with pytest.raises(CharsetError, match="is not text in MSH-18 'UNICODE UTF-8'"):
        decode(gbk)
    with pytest.raises(CharsetError) as unknown:
        decode(MSH.format("KLINGON").encode())
    assert unknown.value.table


def test_escape_sequences() -> None:
    d = DEFAULT
    # \F\ field, \S\ component, \T\ subcomponent, \R\ repetition, \E\ escape (§2.7.1)
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", d) == "a|b^c&d~e\\f"
    # \.br\ a line break (FT formatting, §2.7.6); \H\ \N\ highlighting has no text
    assert unescape(r"一行\.br\二行\H\重点\N\ ", d) == "一行\n二行重点 "
    # \Xhh..\ hexadecimal bytes in the message's charset (§2.7.3): 中 is E4 B8 AD in UTF-8
    assert unescape(r"\XE4B8AD\医", d) == "中医"
    # and D6 D0 in GB18030
    gb = Message.parse(MSH.format("GB 18030-2000") + "NTE|1||\\XD6D0\\\r", "gb18030")
    assert gb.first("NTE").value(3) == "中"  # type: ignore[union-attr]
    assert unescape(r"\Zlocal\ kept", d) == r"\Zlocal\ kept"  # unknown: as written
    assert escape("a|b^c&d~e\\f\ng") == r"a\F\b\S\c\T\d\R\e\E\f\.br\g"


def test_the_tokenizer_numbers_fields_as_the_standard_does() -> None:
    m = Message.parse(MSH.format("") + "PID|1||123^^^HZ&1.2.3&ISO^MR~456||张^三\n")
    msh, pid = m.msh, m.first("PID")
    assert pid is not None
    # MSH-1 is the field separator, MSH-2 the encoding characters, MSH-9.2 the event
    assert (msh.field(1), msh.field(2), msh.value(9, 2), msh.value(12)) == ("|", "^~\\&", "A01",
                                                                           "2.4")
    assert [c[1] for c in pid.composites(3)] == ["123", "456"]  # repetitions of PID-3
    assert pid.composite(3).component(4)[2] == "1.2.3"  # CX.4 (HD).2, a subcomponent
    assert pid.value(5, 2) == "三"
    with pytest.raises(ParseError):
        Message.parse("PID|1\r")


def test_identifier_systems_are_configured_or_derived_per_authority() -> None:
    settings = Settings(identifier_systems="HZFIRST=urn:oid:1.2.156.1, =urn:local:ids")
    # configured (authorities compare without case)
    assert identifier_system(settings, "hzfirst") == "urn:oid:1.2.156.1"
    # an OID (HD.2 with HD.3 ISO) is its own system
    assert identifier_system(settings, "2.16.156.10011.1") == "urn:oid:2.16.156.10011.1"
    # another name: a system of its own, the name percent-encoded
    hospital = "%E5%B8%82%E4%B8%80%E5%8C%BB%E9%99%A2"  # 市一医院 in UTF-8, percent-encoded
    assert identifier_system(settings, "市一医院") == f"{SID}patient-id/{hospital}"
    # no authority: the configured default (`=system`), else LOCAL
    assert identifier_system(settings, None) == "urn:local:ids"
    assert identifier_system(Settings(), "") == LOCAL
    with pytest.raises(ValueError, match="not AUTHORITY=system-uri"):
        identifier_system(Settings(identifier_systems="HZ=not a uri"), "HZ")
