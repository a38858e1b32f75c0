"""Domain-term mining: candidate protected terms for augmentation, scored against general language.

- English rows: words and 2-4 word phrases, scored by "simple maths" keyness (Kilgarriff 2009):
  (corpus rate + 1) / (general rate + 1), rates per million words, the general rate from wordfreq
  (a frequency list built from Wikipedia, subtitles, news, books, web text). A phrase must recur, be a
  collocation inside the corpus (PMI), not start or end with a function word and, when nested in a
  longer kept phrase, counts only its own occurrences (C-value style).
- Chinese rows: jieba words of two or more characters, scored by TF-IDF (corpus term frequency x
  jieba's general-corpus IDF, as `jieba.analyse` does for keywords); stop words from stopwords-iso
  and augmentation's own list.
- Both: codes and numbers with units found by the built-in patterns of `augment.protect`
  (HbA1c, E11.9, CYP2D6, 500 mg, 8.2%), scored like the words of their row's language.
Plain general words (wordfreq Zipf >= 5 in the row's language) are left out.

Counting is one pass (`TermCounts.add`; memory: the distinct candidates); ranking is `rank_terms`.
No Ray.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Optional

from domainft.data.augment.pipeline import row_language
from domainft.data.augment.protect import NUMBER_WITH_UNIT, build_matcher
from domainft.data.augment.synonyms_zh import STOPWORDS as ZH_STOPWORDS, cut

WORD, PHRASE, CODE, QUANTITY = "word", "phrase", "code", "quantity"
# Zipf = log10 of a word's frequency per billion words (wordfreq's scale: English "the" 7.7,
# "daily" 5.1, "hypertension" 3.4, "metformin" 2.6). Words at or above GENERAL_ZIPF are plain
# general words; a phrase may not start or end with an English word at or above STOP_ZIPF (about
# 110 words, nearly all function words: "the", "of", "with", "which"; also "new", "first").
GENERAL_ZIPF = 5.0
STOP_ZIPF = 6.0
# Stop words a phrase may hold in the middle ("Bank of England", "Tour de France"); not
# "and": "Kenteris and Thanou" is two names, not a term.
CONNECTORS = frozenset({"of", "de", "la", "du", "del", "der", "von", "van", "di", "da"})
MIN_PHRASE_COUNT = 2  # a phrase seen once is no evidence of a collocation
MIN_PMI = 3.0  # bits: the words occur together at least 8x more often than by chance
MAX_KEYS = 1_000_000  # distinct candidates per language (about 500 bytes each)

_LATIN = "A-Za-zÀ-ÖØ-öø-ɏ"
_WORD_RE = re.compile(rf"[{_LATIN}]+(?:['’-][{_LATIN}]+)*")
_CJK_WORD_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
_NOT_SPACE = re.compile(r"\S")  # between two words: punctuation ends a phrase


@dataclass(frozen=True)
class Term:
    text: str  # as most often written in the corpus (matching is case-insensitive)
    score: float  # keyness (en) or TF-IDF (zh): comparable within one language only
    count: int  # occurrences (a nested phrase: those outside its longer kept phrase)
    docs: int  # texts holding it
    language: str  # en | zh
    kind: str  # word | phrase | code | quantity


@dataclass
class _Pool:
    """Counts for one language. Keys are lower-cased texts: a word, a phrase (words joined by one
    space), a code or a quantity; `kinds` remembers which (a code wins over the same word)."""

    texts: int = 0
    tokens: int = 0  # words, codes and quantities: the denominator of corpus rates
    counts: Counter = field(default_factory=Counter)
    docs: Counter = field(default_factory=Counter)
    kinds: dict = field(default_factory=dict)
    forms: dict = field(default_factory=dict)  # key -> Counter of written forms other than the key
    floor: int = 0  # candidates seen this often or less were dropped to bound memory (see _prune)


class TermCounts:
    """Candidate counts over a corpus, fed one text at a time."""

    def __init__(self, language: str = "auto", max_n: int = 4, max_keys: int = MAX_KEYS):
        """Args:
            language: `en`, `zh`, or `auto` (per text, as augmentation decides).
            max_n: longest phrase, in words.
            max_keys: distinct candidates kept per language; past it the rarest are dropped (memory).
        """
        self.language, self.max_n, self.max_keys = language, max_n, max_keys
        self.pools: dict[str, _Pool] = {}
        self.matcher = build_matcher((), True)  # built-in patterns only: codes, numbers with units

    @property
    def texts(self) -> int:
        return sum(p.texts for p in self.pools.values())

    def add(self, text: str) -> None:
        lang = row_language(text, self.language)
        pool = self.pools.setdefault(lang, _Pool())
        pool.texts += 1
        items = _items(text, self.matcher, lang)
        grams = list(filter(None, items)) if lang == "zh" else list(_with_phrases(items, self.max_n))
        here = Counter(key for _, key, _ in grams)  # counted in C, then merged once per text
        pool.counts.update(here)
        pool.docs.update(here.keys())
        kinds = pool.kinds
        for kind, key, surface in grams:
            if kind != WORD and kinds.get(key, WORD) == WORD:  # a code or quantity wins over the same word
                kinds[key] = kind
            if surface != key:
                pool.forms.setdefault(key, Counter())[surface] += 1
        for key in here.keys() - kinds.keys():
            kinds[key] = PHRASE if " " in key else WORD  # codes and quantities were set above
        pool.tokens += sum(1 for kind, _, _ in grams if kind != PHRASE)
        if len(pool.counts) > self.max_keys:
            _prune(pool)


def _prune(pool: _Pool) -> None:
    """Raise the floor and drop the candidates seen at most that often (as gensim's Phrases bounds
    its vocabulary): a big corpus keeps what can still reach the top, in bounded memory."""
    pool.floor += 1
    rare = [k for k, c in pool.counts.items() if c <= pool.floor]
    for k in rare:
        del pool.counts[k]
        pool.docs.pop(k, None)
        pool.kinds.pop(k, None)
        pool.forms.pop(k, None)


def _items(text: str, matcher, lang: str) -> list[Optional[tuple[str, str, str]]]:
    """(kind, key, written form) per candidate token in text order; None where a phrase must break."""
    out: list = []
    pos = 0
    for s, e in matcher.spans(text) + [(len(text), len(text))]:
        if s > pos:
            out.extend(_zh_words(text[pos:s]) if lang == "zh" else _en_words(text[pos:s]))
        if e > s:
            out.append(_pattern_item(text[s:e]))
        out.append(None)
        pos = e
    return out


def _pattern_item(span: str) -> Optional[tuple[str, str, str]]:
    """A built-in pattern match as a code or quantity; bare numbers and ratios (2025, 150/95) are not
    terms, nor is what a term file would read as a regex (`re:`)."""
    span = " ".join(span.split())  # "5\nmg" -> "5 mg": a term is one line
    if not re.search(r"[A-Za-z%‰]", span) or span.lower().startswith("re:"):
        return None
    quantity = span[0].isdigit() or span[0] in "$£€¥-+±~≈<>≤≥" or NUMBER_WITH_UNIT.fullmatch(span)
    return (QUANTITY if quantity else CODE), span.lower(), span


def _en_words(segment: str) -> list:
    out: list = []
    pos = 0
    for m in _WORD_RE.finditer(segment):
        if _NOT_SPACE.search(segment, pos, m.start()):
            out.append(None)
        w = m.group()
        if "'" in w or "’" in w:
            w = _POSSESSIVE.sub("", w)
        out.append((WORD, w.lower(), w) if len(w) >= 2 else None)
        pos = m.end()
    if _NOT_SPACE.search(segment, pos):
        out.append(None)
    return out


def _zh_words(segment: str) -> list:
    out: list = []
    for w in cut(segment):
        if _CJK_WORD_RE.fullmatch(w):
            out.append((WORD, w, w))
        elif _WORD_RE.fullmatch(w) and len(w) >= 2:  # Latin words in a Chinese row: brands, products
            out.append((WORD, w.lower(), w))
    return out


def _with_phrases(items: list, max_n: int) -> Iterable[tuple[str, str, str]]:
    """The items, then every 2..max_n word n-gram inside a run without breaks whose edge words are
    not stop words (and whose middle words are not stop words, or are connectors)."""
    run: list = []
    for it in items + [None]:
        if it is not None:
            yield it
            if it[0] == WORD:
                run.append(it)
                continue
        for i in range(len(run)):
            if _is_stop(run[i][1]):
                continue
            for n in range(2, min(max_n, len(run) - i) + 1):
                gram = run[i:i + n]
                if _is_stop(gram[-1][1]) or any(_is_stop(w[1]) and w[1] not in CONNECTORS for w in gram[1:-1]):
                    continue
                yield PHRASE, " ".join(w[1] for w in gram), " ".join(w[2] for w in gram)
        run = []


@lru_cache(maxsize=2)
def _frequencies(lang: str) -> dict[str, float]:
    from wordfreq import get_frequency_dict

    return get_frequency_dict(lang, wordlist="large")


def zipf(word: str, lang: str = "en") -> float:
    """wordfreq's Zipf value of a lower-cased word (0 when the list does not have it)."""
    f = _frequencies(lang).get(word, 0.0)
    return math.log10(f * 1e9) if f > 0 else 0.0


@lru_cache(maxsize=1 << 16)
def _is_stop(word: str) -> bool:
    return zipf(word) >= STOP_ZIPF


def general_rate(text: str, words: int = 1) -> float:
    """Occurrences per million words of general English, from wordfreq.

    wordfreq has no phrases: it combines the tokens of "blood pressure" as 1 / sum(1 / f), about the
    rarer word's rate, as if that word never occurred elsewhere. A phrase of `words` words is given a
    tenth of that per extra word (the rarer word in this phrase one time in ten), as wordfreq itself
    does for multi-token Chinese words.
    """
    from wordfreq import word_frequency

    return word_frequency(text, "en", wordlist="large") * 1e6 / 10 ** (words - 1)


@lru_cache(maxsize=1)
def zh_stopwords() -> frozenset[str]:
    """Chinese stop words: stopwords-iso's list and the one augmentation never replaces."""
    from stopwordsiso import stopwords

    return frozenset(stopwords("zh")) | ZH_STOPWORDS


@lru_cache(maxsize=1)
def _idf() -> tuple[dict[str, float], float]:
    """jieba's general-corpus IDF table (jieba/analyse/idf.txt) and its median (for unknown words)."""
    import jieba.analyse

    t = jieba.analyse.default_tfidf
    return t.idf_freq, t.median_idf


def _surface(pool: _Pool, key: str) -> str:
    """The most frequent written form (the key itself when it is at least as frequent)."""
    variants = pool.forms.get(key, {})
    best = max(variants.items(), key=lambda kv: (kv[1], kv[0]), default=(key, 0))
    return best[0] if best[1] > pool.counts[key] - sum(variants.values()) else key


def _pmi(pool: _Pool, words: list[str]) -> float:
    """Pointwise mutual information (bits) of a phrase: the weakest of its two-part splits."""
    n = max(pool.tokens, 1)

    def count(part: list[str]) -> float:
        # A part never counted as a phrase (it ends on a connector: "Bank of"): its count if its words
        # were independent.
        c = pool.counts.get(" ".join(part), 0)
        return c if c or len(part) == 1 else math.prod(pool.counts.get(w, 0) for w in part) / n ** (len(part) - 1)

    c = pool.counts[" ".join(words)]
    return min(math.log2(c * n / max(count(words[:i]) * count(words[i:]), 1e-9)) for i in range(1, len(words)))


def _phrase_counts(pool: _Pool, min_count: int, min_pmi: float) -> dict[str, int]:
    """Kept phrases and their own counts. Longer phrases first: a nested phrase loses the occurrences
    of the kept longer phrases that hold it (C-value style), and is dropped if fewer than `min_count`
    are left ("Prime Minister Tony" is only ever part of "Prime Minister Tony Blair")."""
    by_len: dict[int, list[str]] = {}
    for key, c in pool.counts.items():
        if c >= min_count and pool.kinds[key] == PHRASE:
            by_len.setdefault(key.count(" ") + 1, []).append(key)
    kept: dict[str, int] = {}
    inside: Counter = Counter()
    for n in sorted(by_len, reverse=True):
        for key in by_len[n]:
            words = key.split(" ")
            own = pool.counts[key] - inside[key]
            if own < min_count or _pmi(pool, words) < min_pmi:
                continue
            kept[key] = own
            for m in range(2, n):  # every shorter phrase inside it, at any depth
                for i in range(n - m + 1):
                    inside[" ".join(words[i:i + m])] += own
    return kept


def _english_scores(pool: _Pool, general_zipf: float, min_count: int) -> list[tuple[float, int, str]]:
    """(keyness, count, key) of the English candidates that qualify."""
    per_million = 1e6 / max(pool.tokens, 1)
    phrases = _phrase_counts(pool, max(min_count, MIN_PHRASE_COUNT), MIN_PMI)
    out = []
    for key, count in pool.counts.items():
        kind = pool.kinds[key]
        if kind == PHRASE:
            if key not in phrases:
                continue
            count = phrases[key]
        elif count < min_count or (kind != QUANTITY and zipf(key) >= general_zipf):  # "US", "UK" read as words
            continue
        out.append(((count * per_million + 1) / (general_rate(key, key.count(" ") + 1 if kind == PHRASE else 1) + 1),
                    count, key))
    return out


def _chinese_scores(pool: _Pool, general_zipf: float, min_count: int) -> list[tuple[float, int, str]]:
    """(TF-IDF, count, key) of the Chinese candidates that qualify."""
    idf, median = _idf()
    stop = zh_stopwords()
    total = max(pool.tokens, 1)
    out = []
    for key, count in pool.counts.items():
        if count < min_count or key in stop:
            continue
        if pool.kinds[key] != QUANTITY and zipf(key, "en" if key.isascii() else "zh") >= general_zipf:
            continue
        out.append((count / total * idf.get(key, median), count, key))
    return out


def rank_terms(counts: TermCounts, top: int = 1000, general_zipf: float = GENERAL_ZIPF,
               min_count: int = 1) -> list[Term]:
    """The best `top` candidates, best first.

    Each language is ranked by its own score; in a mixed corpus each language gets a share of `top`
    proportional to its number of texts (slots it cannot fill go to the others), and the lists are
    interleaved by relative rank, so that trimming from the bottom trims every language alike.

    Args:
        counts: the corpus counts.
        top: most terms returned.
        general_zipf: words (and codes that read as words) this frequent in general language are left out.
        min_count: fewest occurrences of a word, code or quantity (phrases need at least 2).
    """
    ranked = {}
    for lang, pool in counts.pools.items():
        scored = (_chinese_scores if lang == "zh" else _english_scores)(pool, general_zipf, min_count)
        ranked[lang] = sorted(scored, key=lambda t: (-t[0], -t[1], t[2]))
    shares = _shares({lang: counts.pools[lang].texts for lang in ranked}, {k: len(v) for k, v in ranked.items()}, top)
    merged = []
    for lang, scored in ranked.items():
        pool = counts.pools[lang]
        for i, (score, count, key) in enumerate(scored[:shares[lang]]):
            term = Term(_surface(pool, key), score, count, pool.docs[key], lang, pool.kinds[key])
            merged.append(((i + 1) / shares[lang], lang, term))
    merged.sort(key=lambda x: (x[0], x[1]))
    return [t for _, _, t in merged]


def _shares(texts: dict[str, int], available: dict[str, int], top: int) -> dict[str, int]:
    """Slots per language: proportional to its texts, capped by its candidates, leftovers handed on."""
    shares = {lang: 0 for lang in texts}
    left, open_ = top, [lang for lang in texts if available[lang]]
    while left > 0 and open_:
        weight, budget = sum(texts[lang] for lang in open_), left
        for lang in open_:
            give = min(max(1, budget * texts[lang] // weight), available[lang] - shares[lang], left)
            shares[lang] += give
            left -= give
        open_ = [lang for lang in open_ if shares[lang] < available[lang]]
    return shares


def mine_terms(texts: Iterable[str], top: int = 1000, language: str = "auto", min_count: int = 1) -> list[Term]:
    """Count and rank in one call (see `TermCounts` and `rank_terms`)."""
    counts = TermCounts(language)
    for t in texts:
        counts.add(t)
    return rank_terms(counts, top, min_count=min_count)

