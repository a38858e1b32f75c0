"""Parse one read chunk (a file, or a record-aligned byte range of a big JSONL / CSV / TSV file) into records.

Every record comes out as a row: either good (cleaned text, label, 64-bit text hash) or rejected
with a reason, detail and the raw record, so nothing is dropped without being counted. Rows are keyed
by (file index, line of the record's first line, or row number) so the driver can order them exactly
as they were in the files. Input is streamed in bounded pieces and tables are yielded as they fill,
so a task's memory follows the table size, not the file size.
No Ray: `distributed/datasets.py` runs `parse_chunk` inside `map_batches`.
"""
from __future__ import annotations

import codecs
import functools
import json
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from domainft.data.clean import clean_label, clean_text, text_hash
from domainft.data.chunks import file_quoting, open_lines, read_whole
from domainft.data.delimited import DELIMITERS, records
from domainft.data.sources import TEXT, filesystem

LINE_BITS = 40  # key = file index << 40 | line (or row) number
REASONS = ("malformed_json", "malformed_csv", "wrong_column_count", "missing_text", "missing_label", "bad_type",
           "empty_label", "unknown_label", "undecodable_bytes",
           # task sft (domainft.data.chat)
           "unknown_format", "unknown_role", "no_assistant_turn", "empty_answer", "empty_message",
           "template_not_incremental", "template_error")
# task sft: a conversation record's label (one class; the split, dedupe and counts are those of classification).
CONVERSATION = "conversation"
STATS, FATAL = "__stats__", "__fatal__"  # control rows: blank-line counts, unreadable files (never records)
_MARK = "\udc80"  # a lone surrogate: no strict decoder emits one, so it marks bytes that did not decode
_ERRORS = "domainft.mark"
codecs.register_error(_ERRORS, lambda e: (_MARK, e.end))
_RAW_CHARS = 2000
_ROWS_PER_TABLE = 20_000
_TABLE_CHARS = 16 * 1024**2  # ... or this much text and raw: a table (and a Ray block) stays small
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
    # task sft: records are conversations in this chat format (domainft.data.chat; `auto`: by their keys) and
    # come out as text = the canonical messages as JSON, label = CONVERSATION. None: text and label columns.
    chat_format: Optional[str] = None
    # task sft: the chat encoder's spec as JSON (data.chat.chat_encoder_from_spec): each conversation is rendered
    # with the run's template here, so one the template cannot mask is a bad record with its file and line
    # (template_not_incremental, template_error) rather than a failed prepare. None: not checked (validate).
    chat_check: Optional[str] = None


@functools.lru_cache(maxsize=2)
def _chat_checker(spec: str):
    """The run's chat encoder, built once per worker process (a Ray Data task's process is reused)."""
    from domainft.data.chat import chat_encoder_from_spec

    return chat_encoder_from_spec(json.loads(spec), 1 << 30)


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
        self.blank = self.chars = 0

    def _add(self, line, sid, text, label, h, empty, reason, detail, raw):
        c = self.cols
        self.chars += len(text or "") + len(raw or "")
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

    def conversation(self, line: int, sid: str, obj, raw) -> None:
        """Validate one chat record (task sft) into the canonical conversation, or reject it with the reason."""
        from domainft.data.chat import RecordError, to_messages

        try:
            messages = to_messages(obj, self.opts.chat_format)
            if self.opts.chat_check:
                _chat_checker(self.opts.chat_check).check(messages)
        except RecordError as e:
            return self.bad(line, sid, e.reason, e.detail, raw)
        text = json.dumps(messages, ensure_ascii=False)
        if _MARK in text:
            return self.bad(line, sid, "undecodable_bytes", f"not valid {self.opts.encoding}", raw)
        # No cleaning: whitespace and markup inside answers are what the model is taught to write.
        self._add(line, sid, text, CONVERSATION, text_hash(text), False, None, None, None)

    def full(self) -> bool:
        return len(self.cols["key"]) >= _ROWS_PER_TABLE or self.chars >= _TABLE_CHARS

    def take(self, final: bool = False) -> pa.Table:
        if final and self.blank:
            self._add(-1 - self.chunk["fidx"], "", None, None, 0, False, STATS, json.dumps({"blank_lines": self.blank}),
                      None)
            self.blank = 0
        table = pa.table(self.cols, schema=SCHEMA)
        self.cols, self.chars = {f.name: [] for f in SCHEMA}, 0
        return table


def _jsonl(rows: _Rows, lines: Iterator[str], first: int) -> Iterator[pa.Table]:
    name = rows.chunk["name"]
    for lineno, line in enumerate(lines, first):
        if lineno == 1:
            line = line.lstrip("\ufeff")
        line = line.rstrip("\n").rstrip("\r")
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
        if rows.opts.chat_format:
            rows.conversation(lineno, sid, obj, line)
        else:
            rows.record(lineno, sid, obj.get(rows.opts.text_column, _MISSING),
                        obj.get(rows.opts.label_column, _MISSING), line)
        if rows.full():
            yield rows.take()


def _is_blank(rec: list[str]) -> bool:
    return not rec or (len(rec) == 1 and not rec[0].strip())


def _bom_stripped(lines: Iterator[str]) -> Iterator[str]:
    for i, line in enumerate(lines):
        yield line.lstrip("\ufeff") if i == 0 else line


def _header(chunk: dict, delimiter: str, quoting: str, encoding: str) -> Optional[list[str]]:
    """The header of a chunk's file (its first non-blank record), read from the file's start."""
    for _, rec, _, _ in records(_bom_stripped(open_lines({**chunk, "start": 0, "end": -1}, encoding, _ERRORS)),
                                delimiter, quoting, 1):
        if rec is not None and not _is_blank(rec):
            return [h.strip() for h in rec]
    return None


def _csv(rows: _Rows, lines: Iterator[str], first: int) -> Iterator[pa.Table]:
    """CSV or TSV records, quoted as `chunk["quoting"]` says; a record's line is that of its first line."""
    chunk, opts = rows.chunk, rows.opts
    name, delimiter, quoting = chunk["name"], DELIMITERS[chunk["fmt"]], chunk["quoting"]
    if first == 1:
        header, lines = None, _bom_stripped(lines)
    else:  # a later chunk of a cut file: the header is at the file's start
        header = _header(chunk, delimiter, quoting, opts.encoding)
    columns = None if header is None else _Columns(header, opts)
    for lineno, rec, raw, error in records(lines, delimiter, quoting, first):
        if rec is None:
            rows.bad(lineno, f"{name}:{lineno}", "malformed_csv", error, raw)
            continue
        if _is_blank(rec):
            rows.blank += 1
            continue
        if columns is None:
            columns = _Columns([h.strip() for h in rec], opts)
            continue
        sid, raw = f"{name}:{lineno}", raw.rstrip("\r\n")
        if _MARK in raw:
            rows.bad(lineno, sid, "undecodable_bytes", f"not valid {opts.encoding}", raw)
        elif len(rec) != columns.n:
            rows.bad(lineno, sid, "wrong_column_count", f"expected {columns.n} columns, got {len(rec)}", raw)
        else:
            rows.record(lineno, sid, columns.get(rec, columns.text), columns.get(rec, columns.label), raw, "column",
                        columns.names)
        if rows.full():
            yield rows.take()


class _Columns:
    """Where the text and label columns are in a header (None: absent)."""

    def __init__(self, header: list[str], opts: ParseOptions):
        idx = {h: i for i, h in enumerate(header)}
        self.n, self.names = len(header), ", ".join(header)
        self.text, self.label = idx.get(opts.text_column), idx.get(opts.label_column)

    @staticmethod
    def get(rec: list[str], i: Optional[int]):
        return rec[i] if i is not None else _MISSING


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
        if opts.chat_format:
            yield from _parquet_chats(rows, pf)
            return
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


def _parquet_chats(rows: _Rows, pf: pq.ParquetFile) -> Iterator[pa.Table]:
    """task sft: every row of the chunk's row groups, all columns, as one chat record."""
    chunk = rows.chunk
    groups = range(pf.num_row_groups) if chunk["end"] < 0 else range(chunk["start"], chunk["end"])
    row = chunk["line0"]
    for g in groups:
        for obj in pf.read_row_group(g).to_pylist():
            row += 1
            rows.conversation(row, f"{chunk['name']}:row{row}", obj, obj)
            if rows.full():
                yield rows.take()


def parse_chunk(chunk: dict, opts: ParseOptions) -> Iterator[pa.Table]:
    """Rows of one chunk as Arrow tables of `SCHEMA` (good and rejected records, plus control rows),
    yielded as they fill.

    An unreadable file (missing, permission, corrupt Parquet) becomes one `__fatal__` control row:
    the driver turns it into a UserError instead of a Ray traceback.
    """
    rows = _Rows(chunk, opts)
    try:
        if chunk["fmt"] == "parquet":
            yield from _parquet(rows)
        elif opts.chat_format and chunk["fmt"] != "jsonl":  # the config check refuses these formats for task sft; a file found by `auto`:
            rows._add(-1 - chunk["fidx"], "", None, None, 0, False, FATAL,
                      f"{chunk['uri']}: task sft reads chat records from JSONL or Parquet files, not {chunk['fmt']}", None)
        elif chunk["fmt"] == TEXT:
            yield from _document(rows, read_whole(chunk))
        else:
            lines, first = open_lines(chunk, opts.encoding, _ERRORS), chunk["line0"] + 1
            if chunk["fmt"] == "jsonl":
                yield from _jsonl(rows, lines, first)
            else:
                if chunk["quoting"] == "auto":  # a file read whole (a cut one is resolved by the pre-pass)
                    chunk = rows.chunk = {**chunk, "quoting": file_quoting(chunk, opts.encoding)}
                yield from _csv(rows, lines, first)
    except (OSError, pa.ArrowException) as e:
        rows.cols = {f.name: [] for f in SCHEMA}
        rows._add(-1 - chunk["fidx"], "", None, None, 0, False, FATAL, f"cannot read {chunk['uri']}: {e}", None)
    yield rows.take(final=True)
