"""Cleaning: whitespace, NFKC, HTML entities, labels, the duplicate hash."""
from domainft.data.clean import clean_label, clean_text, clean_texts, text_hash


def test_whitespace_runs_and_newlines_become_one_space():
    assert clean_text("  Ad sales\n\nboost\t\tTime   Warner \r\n") == "Ad sales boost Time Warner"


def test_unicode_whitespace_is_whitespace():
    assert clean_text("a\u00a0\u00a0b\u3000c\u2028d") == "a b c d"


def test_nfkc_is_optional():
    s = "ＡＢＣ１２３ ﬁ"
    assert clean_text(s) == s
    assert clean_text(s, nfkc=True) == "ABC123 fi"


def test_html_unescape_is_optional_and_runs_before_whitespace():
    s = "Tom &amp; Jerry&nbsp;&nbsp;&lt;b&gt;"
    assert clean_text(s) == s
    assert clean_text(s, unescape_html=True) == "Tom & Jerry <b>"


def test_only_whitespace_cleans_to_empty():
    assert clean_texts([" \n\t ", "x"]) == ["", "x"]


def test_chinese_text_is_kept():
    assert clean_text(" 内存 有点小。\n") == "内存 有点小。"


def test_hash_is_stable_and_distinguishes_texts():
    assert text_hash("abc") == text_hash("abc")
    assert text_hash("abc") != text_hash("abd")
    assert 0 <= text_hash("内存") < 2**64


def test_labels():
    assert clean_label(" pos ") == ("pos", "")
    assert clean_label(3) == ("3", "")
    assert clean_label(3.0) == ("3", "")
    assert clean_label(None) == (None, "missing_label")
    assert clean_label("  ") == (None, "empty_label")
    assert clean_label(["a"]) == (None, "bad_type")
    assert clean_label(True) == (None, "bad_type")
    assert clean_label(float("nan")) == (None, "bad_type")
