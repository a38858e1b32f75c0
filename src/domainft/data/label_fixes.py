"""`data.label_fixes`: a reviewer's corrections (a new label, or `drop`), read from a CSV file and
applied by prepare to the parsed records before dedupe and split. No Ray.

The file has a header row. A record is named by `row_id` (its source_id, as prepare writes it:
`<file>:<line>` for JSONL / CSV / TSV, `<file>:row<n>` for Parquet, `<file>` for a folder-per-label
document) or by `source` (the file: its display name, path or URI) and `line`; `fix` holds a label
of the data or `drop`. Rows with an empty `fix` are ignored, and so are other columns, so the
audit's label_issues.csv with some `fix` cells filled in is a valid fix file.

Checked before Ray starts: the file's shape, each row's record names an input file, a label is
in `data.labels` (when given). After reading the corpus: each fix matches a record, a label is one
of the data's labels.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from domainft.data.clean import clean_label
from domainft.data.sources import TEXT, SourceFile
from domainft.errors import UserError

DROP = "drop"
ID_COLUMN, SOURCE_COLUMN, LINE_COLUMN, FIX_COLUMN = "row_id", "source", "line", "fix"
_ROW = re.compile(r"row(\d+)$")


@dataclass(frozen=True)
class LabelFix:
    line: int  # the fix file's line (for errors)
    source_id: str  # the record it names
    label: Optional[str]  # the corrected label; None: drop the record


@dataclass
class LabelFixes:
    path: str
    fixes: list[LabelFix] = field(default_factory=list)

    def source_ids(self) -> list[str]:
        return sorted({f.source_id for f in self.fixes})

    def where(self, fix: LabelFix) -> str:
        return f"{self.path}, line {fix.line}"


def file_digest(path: Optional[str]) -> Optional[str]:
    """SHA-256 of a local file's bytes (part of the prepare fingerprint), None without a file."""
    if not path:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def source_id_of(f: SourceFile, line: str) -> Optional[str]:
    """The source_id of `line` (a line number, `row<n>` or a Parquet row number) of input file `f`."""
    line = line.strip()
    if f.fmt == TEXT:
        return f.name if line in ("", "0") else None
    m = _ROW.match(line)
    digits = m.group(1) if m else line
    if not digits.isdigit() or int(digits) < 1 or (m and f.fmt != "parquet"):
        return None
    return f"{f.name}:row{int(digits)}" if f.fmt == "parquet" else f"{f.name}:{int(digits)}"


def split_source_id(source_id: str) -> tuple[str, str]:
    """(file display name, line) of a source_id: line is the line number, `row<n>` (Parquet) or ""
    (a whole-file document)."""
    name, sep, tail = source_id.rpartition(":")
    if sep and (tail.isdigit() or _ROW.match(tail)):
        return name, tail
    return source_id, ""


def _file_names(files: Sequence[SourceFile]) -> dict[str, SourceFile]:
    out: dict[str, SourceFile] = {}
    for f in files:
        for key in (f.name, f.uri, os.path.abspath(f.uri) if "://" not in f.uri else f.uri):
            out.setdefault(key, f)
    return out


def read_label_fixes(path: str, files: Sequence[SourceFile], labels: Optional[Sequence[str]] = None) -> LabelFixes:
    """Parse and check a fix file against the input files (and `labels`, when the label set is known).

    Raises:
        UserError: naming the file and line, for an unreadable or malformed file, a missing column,
            a record that names no input file, a bad line number, a label not in `labels`, or two
            rows that fix the same record differently.
    """
    out = LabelFixes(path)
    by_name = _file_names(files)
    by_id = {f.name: f for f in files}
    known = set(labels) if labels is not None else None
    seen: dict[str, LabelFix] = {}

    def fail(line: int, msg: str) -> UserError:
        return UserError(f"data.label_fixes {path}, line {line}: {msg}")

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header, start = None, 1
            for rec in reader:
                line, start = start, reader.line_num + 1
                if not rec or all(not c.strip() for c in rec):
                    continue
                if header is None:
                    header = [h.strip().lower() for h in rec]
                    _check_header(header, path)
                    continue
                if len(rec) != len(header):
                    raise fail(line, f"expected {len(header)} columns (as the header), got {len(rec)}")
                row = dict(zip(header, rec))
                fix = row[FIX_COLUMN].strip()
                if not fix:
                    continue  # not reviewed (yet)
                sid = _record(row, by_name, by_id, lambda m: fail(line, m))
                if fix.lower() == DROP:
                    label = None
                else:
                    label, _ = clean_label(fix)
                    if known is not None and label not in known:
                        raise fail(line, f"fix {label!r} is not a label of the data ({', '.join(sorted(known))}) "
                                         f"and not `{DROP}`")
                item = LabelFix(line, sid, label)
                if sid in seen:
                    if seen[sid].label != label:
                        raise fail(line, f"{sid} is fixed twice, differently (also on line {seen[sid].line})")
                    continue
                seen[sid] = item
                out.fixes.append(item)
    except OSError as e:
        raise UserError(f"data.label_fixes: cannot read {path}: {e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"data.label_fixes {path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise UserError(f"data.label_fixes {path}, line {reader.line_num}: malformed CSV: {e}") from None
    if header is None:
        raise UserError(f"data.label_fixes {path}: the file is empty (expected a header: "
                        f"{ID_COLUMN} or {SOURCE_COLUMN},{LINE_COLUMN}, and {FIX_COLUMN})")
    return out


def _check_header(header: list[str], path: str) -> None:
    has_id = ID_COLUMN in header
    missing = [c for c in (FIX_COLUMN,) if c not in header]
    if not has_id and not (SOURCE_COLUMN in header and LINE_COLUMN in header):
        missing.insert(0, f"{ID_COLUMN} (or {SOURCE_COLUMN} and {LINE_COLUMN})")
    if missing:
        raise UserError(f"data.label_fixes {path}, line 1: the header lacks {' and '.join(missing)} "
                        f"(it has: {', '.join(header)})")
    dup = sorted({h for h in header if header.count(h) > 1 and h in (ID_COLUMN, SOURCE_COLUMN, LINE_COLUMN,
                                                                        FIX_COLUMN)})
    if dup:
        raise UserError(f"data.label_fixes {path}, line 1: column {dup[0]!r} appears twice")


def _record(row: dict, by_name: dict, by_id: dict, fail) -> str:
    """The source_id a row names (row_id, else source + line), checked against the input files."""
    names = ", ".join(sorted(by_id)[:5]) + (" ..." if len(by_id) > 5 else "")
    rid = (row.get(ID_COLUMN) or "").strip()
    if rid:
        name, line = split_source_id(rid)
        if name not in by_id and rid not in by_id:
            raise fail(f"row_id {rid!r} names no input file (input files: {names})")
        f = by_id.get(name) or by_id[rid]
        sid = source_id_of(f, line)
        if sid is None:
            raise fail(f"row_id {rid!r}: {line!r} is not a {'row' if f.fmt == 'parquet' else 'line'} of {f.name}")
        return sid
    source, line = (row.get(SOURCE_COLUMN) or "").strip(), (row.get(LINE_COLUMN) or "").strip()
    if not source:
        raise fail(f"no {ID_COLUMN} and no {SOURCE_COLUMN}: which record does this fix name?")
    f = by_name.get(source)
    if f is None:
        raise fail(f"source {source!r} is not an input file (input files: {names})")
    sid = source_id_of(f, line)
    if sid is None:
        raise fail(f"line {line!r} is not a {'row number' if f.fmt == 'parquet' else 'line number'} of {f.name}")
    return sid


def apply_label_fixes(fixes: LabelFixes, hits: dict[str, int], arrays: dict, names: Sequence[str]) -> tuple[dict, dict]:
    """Relabel or drop the fixed records in the collector's per-row arrays (before the plan).

    Args:
        fixes: From `read_label_fixes`.
        hits: source_id -> key of every parsed (good) record a fix names (`Collector.fix_hits`).
        arrays: `Collector.arrays` output: keys, src, labels (ids into `names`), empty, hashes.
        names: The label names (index = id).

    Returns:
        (arrays without the dropped rows and with the new labels, counts for the data report:
         file, relabelled, dropped, unchanged (the fix is the given label), changes {"a -> b": n}).

    Raises:
        UserError: a fix that matches no record, or names a label that is not one of `names`.
    """
    index = {n: i for i, n in enumerate(names)}
    problems = []
    for f in fixes.fixes:
        if f.source_id not in hits:
            problems.append(f"{fixes.where(f)}: {f.source_id} matches no record of the corpus (a record that was "
                            f"rejected, or a line that holds none)")
        elif f.label is not None and f.label not in index:
            problems.append(f"{fixes.where(f)}: fix {f.label!r} is not a label of the data ({', '.join(names)}) "
                            f"and not `{DROP}`")
    if problems:
        more = f" (and {len(problems) - 1} more such fix(es))" if len(problems) > 1 else ""
        raise UserError(f"data.label_fixes: {problems[0]}{more}")
    keys = arrays["keys"]
    order = np.argsort(keys, kind="stable")
    labels = arrays["labels"].copy()
    keep = np.ones(len(keys), dtype=bool)
    counts = {"file": fixes.path, "relabelled": 0, "dropped": 0, "unchanged": 0, "changes": {}}
    for f in fixes.fixes:
        pos = int(order[np.searchsorted(keys, hits[f.source_id], sorter=order)])
        if f.label is None:
            keep[pos] = False
            counts["dropped"] += 1
            continue
        new = index[f.label]
        if new == labels[pos]:
            counts["unchanged"] += 1
            continue
        change = f"{names[labels[pos]]} -> {f.label}"
        counts["changes"][change] = counts["changes"].get(change, 0) + 1
        labels[pos] = new
        counts["relabelled"] += 1
    counts["changes"] = dict(sorted(counts["changes"].items()))
    out = {k: v[keep] for k, v in arrays.items() if k != "labels"}
    out["labels"] = labels[keep]
    return out, counts
