"""Reading a configured corpus in-process (no Ray): every format, cut files, bad records, duplicates."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainft.data.corpus import CorpusReader
from domainft.data.readers import ParseOptions
from domainft.data.sources import collect_sources
from domainft.errors import BadRecordError, UserError

ROWS = [{"text": f"note {i}: metformin {500 + i} mg", "label": "a" if i % 2 else "b"} for i in range(40)]


def _reader(spec, on_bad_record="error", chunk_bytes=1 << 20, fmt="auto"):
    return CorpusReader(collect_sources(str(spec), None, fmt), ParseOptions(), on_bad_record, chunk_bytes=chunk_bytes)


def test_every_format_yields_the_same_texts(tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "c.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet", row_group_size=7)
    for label in ("a", "b"):
        (tmp_path / "docs" / label).mkdir(parents=True)
    for i, r in enumerate(ROWS):
        (tmp_path / "docs" / r["label"] / f"{i:02}.txt").write_text(r["text"])
    want = sorted(r["text"] for r in ROWS)
    for spec in ("c.jsonl", "c.csv", "c.parquet", "docs"):
        reader = _reader(tmp_path / spec, chunk_bytes=200)  # JSONL cut by bytes, Parquet by row groups
        assert sorted(reader.texts()) == want, spec
        assert reader.rows_read == 40 and reader.bytes_done == pytest.approx(reader.bytes_total, abs=8), spec


def test_a_bad_line_in_a_cut_file_is_named_by_its_line(tmp_path):
    lines = [json.dumps(r) for r in ROWS]
    lines[33] = '{"text": "cut off'
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadRecordError, match=rf"^{path}, line 34: malformed JSON"):
        list(_reader(path, chunk_bytes=300).texts())
    reader = _reader(path, on_bad_record="skip", chunk_bytes=300)
    assert len(list(reader.texts())) == 39 and dict(reader.rejected) == {"malformed_json": 1}
    assert reader.rows_read == 40


def test_duplicates_and_empty_texts_are_counted_not_yielded(tmp_path):
    rows = ROWS[:5] + ROWS[:2] + [{"text": "  ", "label": "a"}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reader = _reader(path)
    assert len(list(reader.texts())) == 5 and reader.duplicates == 2 and reader.empty == 1


def test_an_unreadable_parquet_file_is_a_user_error(tmp_path):
    (tmp_path / "c.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read"):
        list(_reader(tmp_path / "c.parquet").texts())
