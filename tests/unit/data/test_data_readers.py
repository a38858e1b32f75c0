"""Reading and validating records without Ray: every bad-record kind, line numbers, formats, chunking."""
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainft.data.chunks import count_newlines, needs_line_count, plan_chunks, set_line_offsets
from domainft.data.readers import FATAL, STATS, ParseOptions, parse_chunk, split_key
from domainft.data.sources import collect_sources

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "bad"


def parse(spec, chunk_bytes=1 << 30, **opts):
    files = collect_sources(str(spec), None, opts.pop("fmt", "auto"))
    o = ParseOptions(**opts)
    chunks = plan_chunks(files, chunk_bytes, "\n".encode(o.encoding) == b"\n")
    chunks = set_line_offsets(chunks, [count_newlines(c) if needs_line_count(c) else None for c in chunks])
    tables = [t for c in chunks for t in parse_chunk(c, o)]
    return pa.concat_tables(tables).to_pylist()


def records(rows):
    return [r for r in rows if not (r["reason"] or "").startswith("__")]


def bad(rows):
    return [(r["source_id"], r["reason"]) for r in records(rows) if r["reason"]]


@pytest.mark.parametrize("name, labels, expected", [
    ("malformed_json.jsonl", None, [("malformed_json.jsonl:3", "malformed_json")]),
    ("missing_text.jsonl", None, [("missing_text.jsonl:2", "missing_text")]),
    ("missing_label.jsonl", None, [("missing_label.jsonl:4", "missing_label")]),
    ("empty_label.jsonl", None, [("empty_label.jsonl:2", "empty_label")]),
    ("unknown_label.jsonl", ("neg", "pos"), [("unknown_label.jsonl:3", "unknown_label")]),
    ("unknown_label.jsonl", None, []),
    ("latin1.jsonl", None, [("latin1.jsonl:2", "undecodable_bytes")]),
    ("wrong_columns.csv", None, [("wrong_columns.csv:3", "wrong_column_count")]),
    ("wrong_columns.tsv", None, [("wrong_columns.tsv:4", "wrong_column_count")]),
    ("latin1_folder", None, [("neg/02.txt", "undecodable_bytes")]),
])
def test_each_bad_record_kind_is_found_at_its_line(name, labels, expected):
    rows = parse(BAD / name, labels=labels)
    assert bad(rows) == expected
    assert all(r["label"] in ("neg", "pos", "maybe") for r in records(rows) if not r["reason"])


def test_latin1_reads_cleanly_with_the_right_encoding():
    rows = parse(BAD / "latin1.jsonl", encoding="latin-1")
    assert bad(rows) == [] and records(rows)[1]["text"] == "Le café est froid."


def test_csv_quoted_field_spanning_lines_is_one_record():
    good = [r for r in parse(BAD / "wrong_columns.csv") if not r["reason"]]
    assert [(r["source_id"], r["text"]) for r in good] == [
        ("wrong_columns.csv:2", "Great value, would buy again."), ("wrong_columns.csv:4", "Camera is sharp."),
        ("wrong_columns.csv:5", "The case feels cheap.")]


def test_tsv_keeps_quotes_literally(tmp_path):
    (tmp_path / "a.tsv").write_text('label\ttext\npos\tHe said "great" twice\n', encoding="utf-8")
    assert [r["text"] for r in parse(tmp_path / "a.tsv")] == ['He said "great" twice']


def test_missing_column_names_the_columns(tmp_path):
    (tmp_path / "a.csv").write_text("body,label\nhello,pos\n", encoding="utf-8")
    (r,) = parse(tmp_path / "a.csv")
    assert r["reason"] == "missing_text" and r["detail"] == "no column 'text' (columns: body, label)"


def test_json_values_of_the_wrong_type_and_null(tmp_path):
    lines = ['[1, 2]', '{"text": 5, "label": "a"}', '{"text": null, "label": "a"}', '{"text": "x", "label": null}',
             '{"text": "x", "label": {"k": 1}}', '{"text": "ok", "label": 3}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines), encoding="utf-8")  # no final newline
    rows = parse(tmp_path / "a.jsonl")
    assert [r["reason"] for r in rows] == ["malformed_json", "bad_type", "missing_text", "missing_label", "bad_type",
                                           None]
    assert rows[-1]["label"] == "3" and rows[0]["detail"] == "expected a JSON object, got list"


def test_blank_lines_bom_crlf_and_empty_text(tmp_path):
    data = '\ufeff{"text": "a", "label": "x"}\r\n\r\n   \n{"text": " \\n ", "label": "y"}\r\n'
    (tmp_path / "a.jsonl").write_bytes(data.encode("utf-8"))
    rows = parse(tmp_path / "a.jsonl")
    recs = records(rows)
    assert [(r["source_id"], r["text"], r["empty"]) for r in recs] == [("a.jsonl:1", "a", False),
                                                                        ("a.jsonl:4", "", True)]
    assert [json.loads(r["detail"]) for r in rows if r["reason"] == STATS] == [{"blank_lines": 2}]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 17, 64, 10_000])
def test_cut_jsonl_chunks_give_the_same_rows_and_line_numbers(tmp_path, chunk_bytes):
    lines = []
    for i in range(40):
        lines.append(json.dumps({"text": f"row {i} " + "word " * (i % 7), "label": "ab"[i % 2]}))
        if i % 9 == 0:
            lines.append("")
        if i % 13 == 0:
            lines.append("{broken")
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole, cut = parse(tmp_path / "a.jsonl"), parse(tmp_path / "a.jsonl", chunk_bytes=chunk_bytes)
    strip = (lambda rows: [(r["key"], r["text"], r["source_id"], r["reason"]) for r in records(rows)])
    assert strip(cut) == strip(whole)
    assert sum(json.loads(r["detail"])["blank_lines"] for r in cut if r["reason"] == STATS) == 5
    for r in records(whole):
        line = split_key(r["key"])[1]
        assert r["source_id"] == f"a.jsonl:{line}"
        assert lines[line - 1] and (r["reason"] or json.loads(lines[line - 1])["label"] == r["label"])


def test_parquet_rows_row_groups_nulls_and_int_labels(tmp_path):
    texts = [f"doc {i}" for i in range(10)]
    texts[4] = None
    table = pa.table({"text": texts, "label": list(range(10)), "other": [1.0] * 10})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=3)
    for chunk_bytes in (1, 1 << 30):  # one chunk per row group, or one for the file
        rows = records(parse(tmp_path / "a.parquet", chunk_bytes=chunk_bytes))
        assert [r["source_id"] for r in rows] == [f"a.parquet:row{i}" for i in range(1, 11)]
        assert [r["reason"] for r in rows] == [None] * 4 + ["missing_text"] + [None] * 5
        assert rows[9]["label"] == "9"


def test_parquet_missing_label_column(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "a.parquet")
    rows = parse(tmp_path / "a.parquet")
    assert [r["reason"] for r in rows] == ["missing_label"] * 2 and "(columns: text)" in rows[0]["detail"]


def test_utf16_and_gzip(tmp_path):
    body = '{"text": "héllo", "label": "a"}\n{"text": "wörld", "label": "b"}\n'
    (tmp_path / "u.jsonl").write_bytes(body.encode("utf-16"))
    assert [r["text"] for r in parse(tmp_path / "u.jsonl", chunk_bytes=4, encoding="utf-16")] == ["héllo", "wörld"]
    with gzip.open(tmp_path / "g.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(body)
    assert [r["source_id"] for r in parse(tmp_path / "g.jsonl.gz", chunk_bytes=4)] == ["g.jsonl.gz:1", "g.jsonl.gz:2"]


def test_unreadable_file_is_a_fatal_control_row(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    rows = parse(tmp_path / "a.parquet")
    assert [r["reason"] for r in rows] == [FATAL] and "a.parquet" in rows[0]["detail"]


def test_folder_documents_take_the_top_folder_as_label(tmp_path):
    (tmp_path / "pos" / "sub").mkdir(parents=True)
    (tmp_path / "pos" / "sub" / "1.txt").write_text("nested  doc", encoding="utf-8")
    (tmp_path / "stray.txt").write_text("no label", encoding="utf-8")
    rows = parse(tmp_path)
    assert [(r["source_id"], r["label"], r["reason"]) for r in rows] == [("pos/sub/1.txt", "pos", None),
                                                                         ("stray.txt", None, "missing_label")]
