"""Pinyin readings of Chinese names, indexed with the name so that `name=zhangsan`, `zhang san`
and `zs` find 张三 (a registration desk types pinyin or its initials). A surname is read as a
surname: 单 is shan, 曾 zeng, 解 xie, 仇 qiu, whatever the character's everyday reading.

Pure: readings come from pypinyin's character dictionary (MIT), loaded on first use."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from itertools import islice, product
from typing import Any

#: index rows of pinyin readings live under the parameter's code plus this suffix, so that only
#: the default string match reads them (not :exact, :contains or sorting)
SUFFIX = ":pinyin"
#: a search value that can be pinyin: letters and single spaces (after normalize_string)
ROMANISED = re.compile(r"[a-z]+(?: [a-z]+)*")
#: readings of a family or given name kept when its characters have several (first ones first)
MAX_READINGS = 4

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

#: compound surnames (复姓) and their readings, 《百家姓》
COMPOUND_SURNAMES = {
    "欧阳": "ou yang", "上官": "shang guan", "司马": "si ma", "诸葛": "zhu ge",
    "东方": "dong fang", "皇甫": "huang fu", "尉迟": "yu chi", "万俟": "mo qi",
    "单于": "chan yu", "长孙": "zhang sun", "澹台": "tan tai", "令狐": "ling hu",
    "夏侯": "xia hou", "慕容": "mu rong", "公孙": "gong sun", "宇文": "yu wen",
    "轩辕": "xuan yuan", "司徒": "si tu", "司空": "si kong", "呼延": "hu yan",
    "端木": "duan mu", "南宫": "nan gong", "钟离": "zhong li", "宗政": "zong zheng",
    "濮阳": "pu yang", "淳于": "chun yu", "申屠": "shen tu", "公冶": "gong ye",
    "赫连": "he lian", "闻人": "wen ren", "西门": "xi men", "太叔": "tai shu",
}  # fmt: skip
#: single-character surnames whose reading as a surname differs from the character's first
#: dictionary reading (多音字姓氏)
SURNAMES = {
    "单": "shan", "曾": "zeng", "解": "xie", "仇": "qiu", "查": "zha", "朴": "piao",
    "区": "ou", "盖": "ge", "乐": "yue", "缪": "miao", "覃": "qin", "召": "shao",
    "种": "chong", "员": "yun", "秘": "bi", "繁": "po", "宓": "mi", "隗": "wei",
    "翟": "zhai", "柏": "bai", "都": "du", "句": "gou", "任": "ren", "冼": "xian",
    "尉": "wei", "薄": "bo", "车": "che",
}  # fmt: skip


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


def romanised(value: str) -> bool:
    """Whether a normalised search value could be pinyin (then the pinyin rows are searched)."""
    return ROMANISED.fullmatch(value) is not None


@cache
def _dictionary() -> Any:
    """pypinyin's per-character readings. Its phrase dictionary is left unloaded (names are
    not phrases: a given name's characters are read one by one) and its dictionaries are not
    copied: 12 MB instead of 55 MB per process."""
    os.environ.setdefault("PYPINYIN_NO_PHRASES", "1")
    os.environ.setdefault("PYPINYIN_NO_DICT_COPY", "1")
    import pypinyin

    return pypinyin


@cache
def _char_readings(char: str) -> tuple[str, ...]:
    """The toneless readings of one character, most common first; ü is written v (as typed on
    a keyboard) and then u (as often transcribed: 吕 lv, lu). A Latin letter reads as itself."""
    if not _HAN.fullmatch(char):
        return (char.lower(),) if char.isalpha() and char.isascii() else ()
    pypinyin = _dictionary()
    found = pypinyin.pinyin(char, style=pypinyin.Style.NORMAL, heteronym=True)[0]
    return _with_u([r for r in found if r.isascii() and r.isalpha()])


def _with_u(readings: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for reading in readings:
        for form in (reading, reading.replace("v", "u")):
            if form not in out:
                out.append(form)
    return tuple(out)


def surname_readings(family: str) -> list[list[str]]:
    """A family name's readings as a surname (each a list of syllables): a compound surname's
    from the table, else the first character's surname reading (SURNAMES) or its most common
    one, and the most common reading of any further character."""
    family = "".join(c for c in family if not c.isspace())
    if family in COMPOUND_SURNAMES:
        return [COMPOUND_SURNAMES[family].split()]
    chars = []
    for i, char in enumerate(family):
        reading = SURNAMES.get(char) if i == 0 else None
        readings = (reading,) if reading else _char_readings(char)[:1]
        if readings:
            chars.append(_with_u(readings))
    return [list(p) for p in islice(product(*chars), MAX_READINGS)] if chars else []


def given_readings(given: str) -> list[list[str]]:
    """A given name's readings (each a list of syllables), at most MAX_READINGS: the first
    readings of its characters first, then the others of polyphonic ones."""
    chars = [r for r in (_char_readings(c) for c in given if not c.isspace()) if r]
    return [list(p) for p in islice(product(*chars), MAX_READINGS)] if chars else []


def split_text(text: str) -> tuple[str, str]:
    """A name written as one string (HumanName.text, 张三) as (family, given): a compound
    surname when it starts with one, else the first character."""
    text = "".join(c for c in text if not c.isspace())
    for size in (2, 1):
        head = text[:size]
        if size == 1 or head in COMPOUND_SURNAMES:
            return head, text[size:]
    return text, ""


def _forms(syllables: list[str]) -> set[str]:
    """Run together and spaced: zhangsan, zhang san."""
    return {"".join(syllables), " ".join(syllables)} if syllables else set()


@lru_cache(maxsize=8192)
def family_forms(family: str) -> frozenset[str]:
    if not has_han(family):
        return frozenset()
    return frozenset(f for syllables in surname_readings(family) for f in _forms(syllables))


@lru_cache(maxsize=8192)
def given_forms(given: str) -> frozenset[str]:
    if not has_han(given):
        return frozenset()
    out: set[str] = set()
    for syllables in given_readings(given):
        out |= _forms(syllables)
        out.add("".join(s[0] for s in syllables))
    return frozenset(out)


def name_forms(
    family: str | None, given: Iterable[str], text: str | None = None
) -> frozenset[str]:
    """Every pinyin form a HumanName is found by (see _name_forms); cached, since the name,
    phonetic and family/given parameters all read the same names."""
    return _name_forms(family, tuple(given), text)


@lru_cache(maxsize=8192)
def _name_forms(family: str | None, given: tuple[str, ...], text: str | None) -> frozenset[str]:
    """Every pinyin form a HumanName is found by: family, given, the full name run together,
    spaced, spaced between family and given only, and its initials (张三丰: zhang, sanfeng,
    san feng, zhangsanfeng, zhang san feng, zhang sanfeng, zsf). Empty without Chinese."""
    given_text = "".join(given)
    if not family and not given_text and text:
        family, given_text = split_text(text)
    family = family or ""
    if not has_han(family + given_text):
        return frozenset()
    out: set[str] = set()
    for fam in surname_readings(family) or [[]]:
        for syllables in given_readings(given_text) or [[]]:
            whole = fam + syllables
            out |= _forms(fam) | _forms(syllables) | _forms(whole)
            if fam and syllables:
                out.add(f"{''.join(fam)} {''.join(syllables)}")
            out.add("".join(s[0] for s in whole))
    out.discard("")
    return frozenset(out)
