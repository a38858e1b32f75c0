"""Token-level operations: synonym replacement and EDA's random insertion, swap and deletion.

They work on `tokens.Token` lists and only ever edit WORD/CJK tokens, so protected terms,
numbers, codes and punctuation are never touched. Each takes a `random.Random` and returns
(new tokens, number of edits); the input list is not modified.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from domainft.data.augment.tokens import CJK, EDITABLE, SPACE, WORD, Token

SynonymFn = Callable[[str], Sequence[str]]


def _count(strength: float, n: int) -> int:
    """EDA's rule: a fraction of the eligible words, at least one when the op is on at all."""
    if strength <= 0 or n == 0:
        return 0
    return max(1, round(strength * n))


def _copy(tokens: Sequence[Token]) -> list[Token]:
    return list(tokens)  # tokens are immutable: a shallow copy is a copy


def _slots(tokens: Sequence[Token]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t.kind in EDITABLE]


def synonym_replace(tokens: Sequence[Token], strength: float, synonyms: SynonymFn,
                    rng: random.Random) -> tuple[list[Token], int]:
    """Replace `strength` x (words that have a synonym) words, at least one, by a random synonym."""
    out = _copy(tokens)
    eligible = [(i, syns) for i, t in enumerate(out) if t.kind in EDITABLE and (syns := synonyms(t.text))]
    n = _count(strength, len(eligible))
    for i, syns in rng.sample(eligible, n) if n else ():
        out[i] = Token(syns[rng.randrange(len(syns))], out[i].kind)
    return out, n


def random_insert(tokens: Sequence[Token], strength: float, synonyms: SynonymFn, rng: random.Random,
                  separator: str = " ") -> tuple[list[Token], int]:
    """Insert `strength` x (editable words) synonyms, at least one, each after a random word.

    The synonym is of a random word of the text (EDA). `separator` is " " for English, "" for Chinese.
    """
    slots = _slots(tokens)
    n = _count(strength, len(slots))
    words_with_syns = [w for w in dict.fromkeys(tokens[i].text for i in slots) if synonyms(w)]
    if not n or not words_with_syns:
        return _copy(tokens), 0
    kind = CJK if not separator else WORD
    picks = []  # (after which original token, new word): drawn first, inserted from the end
    for _ in range(n):
        syns = synonyms(words_with_syns[rng.randrange(len(words_with_syns))])
        new = syns[rng.randrange(len(syns))]
        if separator and new[1:] == new[1:].lower():
            new = new[:1].lower() + new[1:]  # a capital in mid-sentence would look like a sentence start
        picks.append((slots[rng.randrange(len(slots))], new))
    out = _copy(tokens)
    # Insert from the end so that earlier positions stay valid (a stable sort: deterministic).
    for at, new in sorted(picks, key=lambda p: p[0], reverse=True):
        out[at + 1:at + 1] = [Token(separator, SPACE), Token(new, kind)] if separator else [Token(new, kind)]
    return out, n


SWAP_WINDOW = 6


def random_swap(tokens: Sequence[Token], strength: float, rng: random.Random,
                window: int = SWAP_WINDOW) -> tuple[list[Token], int]:
    """Swap two nearby words, `strength` x (editable words) times, at least once.

    The partner is at most `window` editable words away: EDA swapped anywhere in a sentence; in a
    document that would carry words across paragraphs.
    """
    out = _copy(tokens)
    slots = _slots(out)
    if len(slots) < 2:
        return out, 0
    n = _count(strength, len(slots))
    swaps = 0
    for _ in range(n):
        p = rng.randrange(len(slots))
        lo, hi = max(0, p - window), min(len(slots) - 1, p + window)
        q = rng.randrange(lo, hi)  # one of the hi - lo others
        q = q + 1 if q >= p else q
        a, b = slots[p], slots[q]
        if out[a].text != out[b].text:
            swaps += 1
        out[a], out[b] = out[b], out[a]
    return out, swaps


def _drop_at(out: list[Token], i: int) -> None:
    """Remove token i and tidy the whitespace around it (keep line breaks, no double spaces)."""
    left = out[i - 1] if i > 0 else None
    right = out[i + 1] if i + 1 < len(out) else None
    del out[i]
    if left is not None and left.kind == SPACE and right is not None and right.kind == SPACE:
        # Two spaces meet: drop the one without a line break (the right one when both are plain).
        del out[i if "\n" not in right.text or "\n" in left.text else i - 1]
    elif left is not None and left.kind == SPACE and (right is None or right.kind not in EDITABLE):
        if "\n" not in left.text or right is None:
            del out[i - 1]
    elif right is not None and right.kind == SPACE and left is None:
        del out[i]


def random_delete(tokens: Sequence[Token], p: float, rng: random.Random) -> tuple[list[Token], int]:
    """Delete each editable word with probability p; never every word (EDA keeps one)."""
    out = _copy(tokens)
    slots = _slots(out)
    if p <= 0 or len(slots) < 2:
        return out, 0
    doomed = [i for i in slots if rng.random() < p]
    if len(doomed) == len(slots):
        doomed.remove(doomed[rng.randrange(len(doomed))])
    for i in reversed(doomed):  # from the end, so earlier indices stay valid
        _drop_at(out, i)
    return out, len(doomed)
