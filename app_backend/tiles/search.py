"""Chinese search as residents type it: the forms a live version's text is compared in (computed once, when the
version goes live) and the forms of a query.

A name is kept as typed (normalised: NFKC, lower case, no spaces), and as its pinyin and initials from each
syllable on: 公积金查询 gives `gongjijinchaxun`, `jijinchaxun`, … and `gjjcx`, `jjcx`, …, so `gjj`, `gongjijin`
and `chaxun` are each a prefix of one form. Latin letters and digits in a name (ETC办理) stay one syllable per run.
Keywords keep their text and their whole pinyin and initials. A query all in Chinese is compared as text; one
with latin letters also as pinyin, its Chinese characters turned to pinyin (公积j reads `gongjij`)."""

from __future__ import annotations

import re
import unicodedata

from pypinyin import lazy_pinyin

from app_backend.tiles.repository import SearchForms
from app_backend.tiles.schemas import TileContent

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]+")
_LATIN = re.compile(r"[a-z0-9]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """As text is compared: full-width forms folded (ＧＪＪ is gjj), lower case, without spaces."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text)).lower()


def _parts(text: str) -> list[tuple[str, bool]]:
    """The text's syllables in order, each with whether it is a Chinese character's pinyin (read as a phrase, so
    银行 is yin hang) or a run of latin letters or digits as typed; punctuation and other scripts dropped."""
    text = normalise(text)
    found: list[tuple[str, bool]] = []
    at = 0
    for han in _HAN.finditer(text):
        found += [(run, False) for run in _LATIN.findall(text[at : han.start()])]
        found += [(s, True) for s in lazy_pinyin(han.group()) if s]
        at = han.end()
    found += [(run, False) for run in _LATIN.findall(text[at:])]
    return found


def _suffixes(parts: list[str]) -> list[str]:
    return ["".join(parts[i:]) for i in range(len(parts))]


def _pinyin_and_initials(text: str) -> tuple[list[str], list[str]]:
    """Syllables and their initials: a pinyin syllable's first letter, a latin run whole (ETC办理: etc, b, l)."""
    parts = _parts(text)
    return [s for s, _ in parts], [s[0] if pinyin else s for s, pinyin in parts]


def forms(content: TileContent) -> SearchForms:
    """What the search compares of a version: computed when it goes live."""
    names, initials = _pinyin_and_initials(content.name)
    keyword_pinyin: list[str] = []
    for word in content.keywords:
        full, firsts = _pinyin_and_initials(word)
        if full:
            keyword_pinyin += ["".join(full), "".join(firsts)]
    return SearchForms(
        name=normalise(content.name),
        description=normalise(content.description),
        name_pinyin=_suffixes(names),
        name_initials=_suffixes(initials),
        keywords=[normalise(k) for k in content.keywords],
        keywords_pinyin=list(dict.fromkeys(keyword_pinyin)),
    )


def query_forms(query: str) -> tuple[str, str]:
    """(text, pinyin): the query as text is compared, and its latin form when it has latin letters or digits
    (empty for a query all in Chinese, which matches as text alone)."""
    text = normalise(query)
    if not _LATIN.search(text):
        return text, ""
    return text, "".join(s for s, _ in _parts(text))
