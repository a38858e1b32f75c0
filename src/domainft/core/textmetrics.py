"""Reference-based scores of generated answers: exact match, token F1 (SQuAD-style bag of tokens) and ROUGE-L
(longest common subsequence F-measure, beta 1). Pure Python, plus jieba for text with CJK characters.

Both texts are normalised first (strip, casefold, whitespace collapsed, trailing punctuation such as
`.`, `!`, `。`, `！`, `？` removed). Tokens: words (letters, digits, `_`) for Latin text; for a text that
contains CJK characters, jieba's precise-mode words, with whitespace and punctuation tokens dropped (Chinese
has no spaces, so characters alone would overrate overlap and whitespace words would see one token).
Two empty texts agree (1.0); one empty text scores 0.0 against a non-empty one.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Sequence

# Han (with extension A and compatibility ideographs), kana, Hangul
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Strip, collapse whitespace, casefold and drop trailing punctuation (`。！？` included)."""
    t = _SPACE.sub(" ", text.strip()).casefold()
    end = len(t)
    while end and (_is_punct(t[end - 1]) or t[end - 1] == " "):
        end -= 1
    return t[:end]


def tokens(text: str) -> list[str]:
    """The words of the normalised text: jieba's when it has CJK characters, else `\\w+` runs."""
    t = normalize(text)
    if _CJK.search(t) is None:
        return _WORD.findall(t)
    return [w for w in _jieba().lcut(t, cut_all=False) if w.strip() and not all(_is_punct(c) for c in w.strip())]


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize(pred) == normalize(ref))


def token_f1(pred: str, ref: str) -> float:
    """F1 of the token multisets (precision: shared / predicted tokens; recall: shared / reference tokens)."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    shared = sum((Counter(p) & Counter(r)).values())
    return _f1(shared, len(p), len(r))


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (beta 1): longest common token subsequence over the predicted and reference lengths."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    return _f1(_lcs(p, r), len(p), len(r))


def score_samples(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Means over the pairs: {"exact_match", "token_f1", "rouge_l"} (0.0 each for no pairs)."""
    if len(preds) != len(refs):
        raise ValueError(f"score_samples: {len(preds)} predictions for {len(refs)} references")
    n = max(1, len(preds))
    return {name: sum(fn(p, r) for p, r in zip(preds, refs)) / n
            for name, fn in (("exact_match", exact_match), ("token_f1", token_f1), ("rouge_l", rouge_l))}


def _f1(shared: int, n_pred: int, n_ref: int) -> float:
    if shared == 0:
        return 0.0
    precision, recall = shared / n_pred, shared / n_ref
    return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence: one row of the DP table at a time."""
    if len(b) > len(a):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # else "Building prefix dict ..." on stderr
    jieba.initialize()
    return jieba
