"""Guess a corpus's layout from its first rows, for `domainft init`: the format, which column holds the
text and which the label, the labels seen and the script. A guess to confirm, never used by a run.
No Ray."""
from __future__ import annotations

import csv
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from domainft.data.chunks import plan_chunks
from domainft.data.delimited import DELIMITERS
from domainft.data.sources import TEXT, SourceFile, filesystem, resolve_files
from domainft.errors import UserError

ROWS = 200
_LABEL_NAMES = ("label", "labels", "category", "class", "target", "intent", "sentiment", "topic", "tag")
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class Layout:
    fmt: str                      # data.format: jsonl, csv, tsv, parquet or folders
    files: int
    columns: list[str] = field(default_factory=list)
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    labels: list[str] = field(default_factory=list)  # seen in the rows read, sorted
    rows: int = 0
    chinese: bool = False         # most texts read are mainly CJK characters
    chat_format: Optional[str] = None  # chat records (task sft): their format, `auto` when they mix formats


def detect_layout(path: str) -> Layout:
    """The layout of the corpus at `path` (a file, a folder or a glob), from its first files and rows.
    Raises UserError when there is nothing to read or no text column can be told."""
    files = resolve_files(path, "auto", 0)
    if files[0].fmt == TEXT:
        labels = sorted({f.label for f in files if f.label})
        texts = [_read_text(f) for f in files[:20]]
        return Layout("folders", len(files), labels=labels, rows=len(files), chinese=_mostly_cjk(texts))
    first = next((f for f in files if f.size > 0), None)
    if first is None:
        raise UserError(f"{path}: every input file is empty")
    rows = _rows(first)
    if not rows:
        raise UserError(f"{first.uri}: no rows could be read as {first.fmt}")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if (chat := _chat_format(rows)) is not None:
        return Layout(first.fmt, len(files), columns, rows=len(rows), chat_format=chat)
    text = _text_column(rows, columns)
    if text is None:
        raise UserError(f"{first.uri}: no column holds text (columns: {', '.join(columns)})")
    label = _label_column(rows, [c for c in columns if c != text])
    labels = sorted({str(r[label]).strip() for r in rows if r.get(label) not in (None, "")}) if label else []
    return Layout(first.fmt, len(files), columns, text, label, labels, len(rows),
                  _mostly_cjk([str(r.get(text) or "") for r in rows]))


def _chat_format(rows: list[dict]) -> Optional[str]:
    """The chat format most rows are in (domainft.data.chat.detect_format), `auto` for a mix; None when fewer
    than half the rows are chat records (a classification corpus)."""
    from collections import Counter

    from domainft.data.chat import RecordError, detect_format

    found: Counter = Counter()
    for r in rows:
        try:
            found[detect_format(r)] += 1
        except RecordError:
            pass
    if sum(found.values()) * 2 < len(rows):
        return None
    return found.most_common(1)[0][0] if len(found) == 1 else "auto"


def _rows(f: SourceFile) -> list[dict[str, Any]]:
    if f.fmt == "parquet":
        import pyarrow.parquet as pq

        fs, p = filesystem(f.uri)
        with fs.open_input_file(p) as fh:
            pf = pq.ParquetFile(fh)
            return pf.read_row_group(0).slice(0, ROWS).to_pylist() if pf.num_row_groups else []
    from domainft.data.chunks import open_lines

    (chunk,) = plan_chunks([f], chunk_bytes=1 << 62)
    lines = open_lines(chunk, "utf-8", "replace")
    if f.fmt == "jsonl":
        out = []
        for line in itertools.islice((x for x in lines if x.strip()), ROWS):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out
    reader = csv.DictReader(lines, delimiter=DELIMITERS[f.fmt])
    return [r for r in itertools.islice(reader, ROWS)]


def _text_column(rows: list[dict], columns: list[str]) -> Optional[str]:
    """The column of strings with the most words on average (a title column loses to the body)."""
    def words(c: str) -> float:
        values = [r.get(c) for r in rows]
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) < len(values) / 2:
            return -1.0
        return sum(len(v.split()) + len(_CJK.findall(v)) for v in strings) / max(len(strings), 1)

    best = max(columns, key=words, default=None)
    return best if best is not None and words(best) > 0 else None


def _label_column(rows: list[dict], columns: list[str]) -> Optional[str]:
    """A column with few distinct short values: a usual name first, else the one with the fewest values."""
    def distinct(c: str) -> Optional[int]:
        values = [r.get(c) for r in rows if r.get(c) not in (None, "")]
        if len(values) < len(rows) / 2 or any(isinstance(v, (dict, list, float)) for v in values):
            return None
        n = len({str(v) for v in values})
        return n if n <= max(2, len(values) // 2) else None

    usable = [c for c in columns if distinct(c) is not None]
    # a usual name may show one label in a sorted file's head; any other column must show two or more
    named = [c for c in usable if c.strip().lower() in _LABEL_NAMES]
    return (named or sorted((c for c in usable if distinct(c) > 1), key=distinct) or [None])[0]


def _read_text(f: SourceFile) -> str:
    fs, p = filesystem(f.uri)
    with fs.open_input_stream(p) as fh:
        return fh.read(4096).decode("utf-8", "replace")


def _mostly_cjk(texts: list[str]) -> bool:
    chars = "".join(texts)
    letters = sum(ch.isalpha() for ch in chars)
    return letters > 0 and len(_CJK.findall(chars)) > letters / 2
