"""`validate` reads the data's head: the mistakes a newcomer makes first are found before Ray starts,
each naming the file and line, all in one list."""
import json

import pytest

from domainft.config import ConfigError, validate_dict
from domainft.commands.validate import run_validate
from domainft.data.head import HEAD_ROWS, head_report
from domainft.data.readers import ParseOptions


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _head(path, fmt="auto", labels=None, on_bad_record="error", **opts):
    return head_report(str(path), None, fmt, ParseOptions(labels=labels, **opts), on_bad_record)


def test_good_rows_pass_and_only_the_head_is_read(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(5000)])
    r = _head(path)
    assert r.problems == [] and (r.files, r.files_read, r.rows, r.good) == (1, 1, HEAD_ROWS, HEAD_ROWS)
    assert r.summary() == (f"data: 1 file(s); the first {HEAD_ROWS} row(s) of 1 read: {HEAD_ROWS} usable. "
                           "The rest is read by `prepare`.")


def test_a_csv_under_format_jsonl(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\nhello world,a\nbye,b\n")
    (problem,) = _head(path, fmt="jsonl").problems
    assert problem == (f"{path}, line 1: malformed JSON [malformed_json]: Expecting value at column 1; all 3 first "
                       "rows are bad (3 malformed_json): check data.format, data.text_column and data.label_column")
    assert _head(path).problems == []  # the extension says CSV


def test_an_empty_file_and_an_empty_folder(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert _head(tmp_path / "empty.jsonl").problems == [f"{tmp_path / 'empty.jsonl'}: empty file"]
    (tmp_path / "none").mkdir()
    assert _head(tmp_path / "none").problems == [f"data: {tmp_path / 'none'}: no input files found"]


def test_a_missing_text_column(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"body": "x", "label": "a"}, {"body": "y", "label": "b"}])
    (problem,) = _head(path).problems
    assert problem.startswith(f"{path}, line 1: missing text [missing_text]: no field 'text'; all 2 first rows")
    assert _head(path, text_column="body").problems == []


def test_labels_outside_data_labels_stop_in_error_mode_and_are_counted_in_skip_mode(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "c"},
                                         {"text": "z", "label": "b"}])
    (problem,) = _head(path, labels=("a", "b")).problems
    assert problem == (f"{path}, line 2: label not in data.labels [unknown_label]: label 'c' is not in data.labels; "
                       "1 of the first 3 rows are bad (1 unknown_label) (data.on_bad_record: skip writes such rows "
                       "to rejects.jsonl instead)")
    skip = _head(path, labels=("a", "b"), on_bad_record="skip")
    assert skip.problems == [] and skip.good == 2
    assert "(1 label not in data.labels would be skipped)" in skip.summary()


def test_validate_joins_data_problems_with_the_config_s(tmp_path, minilm_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\nhello,a\n")
    cfg = validate_dict({"output_dir": str(tmp_path / "o"), "data": {"train": str(path), "format": "jsonl"},
                         "model": {"name_or_path": str(minilm_path)}})
    with pytest.raises(ConfigError) as e:
        run_validate(cfg, "run.yaml")
    assert e.value.source == "run.yaml" and len(e.value.problems) == 1 and "malformed JSON" in e.value.problems[0]


def test_an_unreachable_object_store_is_a_problem_not_a_crash(monkeypatch):
    # a bucket behind an endpoint that refuses at once (pyarrow retries for a few seconds): an OSError from
    # the filesystem, which was an internal error (exit 1) before
    for k, v in {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                 "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}.items():
        monkeypatch.setenv(k, v)
    (problem,) = _head("s3://no-such-bucket/corpus.jsonl").problems
    assert problem.startswith("data: cannot list s3://no-such-bucket/corpus.jsonl: ") and "Could not connect" in problem
