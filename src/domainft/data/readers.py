"""Parse one read chunk (a file, or a line-aligned byte range of a big JSONL file) into records.

Every record comes out as a row: either good (cleaned text, label, 64-bit text hash) or rejected
with a reason, detail and the raw line, so nothing is dropped without being counted. Rows are keyed
by (file index, line or row number) so the driver can order them exactly as they were in the files.
No Ray: `distributed/datasets.py` runs `parse_chunk` inside `map_batches`.
"""
from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from domainft.data.clean import clean_label, clean_text, text_hash
from domainft.data.chunks import read_bytes
from domainft.data.sources import TEXT, filesystem

LINE_BITS = 40  # key = file index << 40 | line (or row) number
REASONS = ("malformed_json", "malformed_csv", "wrong_column_count", "missing_text", "missing_label", "bad_type",
           "empty_label", "unknown_label", "undecodable_bytes")
STATS, FATAL = "__stats__", "__fatal__"  # control rows: blank-line counts, unreadable files (never records)
_MARK = "\udc80"  # a lone surrogate: no strict decoder emits one, so it marks bytes that did not decode
codecs.register_error("domainft.mark", lambda e: (_MARK, e.end))
csv.field_size_limit(2**31 - 1)  # whole documents in one field are normal here
_RAW_CHARS = 2000
_ROWS_PER_TABLE = 20_000
_MISSING = object()

SCHEMA = pa.schema([("key", pa.int64()), ("split", pa.int8()), ("text", pa.string()), ("label", pa.string()),
                    ("source_id", pa.string()), ("h", pa.uint64()), ("empty", pa.bool_()),
                    ("reason", pa.string()), ("detail", pa.string()), ("raw", pa.string())])


@dataclass(frozen=True)
class ParseOptions:
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    labels: Optional[tuple[str, ...]] = None  # explicit label set: anything else is `unknown_label`
    nfkc: bool = False
    unescape_html: bool = False


def key_of(fidx: int, line: int) -> int:
    return (fidx << LINE_BITS) | line


def split_key(key: int) -> tuple[int, int]:
    return key >> LINE_BITS, key & ((1 << LINE_BITS) - 1)


class _Rows:
    """Column buffers for one chunk's output."""

    def __init__(self, chunk: dict, opts: ParseOptions):
        self.chunk, self.opts = chunk, opts
        self.labels = frozenset(opts.labels) if opts.labels is not None else None
        self.cols: dict[str, list] = {f.name: [] for f in SCHEMA}
        self.blank = 0

    def _add(self, line, sid, text, label, h, empty, reason, detail, raw):
        c = self.cols
        c["key"].append(key_of(self.chunk["fidx"], line) if line >= 0 else line)
        c["split"].append(self.chunk["split"])
        c["text"].append(text)
        c["label"].append(label)
        c["source_id"].append(sid)
        c["h"].append(h)
        c["empty"].append(empty)
        c["reason"].append(reason)
        c["detail"].append(detail)
        c["raw"].append(raw)

    def bad(self, line: int, sid: str, reason: str, detail: str, raw) -> None:
        raw = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        self._add(line, sid, None, None, 0, False, reason, detail, raw.replace(_MARK, "\ufffd")[:_RAW_CHARS])

    def record(self, line: int, sid: str, text, label, raw, kind: str = "field", columns: str = "") -> None:
        """Validate one record's text and label values (`_MISSING` when the field is absent)."""
        tc, lc, enc = self.opts.text_column, self.opts.label_column, self.opts.encoding
        have = f" (columns: {columns})" if columns else ""
        if text is _MISSING:
            return self.bad(line, sid, "missing_text", f"no {kind} {tc!r}{have}", raw)
        if text is None:
            return self.bad(line, sid, "missing_text", f"{kind} {tc!r} is null", raw)
        if label is _MISSING:
            return self.bad(line, sid, "missing_label", f"no {kind} {lc!r}{have}", raw)
        if isinstance(text, bytes):
            text = text.decode(enc, "domainft.mark")
        if not isinstance(text, str):
            return self.bad(line, sid, "bad_type", f"{kind} {tc!r} is {type(text).__name__}, expected a string", raw)
        if _MARK in text:
            return self.bad(line, sid, "undecodable_bytes", f"{kind} {tc!r} is not valid {enc}", raw)
        value, problem = clean_label(label)
        if problem:
            detail = {"missing_label": f"{kind} {lc!r} is null", "empty_label": f"{kind} {lc!r} is empty",
                      "bad_type": f"{kind} {lc!r} is {type(label).__name__}, expected a string or integer"}[problem]
            return self.bad(line, sid, problem, detail, raw)
        if self.labels is not None and value not in self.labels:
            return self.bad(line, sid, "unknown_label", f"label {value!r} is not in data.labels", raw)
        cleaned = clean_text(text, self.opts.nfkc, self.opts.unescape_html)
        self._add(line, sid, cleaned, value, text_hash(cleaned) if cleaned else 0, not cleaned, None, None, None)

    def full(self) -> bool:
        return len(self.cols["key"]) >= _ROWS_PER_TABLE

    def take(self, final: bool = False) -> pa.Table:
        if final and self.blank:
            self._add(-1 - self.chunk["fidx"], "", None, None, 0, False, STATS, json.dumps({"blank_lines": self.blank}),
                      None)
            self.blank = 0
        table = pa.table(self.cols, schema=SCHEMA)
        self.cols = {f.name: [] for f in SCHEMA}
        return table


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()  # the end of the last line, not a line
    return parts


def _jsonl(rows: _Rows, text: str, first: int) -> Iterator[pa.Table]:
    name = rows.chunk["name"]
    for i, line in enumerate(_lines(text)):
        if i == 0 and first == 1:
            line = line.lstrip("\ufeff")
        lineno, line = first + i, line.rstrip("\r")
        if not line.strip():
            rows.blank += 1
            continue
        sid = f"{name}:{lineno}"
        if _MARK in line:
            rows.bad(lineno, sid, "undecodable_bytes", f"not valid {rows.opts.encoding} at column "
                     f"{line.index(_MARK) + 1}", line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.bad(lineno, sid, "malformed_json", f"{e.msg} at column {e.colno}", line)
            continue
        if not isinstance(obj, dict):
            rows.bad(lineno, sid, "malformed_json", f"expected a JSON object, got {type(obj).__name__}", line)
            continue
        rows.record(lineno, sid, obj.get(rows.opts.text_column, _MISSING), obj.get(rows.opts.label_column, _MISSING),
                    line)
        if rows.full():
            yield rows.take()


def _csv(rows: _Rows, text: str, delimiter: str) -> Iterator[pa.Table]:
    """CSV (RFC 4180 quoting; a quoted field may span lines) or TSV (no quoting: one line per record)."""
    name, opts = rows.chunk["name"], rows.opts
    lines = [ln + "\n" for ln in _lines(text.lstrip("\ufeff"))]
    bad_lines = {i + 1 for i, ln in enumerate(lines) if _MARK in ln}
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    reader = csv.reader(iter(lines), delimiter=delimiter, quoting=quoting)
    header: Optional[list[str]] = None
    while True:
        first = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.bad(first, f"{name}:{first}", "malformed_csv", str(e), "".join(lines[first - 1:reader.line_num]))
            if reader.line_num < first:
                break
            continue
        last, raw = reader.line_num, "".join(lines[first - 1:reader.line_num]).rstrip("\r\n")
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            rows.blank += 1
            continue
        if header is None:
            header = [h.strip() for h in rec]
            idx = {h: i for i, h in enumerate(header)}
            ti, li = idx.get(opts.text_column), idx.get(opts.label_column)
            cols = ", ".join(header)
            continue
        sid = f"{name}:{first}"
        if any(i in bad_lines for i in range(first, last + 1)):
            rows.bad(first, sid, "undecodable_bytes", f"not valid {opts.encoding}", raw)
        elif len(rec) != len(header):
            rows.bad(first, sid, "wrong_column_count", f"expected {len(header)} columns, got {len(rec)}", raw)
        else:
            rows.record(first, sid, rec[ti] if ti is not None else _MISSING, rec[li] if li is not None else _MISSING,
                        raw, "column", cols)
        if rows.full():
            yield rows.take()


def _document(rows: _Rows, data: bytes) -> Iterator[pa.Table]:
    """Folder-per-label: the whole file is one text, its label the top folder's name."""
    name, enc = rows.chunk["name"], rows.opts.encoding
    try:
        text = data.decode(enc).lstrip("\ufeff")
    except UnicodeDecodeError as e:
        rows.bad(0, name, "undecodable_bytes", f"byte 0x{data[e.start]:02x} at offset {e.start} is not valid {enc}",
                 data.decode(enc, "replace"))
        return
    if not rows.chunk["label"]:
        rows.bad(0, name, "missing_label", "file is not inside a label folder", text)
    else:
        rows.record(0, name, text, rows.chunk["label"], text)
    yield from ()


def _parquet(rows: _Rows) -> Iterator[pa.Table]:
    chunk, opts = rows.chunk, rows.opts
    fs, path = filesystem(chunk["uri"])
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        wanted = [c for c in (opts.text_column, opts.label_column) if c in names]
        cols = ", ".join(names)
        groups = range(pf.num_row_groups) if chunk["end"] < 0 else range(chunk["start"], chunk["end"])
        row = chunk["line0"]
        for g in groups:
            table = pf.read_row_group(g, columns=wanted)
            texts = table.column(opts.text_column).to_pylist() if opts.text_column in wanted else None
            labels = table.column(opts.label_column).to_pylist() if opts.label_column in wanted else None
            for i in range(table.num_rows):
                row += 1
                text = texts[i] if texts is not None else _MISSING
                label = labels[i] if labels is not None else _MISSING
                raw = {opts.text_column: None if text is _MISSING else text,
                       opts.label_column: None if label is _MISSING else label}
                rows.record(row, f"{chunk['name']}:row{row}", text, label, raw, "column", cols)
                if rows.full():
                    yield rows.take()


def parse_chunk(chunk: dict, opts: ParseOptions) -> Iterator[pa.Table]:
    """Rows of one chunk as Arrow tables of `SCHEMA` (good and rejected records, plus control rows).

    An unreadable file (missing, permission, corrupt Parquet) becomes one `__fatal__` control row:
    the driver turns it into a UserError instead of a Ray traceback.
    """
    rows = _Rows(chunk, opts)
    try:
        if chunk["fmt"] == "parquet":
            yield from _parquet(rows)
        else:
            data, first = read_bytes(chunk)
            if chunk["fmt"] == TEXT:
                yield from _document(rows, data)
            else:
                text = data.decode(opts.encoding, "domainft.mark")
                if chunk["fmt"] == "jsonl":
                    yield from _jsonl(rows, text, first)
                else:
                    yield from _csv(rows, text, "," if chunk["fmt"] == "csv" else "\t")
    except (OSError, pa.ArrowException) as e:
        rows.cols = {f.name: [] for f in SCHEMA}
        rows._add(-1 - chunk["fidx"], "", None, None, 0, False, FATAL, f"cannot read {chunk['uri']}: {e}", None)
    yield rows.take(final=True)
