"""Read chunks: a big input is cut into parallel read tasks, each owning whole records, and every
chunk is read as a stream of bounded pieces. No Ray.

Uncompressed JSONL, CSV and TSV bigger than the chunk size are cut by bytes. A cheap parallel
pre-pass (`scan_chunk`, NumPy over blocks) counts each chunk's newlines and quotes and finds its
first record start under each hypothesis; `align_chunks` then, on the driver, moves every cut to a
real record start (a line start; for quoted CSV/TSV a line start outside quotes, see
`domainft.data.delimited`) and numbers each chunk's first line. Parquet is cut by row groups.
Compressed files and quoted files that break the quoting grammar are read whole, streamed.
"""
from __future__ import annotations

import functools
import io
from dataclasses import asdict
from typing import Callable, Iterable, Iterator

import numpy as np

from domainft.data.delimited import DELIMITERS, HEAD_BYTES, BlockScan, resolve_quoting
from domainft.data.sources import COMPRESSION_EXTS, SourceFile, filesystem

SPLITTABLE = {"jsonl", "csv", "tsv"}  # text formats whose records can be found from the bytes
PIECE_BYTES = 1 << 20  # what a read task holds of its input at a time
SCAN_BYTES = 1 << 22  # block of the pre-pass (its NumPy arrays are a few times this)
UTF8_BOM = b"\xef\xbb\xbf"


def is_compressed(uri: str) -> bool:
    return uri.lower().endswith(COMPRESSION_EXTS)


def ascii_compatible(encoding: str) -> bool:
    """Whether newlines, quotes and delimiters are single ASCII bytes in `encoding` (so bytes can be cut)."""
    try:
        return all(c.encode(encoding) == c.encode("ascii") for c in '\n\r\t,"')
    except (LookupError, UnicodeError):
        return False


def plan_chunks(files: list[SourceFile], chunk_bytes: int, ascii_ok: bool = True, quoting: str = "auto") -> list[dict]:
    """One read task input per file, or several for a big file: uncompressed JSONL / CSV / TSV are cut
    by bytes (moved to record starts by `align_chunks` after `scan_chunk`), Parquet by row groups.

    Each chunk is a plain dict (it crosses the Ray boundary): the file's fields, `fidx`, `start`,
    `end` (-1: to the end of the file), `line0` (lines before `start`) and `quoting` (delimited
    files: `csv`, `none`, or `auto` until resolved).
    """
    chunks = []
    for idx, f in enumerate(files):
        base = {**asdict(f), "fidx": idx, "start": 0, "end": -1, "line0": 0,
                "quoting": quoting if f.fmt in DELIMITERS else ""}
        if f.fmt in SPLITTABLE and ascii_ok and not is_compressed(f.uri) and f.size > chunk_bytes:
            for start in range(0, f.size, chunk_bytes):
                chunks.append({**base, "start": start, "end": min(start + chunk_bytes, f.size)})
        elif f.fmt == "parquet" and f.size > chunk_bytes:
            chunks.extend({**base, **c} for c in _row_group_chunks(f.uri, chunk_bytes))
        else:
            chunks.append(base)
    return chunks


def read_plan(files: list[SourceFile], chunk_bytes: int, encoding: str, quoting: str = "auto",
              scan_map: Callable[[Callable, list[dict]], Iterable[dict]] = None) -> list[dict]:
    """The chunks to read, every cut moved to a record start: plan_chunks, then scan_chunk over the
    cut chunks with `scan_map(fn, chunks)` (the builtin map in this process; prepare passes one
    that runs them as parallel Ray tasks), then align_chunks."""
    chunks = plan_chunks(files, chunk_bytes, ascii_compatible(encoding), quoting)
    todo = [c for c in chunks if needs_scan(c)]
    if not todo:
        return chunks
    mapper = scan_map or (lambda fn, items: list(map(fn, items)))
    scans = iter(mapper(functools.partial(scan_chunk, encoding=encoding), todo))
    return align_chunks(chunks, [next(scans) if needs_scan(c) else None for c in chunks])


def needs_scan(chunk: dict) -> bool:
    return chunk["fmt"] in SPLITTABLE and chunk["end"] >= 0


def _row_group_chunks(uri: str, chunk_bytes: int) -> list[dict]:
    """Consecutive row groups of about `chunk_bytes` each; `line0` = rows before the first group."""
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    out, start, rows, size = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= chunk_bytes or g == meta.num_row_groups - 1:
            out.append({"start": start, "end": g + 1, "line0": rows})
            rows += sum(meta.row_group(k).num_rows for k in range(start, g + 1))
            start, size = g + 1, 0
    return out


def scan_chunk(chunk: dict, encoding: str = "utf-8") -> dict:
    """The pre-pass over a cut chunk's bytes [start, end): newline and quote counts and the first record
    start under each hypothesis (see `BlockScan`); for the first chunk of an `auto` TSV file also the
    file's quoting, from its head. Reads `SCAN_BYTES` at a time."""
    fs, path = filesystem(chunk["uri"])
    start, end, size = chunk["start"], chunk["end"], chunk["size"]
    delim = DELIMITERS.get(chunk["fmt"]) if chunk["quoting"] != "none" else None
    with fs.open_input_file(path) as f:
        at_line_start = start == 0 or f.read_at(1, start - 1) == b"\n"
        scan = BlockScan(start, end, at_line_start, delim)
        for pos in range(start, end, SCAN_BYTES):
            n = min(SCAN_BYTES, end - pos)
            lo, hi = max(pos - 1, 0), min(pos + n + 1, size)
            data = np.frombuffer(f.read_at(hi - lo, lo), dtype=np.uint8)
            ext = np.full(n + 2, 10, dtype=np.uint8)  # a virtual newline before the file and after it
            ext[1 - (pos - lo):1 - (pos - lo) + len(data)] = data
            if pos == 0 and data[:3].tobytes() == UTF8_BOM and delim:
                ext[1:4] = ord(delim)  # the reader never sees a BOM: a quote after it opens the first field
            scan.feed(pos, ext)
        out = scan.result()
    if start == 0 and chunk["quoting"] == "auto":
        out["quoting"] = file_quoting(chunk, encoding)
    return out


def align_chunks(chunks: list[dict], scans: list) -> list[dict]:
    """Move the cut chunks (scan not None) to record starts and number their first lines.

    A chunk [start, end) owns the records that begin inside it; it becomes [its first record start,
    the next chunk's first record start) with `line0` the newlines before it. A quoted file whose
    scan found a quote outside the grammar becomes one whole (streamed) chunk. Other chunks are
    returned as they are, in order.
    """
    out: list[dict] = []
    i = 0
    while i < len(chunks):
        if scans[i] is None:
            out.append(chunks[i])
            i += 1
            continue
        j = i
        while j < len(chunks) and scans[j] is not None and chunks[j]["fidx"] == chunks[i]["fidx"]:
            j += 1
        out.extend(_align_file(chunks[i:j], scans[i:j]))
        i = j
    return out


def _align_file(chunks: list[dict], scans: list[dict]) -> list[dict]:
    first = chunks[0]
    quoting = scans[0].get("quoting", first["quoting"])
    starts, quotes, newlines = [], 0, 0
    for chunk, scan in zip(chunks, scans):
        if first["fmt"] in DELIMITERS and quoting == "csv":
            start, before, bad = scan["quoted"][quotes % 2]
            if bad:  # the parity of quotes does not tell record starts here: the csv reader alone decides
                return [{**first, "start": 0, "end": -1, "line0": 0, "quoting": quoting}]
        else:
            start, before = scan["lines"]
        if start >= 0:
            starts.append((start, newlines + before))
        quotes, newlines = quotes + scan["quotes"], newlines + scan["newlines"]
    out = []
    for k, (start, line0) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else first["size"]
        out.append({**first, "start": start, "end": end, "line0": line0, "quoting": quoting})
    return out


class _Range(io.RawIOBase):
    """Bytes [start, end) of an open pyarrow file (end < 0: to its end), as a raw stream."""

    def __init__(self, f, start: int, end: int):
        super().__init__()
        self.f, self.left = f, (end - start if end >= 0 else None)
        if start:
            f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = len(buf) if self.left is None else min(len(buf), self.left)
        data = self.f.read(n) if n else b""
        buf[:len(data)] = data
        if self.left is not None:
            self.left -= len(data)
        return len(data)


def open_lines(chunk: dict, encoding: str, errors: str) -> Iterator[str]:
    """The lines (each with its "\\n") of a chunk's bytes, decoded, read `PIECE_BYTES` at a time."""
    fs, path = filesystem(chunk["uri"])
    whole = chunk["end"] < 0 and chunk["start"] == 0
    if whole:
        raw = fs.open_input_stream(path, compression="detect" if is_compressed(path) else None)
    else:
        raw = fs.open_input_file(path)
    with raw as f:
        stream = io.BufferedReader(_Range(f, chunk["start"], chunk["end"]), buffer_size=PIECE_BYTES)
        yield from io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline="\n")


def file_quoting(chunk: dict, encoding: str) -> str:
    """The quoting `auto` gives a delimited chunk's file: CSV is quoted, a TSV file's head decides."""
    if chunk["fmt"] != "tsv":
        return resolve_quoting(chunk["fmt"], "auto")
    fs, path = filesystem(chunk["uri"])
    with fs.open_input_stream(path, compression="detect" if is_compressed(path) else None) as f:
        head = f.read(HEAD_BYTES)
    return resolve_quoting("tsv", "auto", head.decode(encoding, "replace"))


def read_whole(chunk: dict) -> bytes:
    """A whole (small) file's bytes: a folder-per-label document."""
    fs, path = filesystem(chunk["uri"])
    with fs.open_input_stream(path, compression="detect" if is_compressed(path) else None) as f:
        return f.read()
