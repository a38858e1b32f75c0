"""CSV and TSV as exporters write them: the quoting rule, the quote-aware record-boundary scan, and
records with the line numbers of their first lines. No Ray.

Quoting (`data.quoting`):
- `csv`: RFC 4180 as Python's csv module reads it: a field that starts with `"` is quoted, may hold
  the delimiter, newlines and `""` (a literal quote), and ends at the next lone `"`.
- `none`: no quoting: every line is one record and quotes are ordinary characters.
- `auto`: `csv` for CSV files. A TSV file is read with `csv` quoting when its first `HEAD_BYTES`
  hold a quoted field (`QUOTED_FIELD`: at a line start or after a tab, `"`, then anything with
  inner quotes doubled, then `"` before a tab or the end of a line), as pandas `to_csv(sep="\\t")`,
  spreadsheets and database exports write fields holding tabs, newlines or quotes; else `none`.

Cutting a quoted file into parallel read chunks needs to know, at a byte offset, whether it is
inside a quoted field. For a file whose every quote follows the grammar above (an opening quote
at a field start, a closing one before a delimiter or a line end, inner quotes doubled), that is
the parity of the quotes before it; `scan_block` counts them with NumPy and checks the grammar at
every quote, so a chunk boundary falls only on a real record start. A file that breaks the grammar
anywhere (a bare quote inside an unquoted field, which the csv module reads literally) is read in
one streamed task instead, with the csv module alone deciding.
"""
from __future__ import annotations

import csv
import re
from typing import Iterator, Optional

import numpy as np

# A field longer than this is a malformed record: an unclosed quote would otherwise read the rest of
# the file into one field. Whole documents in one field are normal, so the limit is generous.
FIELD_CHARS = 64 * 1024**2
csv.field_size_limit(FIELD_CHARS)
HEAD_BYTES = 1 << 20  # what `auto` looks at in a TSV file
QUOTED_FIELD = re.compile(r'(?:^|\t)"[^"]*(?:""[^"]*)*"(?=\t|\r?$)', re.M)
DELIMITERS = {"csv": ",", "tsv": "\t"}
_NL, _CR, _QUOTE = 10, 13, 34


def detect_quoting(head: str) -> str:
    """`csv` when a TSV file's head holds a quoted field, else `none` (see the module docstring)."""
    return "csv" if QUOTED_FIELD.search(head) else "none"


def resolve_quoting(fmt: str, quoting: str, head: Optional[str] = None) -> str:
    """The quoting a delimited file is read with: `csv` or `none` (`head` is needed for auto TSV)."""
    if quoting != "auto":
        return quoting
    if fmt == "csv":
        return "csv"
    if head is None:
        raise ValueError("auto quoting of a TSV file needs its head")
    return detect_quoting(head)


class BlockScan:
    """Running state of the scan of one byte range [start, end) of a file, fed block by block.

    For each hypothesis about the quote parity at `start` (even: outside a quoted field; odd:
    inside), it finds the first record start in the range (just after a newline outside quotes, or
    `start` itself) and whether any quote or carriage return breaks the grammar. `lines` is the
    same without quoting (every line start is a record start).
    """

    def __init__(self, start: int, end: int, at_line_start: bool, delimiter: Optional[str]):
        self.end, self.delim = end, ord(delimiter) if delimiter else None
        self.newlines = self.quotes = 0
        self.lines = [start, 0] if at_line_start else [-1, 0]  # [first start, newlines before it]
        self.quoted = [[start, 0, False] if at_line_start else [-1, 0, False], [-1, 0, False]]

    def feed(self, pos: int, ext: np.ndarray) -> None:
        """`ext`: the bytes at [pos - 1, pos + n + 1) of the file, a virtual newline outside it."""
        body = ext[1:-1]
        nl = np.flatnonzero(body == _NL)
        starts = nl[:-1] if len(nl) and pos + int(nl[-1]) + 1 >= self.end else nl  # a start at `end` is the next range's
        if self.lines[0] < 0 and len(starts):
            self.lines = [pos + int(starts[0]) + 1, self.newlines + 1]
        if self.delim is not None:
            q = np.flatnonzero(body == _QUOTE)
            for parity in (0, 1):
                self._quoted(parity, pos, ext, starts, q)
            self.quotes += len(q)
        self.newlines += len(nl)

    def _quoted(self, parity: int, pos: int, ext: np.ndarray, nl: np.ndarray, q: np.ndarray) -> None:
        state = self.quoted[parity]
        base = parity + self.quotes  # quotes before this block, with the hypothesis
        if state[0] < 0 and len(nl):
            outside = (base + np.searchsorted(q, nl)) % 2 == 0
            hits = np.flatnonzero(outside)
            if len(hits):
                state[0], state[1] = pos + int(nl[hits[0]]) + 1, self.newlines + int(hits[0]) + 1
        if state[2]:
            return
        opening = (base + np.arange(len(q))) % 2 == 0
        before, after = ext[q], ext[q + 2]  # the bytes either side of each quote
        ok_before = (before == self.delim) | (before == _NL) | (before == _QUOTE)
        ok_after = (after == self.delim) | (after == _NL) | (after == _CR) | (after == _QUOTE)
        bad = np.any(opening & ~ok_before) or np.any(~opening & ~ok_after)
        if not bad:  # a carriage return outside quotes must end the line, as the csv module wants
            cr = np.flatnonzero(ext[1:-1] == _CR)
            if len(cr):
                outside = (base + np.searchsorted(q, cr)) % 2 == 0
                nxt = ext[cr + 2]
                bad = np.any(outside & (nxt != _NL) & (nxt != _CR))
        state[2] = bool(bad)

    def result(self) -> dict:
        return {"newlines": self.newlines, "quotes": self.quotes, "lines": self.lines, "quoted": self.quoted}


def records(lines: Iterator[str], delimiter: str, quoting: str, first: int
            ) -> Iterator[tuple[int, Optional[list[str]], str, str]]:
    """(line number of the record's first line, fields or None, its raw text, csv error or "").

    `lines` end with "\\n" (the last may not); `first` is the number of the first line.
    """
    tap = _Tap(lines)
    reader = csv.reader(tap, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting == "csv" else csv.QUOTE_NONE)
    while True:
        start = reader.line_num
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield first + start, None, tap.take(), str(e)
            if reader.line_num <= start:
                return
            continue
        yield first + start, rec, tap.take(), ""


class _Tap:
    """The lines the csv reader pulls, kept until the record they make up is taken."""

    def __init__(self, lines: Iterator[str]):
        self.lines, self.buf = iter(lines), []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        if not line.endswith("\n"):
            line += "\n"  # a last line without its newline ends its record all the same
        self.buf.append(line)
        return line

    def take(self) -> str:
        raw, self.buf = "".join(self.buf), []
        return raw
