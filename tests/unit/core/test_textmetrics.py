"""Exact match, token F1 and ROUGE-L on English and Chinese, against values computed by hand."""
import subprocess
import sys

import pytest

from domainft.core.textmetrics import exact_match, normalize, rouge_l, score_samples, token_f1, tokens


def test_normalisation_and_exact_match():
    assert normalize("  The\tCat \n sat!  ") == "the cat sat"
    assert normalize("我爱北京。") == normalize("我爱北京！") == normalize("我爱北京？") == "我爱北京"
    assert exact_match(" The  CAT sat. ", "the cat sat") == 1.0
    assert exact_match("Straße", "STRASSE") == 1.0  # casefold, not lower
    assert exact_match("the cat", "the cat sat") == 0.0
    assert exact_match("我爱北京。", "我爱北京") == 1.0
    assert exact_match("我爱北京", "我爱上海") == 0.0
    assert exact_match("", "") == 1.0


def test_tokens_words_for_latin_and_jieba_words_without_punctuation_for_cjk():
    assert tokens("The cat, the MAT.") == ["the", "cat", "the", "mat"]
    assert tokens("我爱北京天安门。") == ["我", "爱", "北京", "天安门"]
    assert tokens("患者服用了阿司匹林，头痛缓解了！") == ["患者", "服用", "了", "阿司匹林", "头痛", "缓解", "了"]
    assert tokens("他 使用 aspirin 100mg。") == ["他", "使用", "aspirin", "100mg"]


def test_english_token_f1_and_rouge_l():
    # pred 3 tokens, ref 6, all 3 shared: P = 1, R = 1/2 -> F1 = 2/3
    assert token_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # multiset overlap: pred {the x2, cat}, ref {the, cat, sat}: shared 2 -> P = 2/3, R = 2/3
    assert token_f1("the the cat", "the cat sat") == pytest.approx(2 / 3)
    # LCS of "the cat sat on mat" / "the mat the cat sat" is "the cat sat" (3): P = R = 3/5
    assert rouge_l("the cat sat on mat", "the mat the cat sat") == pytest.approx(0.6)
    # order matters for ROUGE-L, not for F1: reversed 4 words -> LCS 1, P = R = 1/4
    assert token_f1("a b c d", "d c b a") == 1.0
    assert rouge_l("a b c d", "d c b a") == pytest.approx(0.25)
    assert token_f1("dog", "cat") == rouge_l("dog", "cat") == 0.0
    assert token_f1("", "cat") == rouge_l("cat", "") == 0.0
    assert token_f1("", "") == rouge_l("...", "") == 1.0


def test_chinese_token_f1_and_rouge_l():
    # 我 / 爱 / 北京 against 北京 / 我 / 爱: same bag; LCS 我爱 = 2 of 3 -> 2/3
    assert token_f1("我爱北京", "北京我爱") == 1.0
    assert rouge_l("我爱北京", "北京我爱") == pytest.approx(2 / 3)
    # 今天天气 / 很 / 好 against 今天天气 / 不好: 1 shared, P = 1/3, R = 1/2 -> F1 = 2/5
    assert token_f1("今天天气很好。", "今天天气不好") == pytest.approx(0.4)
    assert rouge_l("今天天气很好", "今天天气不好！") == pytest.approx(0.4)
    # punctuation is no token: 患者 服用 了 阿司匹林 (4) against 患者 服用 了 阿司匹林 头痛 缓解 了 (7):
    # bag overlap 4 -> P = 1, R = 4/7 -> F1 = 8/11; LCS 4 as well
    assert token_f1("患者服用了阿司匹林。", "患者服用了阿司匹林，头痛缓解了！") == pytest.approx(8 / 11)
    assert rouge_l("患者服用了阿司匹林。", "患者服用了阿司匹林，头痛缓解了！") == pytest.approx(8 / 11)


def test_score_samples_means():
    got = score_samples(["the cat sat", "我爱北京", "dog"], ["the cat sat.", "北京我爱", "cat"])
    assert got == pytest.approx({"exact_match": 1 / 3, "token_f1": 2 / 3, "rouge_l": (1 + 2 / 3) / 3})
    assert score_samples([], []) == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_samples(["a", "b"], ["a"])


def test_jieba_says_nothing_on_stderr():
    code = "from domainft.core.textmetrics import tokens; print(tokens('我爱北京天安门'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "北京" in out.stdout
    assert "prefix dict" not in out.stderr and "Loading model" not in out.stderr, out.stderr
