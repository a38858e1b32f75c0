"""Collecting parsed rows on the driver, the report's arithmetic and its table, the fingerprint."""
import io
import json
from pathlib import Path

import numpy as np

from domainft.data.collect import Collector
from domainft.data.plan import make_plan
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.report import REQUIRED_KEYS, build_report, count_problems, fingerprint, format_report
from domainft.data.chunks import plan_chunks
from domainft.data.sources import collect_sources
from domainft.errors import BadRecordError

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "bad"


def collect(spec, labels=None, rejects=None):
    files = collect_sources(str(spec), None, "auto")
    c = Collector(files, rejects)
    for chunk in plan_chunks(files, 1 << 30):
        for t in parse_chunk(chunk, ParseOptions(labels=labels)):
            c.add(t)
    return c


def test_first_error_names_file_line_and_problem():
    err = collect(BAD / "*").first_error()
    assert isinstance(err, BadRecordError)
    assert str(err).startswith(f"{BAD / 'empty_label.jsonl'}, line 2: empty label [empty_label]: field 'label' is "
                               f"empty (set data.on_bad_record: skip")


def test_folder_file_error_says_whole_file_and_byte():
    err = collect(BAD / "latin1_folder").first_error()
    assert str(err).startswith(f"{BAD / 'latin1_folder/neg/02.txt'}, whole file: undecodable bytes "
                               "[undecodable_bytes]: byte 0xe8 at offset 2 is not valid utf-8")


def test_rejects_are_written_with_reason_and_counted():
    buf = io.StringIO()
    c = collect(BAD / "*", labels=("neg", "pos"), rejects=buf)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert dict(c.rejected) == {"empty_label": 1, "undecodable_bytes": 1, "malformed_json": 1, "missing_label": 1,
                                "missing_text": 1, "unknown_label": 1, "wrong_column_count": 2}
    assert len(lines) == 8 and c.rows_read == 28
    assert {(x["source"].rsplit("/", 1)[1], x["where"], x["reason"]) for x in lines} >= {
        ("wrong_columns.csv", "line 3", "wrong_column_count"), ("latin1.jsonl", "line 2", "undecodable_bytes")}
    names, arrays = c.arrays(["neg", "pos"])
    assert names == ["neg", "pos"] and len(arrays["keys"]) == 20
    assert set(arrays["labels"].tolist()) == {0, 1}


def _report(**over):
    labels = np.array([0] * 30 + [1] * 5)
    n = len(labels)
    plan = make_plan(np.arange(n), np.zeros(n), labels, np.zeros(n, bool), np.arange(n, dtype=np.uint64), 2,
                     dedupe=True, has_eval_source=False, eval_fraction=0.2, seed=1, max_ratio=2.0, balance="oversample")
    kw = dict(rows_read=n + 3, rejected={"malformed_json": 3}, counts=plan.counts, label_names=["a", "b"],
              blank_lines=1, train_rows=sum(plan.counts["train_after"]), eval_rows=sum(plan.counts["eval"]),
              max_class_ratio=2.0, balance="oversample", eval_source="held out", n_files=1, fp="f", seconds=1.0,
              paths={"train_dir": "/o/data/train", "eval_dir": "/o/data/eval", "rejects_path": "/o/data/rejects.jsonl"})
    kw.update(over)
    return build_report(**kw)


def test_report_has_the_contract_keys_and_adds_up():
    r = _report()
    assert set(REQUIRED_KEYS) <= set(r)
    assert count_problems(r) == []
    assert r["label_map"] == {"a": 0, "b": 1} and r["label_names"] == ["a", "b"]
    assert r["max_class_ratio_before"] == 6.0 and r["max_class_ratio_after"] <= 2.0
    assert count_problems(_report(rows_read=99))[0].startswith("rows_read 99 !=")


def test_table_shows_counts_and_classes():
    text = format_report(_report())
    assert "rows read" in text and "malformed_json 3" in text and "rejects: /o/data/rejects.jsonl" in text
    assert any(line.split()[:2] == ["b", "1"] for line in text.splitlines())


def test_fingerprint_changes_with_any_input():
    base = dict(data={"train": "x"}, augment={}, model={"name_or_path": "m", "revision": None}, seed=1,
                inputs=[["/f", 1, 2]])
    fp = fingerprint(**base)
    assert fp == fingerprint(**base)
    for key, value in (("data", {"train": "y"}), ("model", {"name_or_path": "n", "revision": None}),
                       ("model", {"name_or_path": "m", "revision": "v2"}), ("seed", 2), ("inputs", [["/f", 1, 3]]),
                       ("augment", {"enabled": True})):
        assert fingerprint(**{**base, key: value}) != fp
