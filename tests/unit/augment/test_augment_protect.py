"""Protected terms: built-in patterns, term lists (literal and regex), one-regex efficiency, masking."""
from __future__ import annotations

import re
import time

import pytest

from domainft.data.augment import ProtectedMatcher, build_matcher, mask, read_terms, unmask

BUILTIN_EXAMPLES = ["5mg", "2.5 mL", "HbA1c", "ICD-10", "COVID-19", "E11.9", "10%", "$1.13bn", "mRNA", "120/80"]


def spans_text(matcher: ProtectedMatcher, text: str) -> list[str]:
    return [text[s:e] for s, e in matcher.spans(text)]


@pytest.mark.parametrize("term", BUILTIN_EXAMPLES)
def test_builtin_patterns_protect_numbers_units_and_codes(term):
    text = f"The note says {term} was recorded today."
    assert spans_text(ProtectedMatcher(), text) == [term]


def test_builtin_patterns_leave_ordinary_words_alone():
    text = "The patient felt better after the treatment, and the Doctor agreed."
    assert spans_text(ProtectedMatcher(), text) == []


def test_literal_terms_whole_word_case_insensitive_longest_first(medical_terms):
    m = build_matcher(tuple(medical_terms))
    text = ("Insulin glargine and METFORMIN for Type 2 Diabetes; an insulinoma is not insulin. "
            "Congestive heart failure differs from heart failure.")
    assert spans_text(m, text) == ["Insulin glargine", "METFORMIN", "Type 2 Diabetes", "insulin",
                                   "Congestive heart failure", "heart failure"]


def test_regex_terms_and_chinese_terms(medical_terms):
    m = build_matcher(tuple(medical_terms))
    assert spans_text(m, "On admission BP 150/90 and HR 88, coded I10.") == ["BP 150/90", "HR 88", "I10"]
    # CJK terms need no word boundary: Chinese has no spaces.
    assert spans_text(m, "患者有糖尿病和高血压，服用二甲双胍500mg。") == ["糖尿病", "高血压", "二甲双胍", "500mg"]


def test_read_terms_skips_comments_and_blank_lines(tmp_path):
    f = tmp_path / "terms.txt"
    f.write_text("# comment\n\nmetformin\n  re:\\bE\\d+\\b  \n", encoding="utf-8")
    assert read_terms(f) == ["metformin", "re:\\bE\\d+\\b"]


def test_bad_regex_names_the_term():
    with pytest.raises(ValueError, match=r"re:\(unclosed"):
        ProtectedMatcher(["re:(unclosed"])


def _naive_patterns(terms: list[str]) -> list[re.Pattern]:
    """Reference: one compiled regex per term."""
    out = []
    for t in terms:
        pre = r"(?<![A-Za-z0-9])" if t[0].isascii() and t[0].isalnum() else ""
        post = r"(?![A-Za-z0-9])" if t[-1].isascii() and t[-1].isalnum() else ""
        out.append(re.compile(pre + re.escape(t) + post, re.IGNORECASE))
    return out


def _naive_spans(patterns: list[re.Pattern], text: str) -> list[tuple[int, int]]:
    """Every pattern scanned separately, then the same merge as the matcher."""
    found = [(m.start(), m.end()) for p in patterns for m in p.finditer(text)]
    found.sort()
    merged = []
    for s, e in found:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def test_thousand_terms_one_regex_matches_reference_and_is_fast(wordnet_table, bbc_terms, bbc_docs):
    terms = sorted(set(sorted(wordnet_table)[::40][:940]) | {t for t in bbc_terms if not t.startswith("re:")})
    assert len(terms) >= 1000
    matcher = ProtectedMatcher(terms, builtin=False)
    docs = [text for _, _, text in bbc_docs]
    t0 = time.perf_counter()
    ours = [matcher.spans(d) for d in docs]
    t_ours = time.perf_counter() - t0
    patterns = _naive_patterns(terms)
    t0 = time.perf_counter()
    ref = [_naive_spans(patterns, d) for d in docs]
    t_ref = time.perf_counter() - t0
    assert ours == ref
    assert sum(len(s) for s in ours) > 200  # the list really matches this corpus
    assert t_ours * 3 < t_ref, (t_ours, t_ref)


def test_mask_and_unmask_round_trip():
    m = ProtectedMatcher(["metformin"])
    text = "Take metformin 500 mg with HbA1c checks."
    masked, originals = mask(text, m.spans(text))
    assert originals == ["metformin", "500 mg", "HbA1c"]
    assert "metformin" not in masked and "500" not in masked and "HbA1c" not in masked
    assert unmask(masked, originals) == text
    # Reordered and re-cased placeholders are restored by number.
    assert unmask("zxq2z checks with ZXQ0Z at ZXQ1Z", originals) == "HbA1c checks with metformin at 500 mg"


def test_unmask_rejects_lost_or_repeated_placeholders():
    originals = ["a1", "b2"]
    assert unmask("only ZXQ0Z here", originals) is None
    assert unmask("ZXQ0Z ZXQ0Z ZXQ1Z", originals) is None
    assert unmask("ZXQ0Z ZXQ1Z ZXQ2Z", originals) is None


def test_mask_refuses_text_that_already_holds_a_placeholder():
    with pytest.raises(ValueError):
        mask("a ZXQ0Z b", [])
