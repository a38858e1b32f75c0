"""Labelled texts for the export checks: a corpus file or folder, or a prepared split folder.

A corpus (JSONL / CSV / TSV / Parquet / folder-per-label, anything `prepare` reads) goes through the
same validated readers as `prepare` (`domainft.data.sources` + `domainft.data.readers`), so a bad row
is reported the same way. A prepared split (`<output_dir>/data/eval`: Parquet with `input_ids` and an
integer `label`) is read as is: its ids are the label ids the model was trained with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from domainft.data.chunks import plan_chunks
from domainft.data.collect import REASON_TEXT, where
from domainft.data.labels import read_label_map
from domainft.data.readers import FATAL, STATS, ParseOptions, parse_chunk, split_key
from domainft.data.sources import SourceFile, resolve_files
from domainft.errors import UserError

_WHOLE_FILE = 1 << 62  # chunk size: read every file as one chunk (check data is small)


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: np.ndarray  # int64 label ids, the model's label2id
    source: str


def _prepared_split_files(path: str) -> Optional[list[str]]:
    """The Parquet files of a prepared split folder (they hold `input_ids` and an integer `label`)."""
    if not os.path.isdir(path):
        return None
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet"))
    if not files:
        return None
    schema = pq.read_schema(files[0])
    if "input_ids" in schema.names and "label" in schema.names and pa.types.is_integer(schema.field("label").type):
        return files
    return None


def _read_prepared(path: str, files: list[str], label_names: Sequence[str], text_column: str) -> LabelledTexts:
    label_map = os.path.join(os.path.dirname(os.path.abspath(path)), "label_map.json")
    if os.path.exists(label_map):
        names = read_label_map(label_map)
        if list(names) != list(label_names):
            raise UserError(f"{label_map}: label names {names} differ from the model's id2label {list(label_names)}; "
                            f"this split was not prepared for this model")
    texts, labels = [], []
    for f in files:
        schema = pq.read_schema(f)
        if text_column not in schema.names:
            raise UserError(f"{f}: no {text_column!r} column (columns: {', '.join(schema.names)})")
        t = pq.read_table(f, columns=[text_column, "label"])
        texts += t.column(text_column).to_pylist()
        labels += t.column("label").to_pylist()
    ids = np.asarray(labels, dtype=np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= len(label_names)))
    if bad.size:
        raise UserError(f"{path}: label id {ids[bad[0]]} (row {bad[0] + 1}) is outside the model's "
                        f"{len(label_names)} labels")
    return LabelledTexts(texts, ids, path)


def _raise_first_bad(files: list[SourceFile], table: pa.Table, label_names: Sequence[str]) -> None:
    bad = table.filter(pc.is_valid(table.column("reason")))
    if not bad.num_rows:
        return
    first = min(bad.select(["key", "reason", "detail"]).to_pylist(), key=lambda r: r["key"])
    if first["reason"] == FATAL:
        raise UserError(first["detail"])
    fidx, line = split_key(first["key"])
    f = files[fidx]
    what = f"{REASON_TEXT.get(first['reason'], first['reason'])}: {first['detail']}"
    if first["reason"] == "unknown_label":  # the reader's detail speaks of data.labels; here it is the model's
        what = f"{first['detail'].split(' is not')[0]} is not one of the model's labels {list(label_names)} (id2label)"
    raise UserError(f"{f.uri}, {where(f.fmt, line)}: {what}")


def read_labelled_texts(path: str, label_names: Optional[Sequence[str]] = None, text_column: str = "text",
                        label_column: str = "label", fmt: str = "auto") -> tuple[list[str], list[str]]:
    """(texts, label strings) of a corpus, through `prepare`'s validated readers.

    Args:
        path: A corpus file, folder, glob or URI.
        label_names: When given, any other label is an error.
        text_column: Text field / column.
        label_column: Label field / column.
        fmt: jsonl | csv | tsv | parquet | folders | auto (from the extension).

    Returns:
        Cleaned texts and their labels, in file order.

    Raises:
        UserError: No files, an unreadable file, or the first bad record (file and line named).
    """
    files = resolve_files(path, fmt, 0)
    opts = ParseOptions(text_column=text_column, label_column=label_column,
                        labels=tuple(label_names) if label_names is not None else None)
    texts, labels = [], []
    for chunk in plan_chunks(files, _WHOLE_FILE):
        for table in parse_chunk(chunk, opts):
            reason = table.column("reason")
            table = table.filter(pc.invert(pc.fill_null(pc.equal(reason, STATS), False)))
            _raise_first_bad(files, table, label_names or [])
            keep = table.filter(pc.invert(table.column("empty")))
            texts += keep.column("text").to_pylist()
            labels += keep.column("label").to_pylist()
    if not texts:
        raise UserError(f"{path}: no labelled texts")
    return texts, labels


def load_check_data(path: str, label_names: Sequence[str], text_column: str = "text",
                    label_column: str = "label") -> LabelledTexts:
    """Texts and label ids to check an export against.

    Args:
        path: A corpus (file, folder, glob, URI) with text and label columns, or a prepared split
            folder (`<output_dir>/data/eval`).
        label_names: The model's labels in id order (id2label); corpus labels are mapped by name.
        text_column: Text field / column of a corpus.
        label_column: Label field / column of a corpus.

    Returns:
        LabelledTexts.

    Raises:
        UserError: Missing or unreadable data, a bad record, or a label the model does not know.
    """
    if not os.path.exists(path) and "://" not in path and not any(c in path for c in "*?["):
        raise UserError(f"{path}: no such file or folder (--check)")
    files = _prepared_split_files(path)
    if files is not None:
        return _read_prepared(path, files, label_names, text_column)
    texts, labels = read_labelled_texts(path, label_names, text_column, label_column)
    index = {name: i for i, name in enumerate(label_names)}
    return LabelledTexts(texts, np.asarray([index[v] for v in labels], dtype=np.int64), path)


def write_jsonl(path: str, texts: Sequence[str], labels: Sequence[str]) -> None:
    """A corpus file (JSONL with text and label) that `load_check_data` and `prepare` read."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(texts, labels):
            f.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")
