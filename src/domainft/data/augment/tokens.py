"""Tokens that keep a text exactly: `"".join(t.text for t in tokens) == text`.

Protected spans become single opaque tokens; the rest is split into words, CJK words
(jieba, for Chinese rows), whitespace and other characters. Only WORD and CJK tokens are ever
edited; anything holding a digit that is not already protected is OTHER, so digits survive.
A capitalised Latin word that does not start a sentence ("Time Warner", "Japan's") is a NAME:
never edited either, since without a tagger a mid-sentence capital is the best sign of a name.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple, Optional, Sequence

from domainft.data.augment.protect import ProtectedMatcher

WORD, CJK, PROTECTED, SPACE, OTHER, NAME = "word", "cjk", "protected", "space", "other", "name"
EDITABLE = (WORD, CJK)

_CJK_CHAR = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK_CHAR}]")
_LATIN_RE = re.compile(r"[A-Za-z]")
# Latin words with inner apostrophes or hyphens ("don't", "high-speed"); CJK runs; spaces; anything else.
_SPLIT_RE = re.compile(
    rf"(?P<word>[A-Za-z]+(?:['’-][A-Za-z]+)*)|(?P<cjk>[{_CJK_CHAR}]+)|(?P<space>\s+)|(?P<other>[^\sA-Za-z{_CJK_CHAR}]+)")


class Token(NamedTuple):
    """An immutable piece of text and its kind; edits build new tokens, so copies are shallow."""

    text: str
    kind: str

    @property
    def editable(self) -> bool:
        return self.kind in EDITABLE


def detect_language(text: str) -> str:
    """'zh' when CJK characters carry the text (one CJK character counts as four Latin letters), else 'en'."""
    cjk = len(_CJK_RE.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk * 4 >= len(_LATIN_RE.findall(text)) else "en"


def _split_plain(segment: str, cut_cjk: Optional[Callable[[str], Sequence[str]]]) -> list[Token]:
    out: list[Token] = []
    for m in _SPLIT_RE.finditer(segment):
        kind = m.lastgroup
        piece = m.group()
        if kind == "cjk":
            if cut_cjk is None:  # CJK inside an English row: kept whole and never edited
                out.append(Token(piece, OTHER))
            else:
                out.extend(Token(w, CJK) for w in cut_cjk(piece) if w)
        else:
            out.append(Token(piece, kind))
    return out


def tokenize(text: str, matcher: ProtectedMatcher,
             cut_cjk: Optional[Callable[[str], Sequence[str]]] = None) -> list[Token]:
    """Split `text` into tokens; protected spans are single PROTECTED tokens.

    Args:
        text: the row's text.
        matcher: protected-term matcher (built once per worker).
        cut_cjk: word segmenter for runs of CJK characters (jieba for Chinese rows); None leaves
            CJK runs as uneditable OTHER tokens (an English row quoting Chinese).
    """
    tokens: list[Token] = []
    pos = 0
    for s, e in matcher.spans(text):
        if s > pos:
            tokens.extend(_split_plain(text[pos:s], cut_cjk))
        tokens.append(Token(text[s:e], PROTECTED))
        pos = e
    if pos < len(text):
        tokens.extend(_split_plain(text[pos:], cut_cjk))
    _mark_names(tokens)
    return tokens


_SENTENCE_END = tuple(".!?:;\"'“”‘’()[]「」。！？；：…")


def _mark_names(tokens: list[Token]) -> None:
    """Capitalised words not at a sentence start become NAME tokens (in place)."""
    prev: Token | None = None  # previous non-space token
    newline = True
    for i, t in enumerate(tokens):
        if t.kind == SPACE:
            newline = newline or "\n" in t.text
            continue
        if t.kind == WORD and t.text[0].isupper():
            initial = newline or prev is None or (prev.kind in (OTHER, CJK) and prev.text.endswith(_SENTENCE_END))
            if not initial:
                tokens[i] = t = Token(t.text, NAME)
        prev, newline = t, False


def detokenize(tokens: Sequence[Token]) -> str:
    return "".join(t.text for t in tokens)
