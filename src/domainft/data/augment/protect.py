"""Protected terms: spans of text that no augmentation may alter.

Three sources, all merged into one sorted list of non-overlapping spans per text:
- literal terms from a term-list file, matched case-insensitively as whole words through ONE
  compiled regex built as a trie (a 1,000-term list costs about what a 20-term list does:
  Python's `re` tries alternatives one by one, a trie shares their prefixes);
- user regexes (`re:` lines), one compiled alternation;
- built-in patterns: numbers with units or currency (5mg, 2.5 mL, 10%, $1.13bn) and
  alphanumeric codes (HbA1c, ICD-10, COVID-19, E11.9, mRNA, BBC).

Spans from different patterns that overlap are merged, so the longest reading wins
("ICD-10" rather than "ICD" + "10").
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

# Edges of an ASCII word: a term that starts (ends) with a letter or digit must not be glued to one.
# CJK terms get no boundary (Chinese has no spaces between words).
_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_ALNUM_AFTER = r"(?![A-Za-z0-9])"

# Units that may follow a number after a space ("2.5 mL"). Attached units ("5mg") are caught by the
# code pattern, whatever the unit. Ambiguous English words ("in", "s", "times") are left out here.
_SPACED_UNITS = (
    "%", "‰", "°C", "°F", "° C", "° F", "mg", "mcg", "µg", "μg", "ug", "ng", "pg", "g", "kg", "lb", "lbs", "oz",
    "ml", "mL", "µL", "μL", "µl", "μl", "L", "dL", "dl", "cl", "cc", "mmol", "µmol", "μmol", "nmol", "mol",
    "mEq", "meq", "IU", "iu", "units", "unit", "mm", "cm", "km", "mmHg", "kPa", "Pa", "bpm", "Hz", "kHz", "MHz",
    "GHz", "kcal", "cal", "kJ", "kW", "mV", "ms", "sec", "min", "mins", "hr", "hrs", "h", "wk", "wks", "yr",
    "yrs", "GB", "MB", "KB", "TB", "mAh", "bn", "m", "million", "billion", "trillion", "percent", "per cent",
    "cm2", "m2", "mg/kg", "mg/dL", "mg/dl", "mmol/L", "mmol/l", "g/dL", "µg/mL", "mL/min", "IU/mL",
)
_UNITS_RE = "|".join(re.escape(u) for u in sorted(set(_SPACED_UNITS), key=len, reverse=True))
_NUMBER = r"[-+±~≈<>≤≥]?[$£€¥]?\d+(?:[.,:]\d+)*"
# A number, an optional space-separated unit, an optional trailing % (not part of \w).
NUMBER_WITH_UNIT = re.compile(
    _ALNUM_BEFORE + _NUMBER + r"(?:\s?(?:" + _UNITS_RE + r")" + _ALNUM_AFTER + r"|%|‰)?" + _ALNUM_AFTER)
# Codes: a run of ASCII letters/digits joined by - . / : _ + that holds a digit (HbA1c, COVID-19,
# E11.9, ICD-10, $1.13bn, 10%), or a word with a capital after its first letter (mRNA, IgG, BBC,
# TimeWarner), or a dotted abbreviation (U.S.). One regex, scanned in C: no Python call per word.
_CHUNK = r"[A-Za-z0-9]+"
_SEP = r"[-./:_+]"
CODE = re.compile(
    _ALNUM_BEFORE + r"(?:"
    + rf"[$£€¥]?(?:{_CHUNK}{_SEP})*[A-Za-z]*\d[A-Za-z0-9]*(?:{_SEP}{_CHUNK})*(?:%|‰)?"
    + rf"|[A-Za-z][a-z]*[A-Z][A-Za-z0-9]*(?:{_SEP}{_CHUNK})*"
    + r"|(?:[A-Z]\.){2,}"
    + r")" + r"(?![A-Za-z0-9])")


def is_code(token: str) -> bool:
    """True when the built-in code pattern protects the whole token."""
    return bool(CODE.fullmatch(token))


def read_terms(path: str | Path) -> list[str]:
    """Lines of a term-list file: one term, or `re:REGEX`, per line; `#` starts a comment line.

    Returns the non-empty lines, stripped, in file order (duplicates kept; the matcher removes them).
    Literal terms match case-insensitively as whole words (for Latin edges); a regex is used as
    written. In a regex meant for Chinese text use lookarounds such as `(?<![A-Za-z0-9])` rather
    than `\\b`: CJK characters are word characters, so `\\b` never fires between 型号 and T400.
    """
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _trie_regex(words: Sequence[str]) -> str:
    """One regex for a set of lower-cased literal words, factored as a trie.

    At every node the longer continuations are tried before the word ending here, so the
    longest term wins; the end of a term that finishes on a letter/digit asserts a word edge.
    """
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def emit(node: dict, last: str) -> str:
        branches = []
        for ch in sorted(k for k in node if k):
            branches.append(re.escape(ch) + emit(node[ch], ch))
        if "" in node:
            end = _ALNUM_AFTER if last.isascii() and last.isalnum() else ""
            # An empty `end` is the empty alternative: placed last, longer matches are preferred.
            branches.append(end)
        if len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + ")"

    return emit(trie, "")


class ProtectedMatcher:
    """Finds protected spans in a text. Build once per worker process (see `build_matcher`)."""

    def __init__(self, terms: Iterable[str] = (), builtin: bool = True):
        literals: set[str] = set()
        regexes: list[str] = []
        for t in terms:
            t = t.strip()
            if not t or t.startswith("#"):
                continue
            if t.startswith("re:"):
                pattern = t[3:]
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"protected term {t!r}: not a valid regex ({e})") from None
                regexes.append(pattern)
            else:
                literals.add(t.lower())
        self.memo: dict = {}  # per-matcher caches of callers (synonyms already checked against it)
        self.n_literals = len(literals)
        self.n_regexes = len(regexes)
        self.builtin = builtin
        self._patterns: list[re.Pattern] = []
        glued = sorted(w for w in literals if w[0].isascii() and w[0].isalnum())
        free = sorted(w for w in literals if not (w[0].isascii() and w[0].isalnum()))
        parts = []
        if glued:
            parts.append(_ALNUM_BEFORE + _trie_regex(glued))
        if free:
            parts.append(_trie_regex(free))
        if parts:
            self._patterns.append(re.compile("|".join(parts), re.IGNORECASE))
        if regexes:
            # Each user regex is wrapped so its own groups or alternations cannot leak out.
            self._patterns.append(re.compile("|".join(f"(?:{r})" for r in regexes)))
        if builtin:
            self._patterns += [NUMBER_WITH_UNIT, CODE]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted, merged (start, end) spans of protected text."""
        found = []
        for pat in self._patterns:
            for m in pat.finditer(text):
                if m.end() > m.start():
                    found.append((m.start(), m.end()))
        if not found:
            return []
        found.sort()
        merged = [list(found[0])]
        for s, e in found[1:]:
            if s < merged[-1][1]:  # overlapping (touching spans stay two terms)
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return [(s, e) for s, e in merged]

    def terms_in(self, text: str) -> Counter:
        """Multiset of the protected strings in `text`: what must be identical before and after an op."""
        return Counter(text[s:e] for s, e in self.spans(text))


@lru_cache(maxsize=8)
def build_matcher(terms: tuple[str, ...] = (), builtin: bool = True) -> ProtectedMatcher:
    """A matcher per (terms, builtin), cached per process: workers compile the regex once."""
    return ProtectedMatcher(terms, builtin=builtin)


# --- Placeholders for back-translation -------------------------------------------------------------
# Letters+digit tokens that both Apertium (unknown word, passed through with -u) and subword MT
# models copy verbatim. Numbered per text; restored case-insensitively.
PLACEHOLDER_FMT = "ZXQ{}Z"
_PLACEHOLDER_RE = re.compile(r"ZXQ(\d+)Z", re.IGNORECASE)


def mask(text: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list[str]]:
    """Replace each protected span with a numbered placeholder. Returns (masked text, originals).

    Raises ValueError if the text already contains something that reads as a placeholder.
    """
    if _PLACEHOLDER_RE.search(text):
        raise ValueError("text already contains a placeholder-like token")
    out, originals, pos = [], [], 0
    for i, (s, e) in enumerate(spans):
        out.append(text[pos:s])
        out.append(PLACEHOLDER_FMT.format(i))
        originals.append(text[s:e])
        pos = e
    out.append(text[pos:])
    return "".join(out), originals


def unmask(text: str, originals: Sequence[str]) -> Optional[str]:
    """Put the originals back. None when a placeholder is lost, repeated or unknown."""
    seen = Counter(int(m.group(1)) for m in _PLACEHOLDER_RE.finditer(text))
    if set(seen) != set(range(len(originals))) or any(c != 1 for c in seen.values()):
        return None
    return _PLACEHOLDER_RE.sub(lambda m: originals[int(m.group(1))], text)
