"""Reading and validating records without Ray: every bad-record kind, line numbers, formats, chunking;
CSV and TSV as exporters write them (quoted fields spanning lines, doubled quotes, embedded tabs),
cut into chunks at record starts, and streamed in bounded pieces."""
import csv
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainft.data import chunks as chunks_mod
from domainft.data.chunks import align_chunks, ascii_compatible, needs_scan, plan_chunks, scan_chunk
from domainft.data.delimited import detect_quoting
from domainft.data.readers import FATAL, STATS, ParseOptions, parse_chunk, split_key
from domainft.data.sources import collect_sources

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "bad"


def read_chunks(spec, chunk_bytes=1 << 30, fmt="auto", quoting="auto", encoding="utf-8"):
    """The chunks prepare reads, planned, scanned and aligned as `distributed.datasets.parse` does."""
    files = collect_sources(str(spec), None, fmt)
    chunks = plan_chunks(files, chunk_bytes, ascii_compatible(encoding), quoting)
    return align_chunks(chunks, [scan_chunk(c, encoding) if needs_scan(c) else None for c in chunks])


def parse(spec, chunk_bytes=1 << 30, fmt="auto", quoting="auto", **opts):
    o = ParseOptions(**opts)
    chunks = read_chunks(spec, chunk_bytes, fmt, quoting, o.encoding)
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


WORDS = ["battery", "screen", "5mm", "great", "slow", "refund", "colour", "case", "the", "it", "and", "was"]


def reviews(n, seed=0):
    """Review texts with what exporters must quote: commas, tabs, newlines, quotes, and a CRLF."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        extra = rng.random()
        if extra < 0.15:
            words.insert(rng.randint(0, len(words)), "\n")  # spans lines
        elif extra < 0.25:
            words.insert(rng.randint(0, len(words)), '"quoted"')
        elif extra < 0.3:
            words.insert(rng.randint(0, len(words)), "tab\there")
        elif extra < 0.35:
            words.insert(0, '"lead')  # starts with a quote
        elif extra < 0.4:
            words.insert(1, ",")
        elif extra < 0.42:
            words.insert(1, "\r\n")
        out.append({"text": " ".join(words), "label": "pos" if i % 3 else "neg"})
    return out


def texts_of(rows):
    return [(r["text"], r["label"]) for r in records(rows) if not r["reason"]]


def first_lines(path, rows, delimiter):
    """The line of each record's first line, counted independently with the csv module."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        next(reader)
        starts = []
        while True:
            at = reader.line_num + 1
            try:
                next(reader)
            except StopIteration:
                return starts
            starts.append(at)


@pytest.mark.parametrize("chunk_bytes", [3, 64, 333, 1 << 30])
def test_pandas_tsv_every_record_once_without_quotes_at_its_first_line(tmp_path, chunk_bytes):
    rows = reviews(300)
    path = tmp_path / "reviews.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    assert sum(1 for r in rows if "\n" in r["text"]) > 40 and '""' in path.read_text(encoding="utf-8")
    got = parse(path, chunk_bytes=chunk_bytes)
    assert bad(got) == [] and len(records(got)) == len(rows)  # rows read = records, not lines
    assert texts_of(got) == [(" ".join(r["text"].split()), r["label"]) for r in rows]  # no literal quotes left
    assert [split_key(r["key"])[1] for r in records(got)] == first_lines(path, rows, "\t")
    assert [r["source_id"] for r in records(got)] == [f"reviews.tsv:{n}" for n in first_lines(path, rows, "\t")]
    n_chunks = len(read_chunks(path, chunk_bytes))
    assert n_chunks > 1 if chunk_bytes < 1000 else n_chunks == 1


@pytest.mark.parametrize("chunk_bytes", [1, 5, 40, 1 << 30])
def test_quoted_csv_cut_into_chunks_reads_as_whole_with_exact_error_lines(tmp_path, chunk_bytes):
    rows = reviews(120, seed=1)
    path = tmp_path / "r.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i, r in enumerate(rows):
            if i == 70:
                f.write('pos,"a broken\nrecord",extra\n')  # two lines, three columns: a bad record at its first line
            if i == 90:
                f.write("\n")
            w.writerow([r["label"], r["text"]])
    whole, cut = parse(path), parse(path, chunk_bytes=chunk_bytes)
    strip = (lambda rows: [(r["key"], r["text"], r["source_id"], r["reason"]) for r in records(rows)])
    assert strip(cut) == strip(whole)
    assert texts_of(whole) == [(" ".join(r["text"].split()), r["label"]) for r in rows]
    (broken,) = [r for r in records(cut) if r["reason"]]
    text = path.read_text(encoding="utf-8")
    assert broken["reason"] == "wrong_column_count" and broken["raw"] == 'pos,"a broken\nrecord",extra'
    line = text[:text.index('pos,"a broken')].count("\n") + 1
    assert broken["source_id"] == f"r.csv:{line}" and split_key(broken["key"])[1] == line
    assert sum(json.loads(r["detail"])["blank_lines"] for r in cut if r["reason"] == STATS) == 1


def test_a_quote_outside_the_grammar_reads_the_file_whole_as_the_csv_module_does(tmp_path):
    lines = ["text,label", 'a 5" screen,pos'] + [f'"multi\nline {i}",neg' for i in range(30)]
    path = tmp_path / "bare.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(read_chunks(path, 16)) == 1  # quote parity does not give record starts here
    got = parse(path, chunk_bytes=16)
    assert texts_of(got)[:2] == [('a 5" screen', "pos"), ("multi line 0", "neg")] and len(records(got)) == 31
    assert [r["source_id"] for r in records(got)][:3] == ["bare.csv:2", "bare.csv:3", "bare.csv:5"]


def test_a_bom_and_a_quoted_header_still_cut_at_record_starts(tmp_path):
    body = '"text","label"\r\n' + "".join(f'"row {i},\r\nsecond line",{"ab"[i % 2]}\r\n' for i in range(20))
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert len(read_chunks(tmp_path / "excel.csv", 50)) > 5
    got = parse(tmp_path / "excel.csv", chunk_bytes=50)
    assert texts_of(got) == [(f"row {i}, second line", "ab"[i % 2]) for i in range(20)]
    assert [r["source_id"] for r in records(got)][:2] == ["excel.csv:2", "excel.csv:4"]


def test_tsv_quoting_none_keeps_bare_quotes_and_auto_agrees(tmp_path):
    body = 'text\tlabel\n"Great" product\tpos\nhe said "no\tneg\n"\tneg\n'
    (tmp_path / "a.tsv").write_text(body, encoding="utf-8")
    want = [('"Great" product', "pos"), ('he said "no', "neg"), ('"', "neg")]
    assert texts_of(parse(tmp_path / "a.tsv", quoting="none")) == want
    assert texts_of(parse(tmp_path / "a.tsv", chunk_bytes=3, quoting="none")) == want
    assert texts_of(parse(tmp_path / "a.tsv")) == want  # no well-formed quoted field: read literally
    quoted = texts_of(parse(tmp_path / "a.tsv", quoting="csv"))
    assert quoted[0] == ("Great product", "pos")  # what the csv module makes of it, when asked


def test_auto_quoting_rule():
    assert detect_quoting('a\tb\n"x ""y"" z"\t1\n') == "csv"
    assert detect_quoting('a\tb\nx\t"spans\nlines"\n') == "csv"
    assert detect_quoting('a\tb\r\n"crlf"\t1\r\n') == "csv"
    assert detect_quoting('a\tb\n"Great" product\t1\nhe said "x"\t2\n') == "none"
    assert detect_quoting('a\tb\nplain\t1\n') == "none"


def test_csv_and_tsv_are_cut_when_big_and_compressed_files_stream_in_bounded_memory(tmp_path):
    rows = [{"text": f"row {i} " + "word " * 40, "label": "ab"[i % 2]} for i in range(40_000)]
    pd.DataFrame(rows).to_csv(tmp_path / "big.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "big.tsv", sep="\t", index=False)
    for name in ("big.csv", "big.tsv"):
        assert len(read_chunks(tmp_path / name, 1 << 20)) >= 4, name
    with gzip.open(tmp_path / "big.tsv.gz", "wb") as f:
        f.write((tmp_path / "big.tsv").read_bytes())
    size = (tmp_path / "big.tsv").stat().st_size
    assert size > 8 << 20
    # Measured in a fresh process, as a read task is: Arrow's own pool (tracemalloc cannot see it, and the
    # tables are Arrow's), Python's heap, and the process's resident memory (its high-water mark).
    code = """
import os, sys, tracemalloc
import pyarrow as pa
from domainft.data import readers
from domainft.data.chunks import align_chunks, ascii_compatible, needs_scan, plan_chunks, scan_chunk
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.sources import collect_sources

def status_kb(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

readers._TABLE_CHARS = 1 << 20
chunks = plan_chunks(collect_sources(sys.argv[1], None, "auto"), 1 << 20, ascii_compatible("utf-8"), "auto")
(chunk,) = align_chunks(chunks, [scan_chunk(c, "utf-8") if needs_scan(c) else None for c in chunks])
next(parse_chunk(chunk, ParseOptions()))  # warm: the modules the reader imports lazily (~30 MB at first use)
pool = pa.proxy_memory_pool(pa.default_memory_pool())  # counts only what this parse allocates in Arrow
pa.set_memory_pool(pool)
open("/proc/self/clear_refs", "w").write("5")  # the resident high-water mark starts again from here
rss_before, n, tables = status_kb("VmRSS"), 0, 0
tracemalloc.start()
for table in parse_chunk(chunk, ParseOptions()):
    n, tables = n + table.num_rows, tables + 1
print(n, tables, tracemalloc.get_traced_memory()[1], pool.max_memory(), (status_kb("VmHWM") - rss_before) * 1024,
      flush=True)
os._exit(0)  # the proxy pool must outlive every buffer it gave: skip the interpreter's teardown
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.tsv.gz")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    n, tables, python_peak, arrow_peak, rss_growth = map(int, out.stdout.split())
    assert n == len(rows) and tables >= 8  # yielded as it goes, not at the end
    # Bounded by the piece and table sizes, not the file: reading it whole held its bytes, their text
    # and its lines (about 5x the file: 40 MB here), and one table of all rows (Arrow: about the file).
    assert python_peak < 6 << 20, (python_peak, size)
    assert arrow_peak < 8 << 20, (arrow_peak, size)
    assert rss_growth < 24 << 20, (rss_growth, size)
    assert chunks_mod.PIECE_BYTES <= 1 << 20


def _random_delimited(rng: random.Random, delimiter: str, bare: bool) -> str:
    """A small CSV/TSV with what breaks naive cutting: quoted fields holding delimiters, newlines, CRLF and
    doubled quotes, blank lines, short rows, a missing final newline; with `bare`, stray quotes too."""
    pieces = ["a", "b", " ", ",", "\t", '""', "\n", "\r\n", "é"] + (['"', "\r"] if bare else [])

    def field():
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if bare:
            return s
        if rng.random() < 0.6:
            return '"' + s.replace('"', '""') + '"'
        return "".join(c for c in s if c not in '"\r\n' + delimiter)

    lines = ["text" + delimiter + "label"]
    for _ in range(rng.randint(1, 25)):
        lines.append(field() if rng.random() < 0.1 else field() + delimiter + rng.choice(["x", "y", '"y"']))
        if rng.random() < 0.1:
            lines.append("")
    return "\n".join(lines) + ("\n" if rng.random() < 0.7 else "")


@pytest.mark.parametrize("seed", range(30))
def test_cut_delimited_files_read_exactly_as_whole_ones(tmp_path, seed):
    rng = random.Random(seed)
    fmt = "csv" if seed % 2 else "tsv"
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(_random_delimited(rng, "," if fmt == "csv" else "\t", bare=seed % 3 == 0).encode("utf-8"))
    strip = (lambda rows: [(r["key"], r["text"], r["label"], r["reason"], r["raw"]) for r in records(rows)])
    for quoting in ("auto", "csv", "none"):
        whole = strip(parse(path, quoting=quoting))
        for chunk_bytes in (1, 4, 13):
            assert strip(parse(path, chunk_bytes=chunk_bytes, quoting=quoting)) == whole, (quoting, chunk_bytes)
