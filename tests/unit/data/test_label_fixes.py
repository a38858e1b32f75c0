"""data.label_fixes without Ray: parsing, naming records, matching them in the collector, relabel / drop
counted, and one clear error (file and line) for every bad fix file."""
import numpy as np
import pytest

from domainft.data.chunks import plan_chunks
from domainft.data.collect import Collector
from domainft.data.label_fixes import apply_label_fixes, read_label_fixes, source_id_of, split_source_id
from domainft.data.plan import make_plan
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.report import build_report, count_problems, format_report
from domainft.data.sources import collect_sources
from domainft.errors import UserError

ROWS = [("good match", "sport"), ("rates rise", "business"), ("film star", "sport"), ("duplicate", "tech"),
        ("duplicate", "tech"), ("chip maker", "tech"), ("spam spam", "tech")]


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "news.jsonl").write_text("".join(f'{{"text": "{t}", "label": "{lab}"}}\n' for t, lab in ROWS))
    (d / "more.csv").write_text("text,label\nmarket news,business\nold film,tech\n")
    return d, collect_sources(str(d), None, "auto")


def _fixes(tmp_path, text, files, labels=None):
    path = tmp_path / "fixes.csv"
    path.write_text(text)
    return read_label_fixes(str(path), files, labels)


def _collect(files, fixes):
    c = Collector(files, None, fixes.source_ids())
    for chunk in plan_chunks(files, 1 << 30):
        for t in parse_chunk(chunk, ParseOptions()):
            c.add(t)
    return c


def test_source_ids_round_trip_for_every_format(corpus):
    _, files = corpus
    jsonl = next(f for f in files if f.name == "news.jsonl")
    assert source_id_of(jsonl, "3") == "news.jsonl:3" and source_id_of(jsonl, "x") is None
    assert source_id_of(jsonl, "row3") is None  # `row` is a Parquet row
    assert split_source_id("news.jsonl:3") == ("news.jsonl", "3")
    assert split_source_id("data.parquet:row7") == ("data.parquet", "row7")
    assert split_source_id("sport/001.txt") == ("sport/001.txt", "")


def test_fixes_relabel_and_drop_before_dedupe_and_are_counted(tmp_path, corpus):
    _, files = corpus
    # the audit CSV's shape: row_id, source, line, other columns, fix (empty = not reviewed)
    fixes = _fixes(tmp_path, "row_id,source,line,text,given_label,fix\n"
                             "news.jsonl:3,,,film star,sport,business\n"
                             ",more.csv,3,old film,tech,business\n"
                             "news.jsonl:7,,,spam spam,tech,DROP\n"
                             "news.jsonl:1,,,good match,sport,sport\n"
                             "news.jsonl:2,,,rates rise,business,\n", files)
    assert [(f.source_id, f.label) for f in fixes.fixes] == [
        ("news.jsonl:3", "business"), ("more.csv:3", "business"), ("news.jsonl:7", None), ("news.jsonl:1", "sport")]
    c = _collect(files, fixes)
    names, arrays = c.arrays(None)
    arrays, counts = apply_label_fixes(fixes, c.fix_hits, arrays, names)
    assert counts["relabelled"] == 2 and counts["dropped"] == 1 and counts["unchanged"] == 1
    assert counts["changes"] == {"sport -> business": 1, "tech -> business": 1}
    plan = make_plan(**arrays, n_labels=len(names), dedupe=True, has_eval_source=False, eval_fraction=0.3, seed=0,
                     max_ratio=10.0, balance="none")
    by_key = dict(zip(plan.keys.tolist(), plan.label.tolist()))
    assert by_key[c.fix_hits["news.jsonl:3"]] == names.index("business")  # the plan carries the new label
    assert c.fix_hits["news.jsonl:7"] not in by_key  # dropped everywhere
    report = build_report(rows_read=c.rows_read, rejected=dict(c.rejected), counts=plan.counts, label_names=names,
                          blank_lines=0, train_rows=0, eval_rows=0, max_class_ratio=10.0, balance="none",
                          eval_source="x", paths={"train_dir": "o/data/train", "eval_dir": "e", "rejects_path": None},
                          fp="f", seconds=0.0, n_files=2)
    assert count_problems(report)  # the dropped row is missing from the sum ...
    report["fixes_applied"] = counts
    assert count_problems(report) == []  # ... and counted once the fixes are in the report
    assert "2 relabelled, 1 dropped, 1 confirmed" in format_report(report)


def test_a_fix_that_matches_no_record_or_names_an_unknown_label_is_an_error(tmp_path, corpus):
    _, files = corpus
    fixes = _fixes(tmp_path, "row_id,fix\nnews.jsonl:99,tech\n", files)
    c = _collect(files, fixes)
    names, arrays = c.arrays(None)
    with pytest.raises(UserError, match=r"fixes.csv, line 2: news.jsonl:99 matches no record"):
        apply_label_fixes(fixes, c.fix_hits, arrays, names)
    fixes = _fixes(tmp_path, "row_id,fix\nnews.jsonl:1,tech\nnews.jsonl:2,weather\n", files)
    c = _collect(files, fixes)
    names, arrays = c.arrays(None)
    with pytest.raises(UserError, match=r"line 3: fix 'weather' is not a label of the data"):
        apply_label_fixes(fixes, c.fix_hits, arrays, names)


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("id,label\nnews.jsonl:1,tech\n", r"line 1: the header lacks row_id \(or source and line\) and fix"),
    ("row_id,fix\nnews.jsonl:1,tech,extra\n", "line 2: expected 2 columns"),
    ('row_id,fix\n"news.jsonl:1,tech\n', "malformed CSV"),
    ("row_id,fix\nother.jsonl:1,tech\n", "line 2: row_id 'other.jsonl:1' names no input file"),
    ("row_id,fix\nnews.jsonl:abc,tech\n", "line 2: row_id 'news.jsonl:abc' names no input file"),
    ("source,line,fix\nnews.jsonl,0,tech\n", "line 2: line '0' is not a line number of news.jsonl"),
    ("source,line,fix\n,3,tech\n", "line 2: no row_id and no source"),
    ("row_id,fix\nnews.jsonl:1,tech\n\nnews.jsonl:1,sport\n", "line 4: news.jsonl:1 is fixed twice, differently "
                                                              r"\(also on line 2\)"),
])
def test_bad_fix_files_get_one_clear_error_naming_file_and_line(tmp_path, corpus, text, message):
    _, files = corpus
    with pytest.raises(UserError, match=message) as e:
        _fixes(tmp_path, text, files)
    assert "data.label_fixes" in str(e.value) and "fixes.csv" in str(e.value)


def test_known_labels_are_checked_before_reading_the_corpus(tmp_path, corpus):
    _, files = corpus
    with pytest.raises(UserError, match="line 2: fix 'weather' is not a label of the data"):
        _fixes(tmp_path, "row_id,fix\nnews.jsonl:1,weather\n", files, labels=["sport", "tech", "business"])
    ok = _fixes(tmp_path, "\ufeffrow_id,fix\nnews.jsonl:1, tech \nnews.jsonl:1,tech\n", files, labels=["tech"])
    assert [(f.line, f.label) for f in ok.fixes] == [(2, "tech")]  # BOM, spaces, an identical repeat


def test_source_may_be_the_path_of_the_file(tmp_path, corpus):
    d, files = corpus
    fixes = _fixes(tmp_path, f"source,line,fix\n{d / 'news.jsonl'},2,sport\n", files)
    assert fixes.fixes[0].source_id == "news.jsonl:2"
    assert np.array_equal(sorted(fixes.source_ids()), ["news.jsonl:2"])
