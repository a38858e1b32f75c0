"""Masked back-translation: line structure, placeholder checks, Apertium round trip, a tiny Marian model."""
from __future__ import annotations

import math

from domainft.data.augment import build_matcher
from domainft.data.augment.backtranslate import (ApertiumRoundTrip, Seq2SeqRoundTrip, Seq2SeqTranslator,
                                                 backtranslate_texts)
from domainft.data.augment.protect import _PLACEHOLDER_RE


def test_lines_are_translated_once_and_layout_is_kept():
    calls = []

    def rephrase(lines):
        calls.append(list(lines))
        return [line.replace("line", "row").replace("twice", "two times") for line in lines]

    m = build_matcher(("metformin",))
    texts = ["Title line\n\n  metformin 5 mg twice.\nTitle line", "Title line"]
    out = backtranslate_texts(texts, m, rephrase)
    assert out == [("Title row\n\n  metformin 5 mg two times.\nTitle row", ""), ("Title row", "")]
    assert calls == [["Title line", "ZXQ0Z ZXQ1Z twice."]]  # each distinct line once


def test_drop_reasons():
    m = build_matcher(("metformin",))
    text = "Give metformin 5 mg."
    assert backtranslate_texts([text], m, lambda ls: ["Give it."] * len(ls)) == [(None, "lost_placeholder")]
    assert backtranslate_texts([text], m, lambda ls: [l + " ZXQ0Z" for l in ls]) == [(None, "lost_placeholder")]
    # A translation that invents a code-like token added a protected term; one that glues terms
    # into something else changed them.
    assert backtranslate_texts([text], m, lambda ls: [l + " XJ9" for l in ls]) == [(None, "protected_term_added")]
    assert backtranslate_texts([text], m, lambda ls: [l.replace(" ", "") for l in ls]) == \
        [(None, "protected_term_changed")]
    # Doubled spaces from the translator are collapsed (outside protected terms).
    assert backtranslate_texts(["a  b c"], m, lambda ls: [l.replace(" ", "   ") for l in ls]) == [("a b c", "")]
    assert backtranslate_texts(["ok"], m, lambda ls: [""] * len(ls)) == [(None, "empty_translation")]
    assert backtranslate_texts(["bad ZXQ3Z"], m, lambda ls: ls) == [(None, "placeholder_collision")]


def test_apertium_round_trip_on_bbc_keeps_protected_terms(bbc_sentences, bbc_terms):
    m = build_matcher(tuple(bbc_terms))
    texts = bbc_sentences[:80]
    results = backtranslate_texts(texts, m, ApertiumRoundTrip("spa"))
    kept = [(t, r) for t, (r, reason) in zip(texts, results) if not reason]
    assert len(kept) >= 0.8 * len(texts)
    assert sum(r != t for t, r in kept) >= 0.8 * len(kept)  # really translated
    for t, r in kept:
        assert m.terms_in(r) == m.terms_in(t)
        assert not _PLACEHOLDER_RE.search(r)
    # Money amounts that Apertium would rewrite ("$1.13bn" -> "1.13 trillion dollars") come back intact.
    money = [(t, r) for t, r in kept if "$" in t]
    assert money and all(r.count("$") == t.count("$") for t, r in money)


def test_seq2seq_translator_batches_by_length(tiny_seq2seq):
    tr = Seq2SeqTranslator(str(tiny_seq2seq), device="cpu", batch_size=4)
    texts = [f"The firm said profits rose by {'a lot ' * (i % 5)}this year." for i in range(10)]
    out = tr(texts)
    assert len(out) == 10 and all(isinstance(o, str) for o in out)
    assert tr.batches_run == math.ceil(10 / 4)
    assert tr(texts) == out  # greedy decoding: deterministic


def test_seq2seq_round_trip_masks_and_drops_lost_placeholders(tiny_seq2seq, medical_terms):
    m = build_matcher(tuple(medical_terms))
    rt = Seq2SeqRoundTrip(str(tiny_seq2seq), str(tiny_seq2seq), device="cpu", batch_size=3)
    texts = ["Metformin 500 mg daily.", "The weather was nice and the team won.", "HbA1c fell.",
             "Shares rose in early trading.", "Line one.\nLine two."]
    results = backtranslate_texts(texts, m, rt)
    assert len(results) == len(texts)
    for text, (new, reason) in zip(texts, results):
        if m.spans(text):  # random weights never reproduce a placeholder: dropped and counted
            assert new is None and reason in ("lost_placeholder", "protected_term_changed", "protected_term_added")
        else:
            assert (new is None) == bool(reason)
            assert reason in ("", "empty_translation", "protected_term_changed", "protected_term_added")
    # 5 texts -> 6 distinct lines, batches of 3, two directions.
    assert rt.forward.batches_run == 2 * 2  # the same model object serves both directions
