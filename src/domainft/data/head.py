"""What `validate` checks of the data without reading it all: the input files exist and are not empty,
and the first rows of each of the first files parse with the configured format, columns and labels.
No Ray; `prepare` reads every row.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from domainft.data.chunks import plan_chunks
from domainft.data.collect import REASON_TEXT, where
from domainft.data.readers import FATAL, STATS, ParseOptions, parse_chunk, split_key
from domainft.data.sources import SourceFile, collect_sources
from domainft.errors import UserError

HEAD_FILES = 20  # per input (data.train, data.eval): a folder of documents is sampled, not read
HEAD_ROWS = 200  # per file


@dataclass
class HeadReport:
    problems: list[str] = field(default_factory=list)
    files: int = 0          # input files found
    files_read: int = 0     # of which the head was read
    rows: int = 0           # rows read
    good: int = 0
    skipped: Counter = field(default_factory=Counter)  # bad rows `on_bad_record: skip` would skip, by reason

    def summary(self) -> str:
        line = f"data: {self.files} file(s); the first {self.rows} row(s) of {self.files_read} read: {self.good} usable"
        if self.skipped:
            line += " (" + ", ".join(f"{n} {REASON_TEXT.get(r, r)}" for r, n in self.skipped.most_common()) + \
                    " would be skipped)"
        return line + ". The rest is read by `prepare`."


def head_report(train: str, eval_: Optional[str], fmt: str, opts: ParseOptions, on_bad_record: str,
                quoting: str = "auto") -> HeadReport:
    """Check the inputs' files and their first rows (see the module doc)."""
    report = HeadReport()
    try:
        files = collect_sources(train, eval_, fmt)
    except UserError as e:
        report.problems.append(f"data: {e}")
        return report
    except OSError as e:  # object storage without credentials, a permission: pyarrow's filesystems say why
        report.problems.append(f"data: cannot list {train}{' or ' + eval_ if eval_ else ''}: {e}")
        return report
    report.files = len(files)
    report.problems += [f"{f.uri}: empty file" for f in files if f.size == 0]
    sample = [f for split in (0, 1) for f in [g for g in files if g.split == split and g.size > 0][:HEAD_FILES]]
    for chunk in plan_chunks(sample, chunk_bytes=1 << 62, quoting=quoting):  # one whole-file chunk each
        _read_head(chunk, sample[chunk["fidx"]], opts, on_bad_record, report)
    if not report.problems and report.rows and not report.good:
        report.problems.append("data: none of the first rows is usable (see the reasons above)")
    return report


def _read_head(chunk: dict, f: SourceFile, opts: ParseOptions, on_bad_record: str, report: HeadReport) -> None:
    tables = parse_chunk(chunk, opts)
    table = next(tables)  # the first table; the generator is closed without reading further
    tables.close()
    reason = table.column("reason").to_pylist()
    fatal = [d for r, d in zip(reason, table.column("detail").to_pylist()) if r == FATAL]
    if fatal:
        report.problems.append(fatal[0])
        return
    rows = [i for i, r in enumerate(reason) if r != STATS][:HEAD_ROWS]
    report.files_read += 1
    report.rows += len(rows)
    bad = [i for i in rows if reason[i] is not None]
    report.good += len(rows) - len(bad)
    if not bad:
        return
    first = bad[0]
    _, line = split_key(table.column("key")[first].as_py())
    detail = table.column("detail")[first].as_py()
    text = f"{f.uri}, {where(f.fmt, line)}: {REASON_TEXT.get(reason[first], reason[first])} [{reason[first]}]" + \
        (f": {detail}" if detail else "")
    counts = Counter(reason[i] for i in bad)
    if len(bad) == len(rows):  # nothing in this file's head is usable: the format or the columns are wrong
        report.problems.append(f"{text}; all {len(rows)} first rows are bad ({_reasons(counts)}): check data.format, "
                               f"data.text_column and data.label_column")
    elif on_bad_record == "error":
        report.problems.append(f"{text}; {len(bad)} of the first {len(rows)} rows are bad ({_reasons(counts)}) "
                               f"(data.on_bad_record: skip writes such rows to rejects.jsonl instead)")
    else:
        report.skipped.update(counts)


def _reasons(counts: Counter) -> str:
    return ", ".join(f"{n} {r}" for r, n in itertools.islice(counts.most_common(), 3))
