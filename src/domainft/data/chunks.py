"""Read chunks: a big input is cut into parallel read tasks, each owning whole records.

Uncompressed JSONL is cut by bytes; a chunk owns the lines that begin inside it, and its line
numbers come from newline counts of the chunks before it (a cheap parallel pre-pass). Parquet is cut
by row groups. Everything else is read whole. No Ray.
"""
from __future__ import annotations

from dataclasses import asdict

from domainft.data.sources import COMPRESSION_EXTS, SourceFile, filesystem

SPLITTABLE = {"jsonl"}  # one record per line: a big file can be cut at newlines into parallel chunks


def is_compressed(uri: str) -> bool:
    return uri.lower().endswith(COMPRESSION_EXTS)


def plan_chunks(files: list[SourceFile], chunk_bytes: int, ascii_compatible: bool = True) -> list[dict]:
    """One read task input per file, or several for a big file: uncompressed JSONL is cut by bytes
    (at newlines when read), Parquet by row groups.

    Each chunk is a plain dict (it crosses the Ray boundary). For cut JSONL, `line0` (newlines
    before `start`) is filled in by `set_line_offsets` after `needs_line_count` chunks are counted.
    """
    chunks = []
    for idx, f in enumerate(files):
        base = {**asdict(f), "fidx": idx, "start": 0, "end": -1, "line0": 0}
        if f.fmt in SPLITTABLE and ascii_compatible and not is_compressed(f.uri) and f.size > chunk_bytes:
            for start in range(0, f.size, chunk_bytes):
                chunks.append({**base, "start": start, "end": min(start + chunk_bytes, f.size)})
        elif f.fmt == "parquet" and f.size > chunk_bytes:
            chunks.extend({**base, **c} for c in _row_group_chunks(f.uri, chunk_bytes))
        else:
            chunks.append(base)
    return chunks


def needs_line_count(chunk: dict) -> bool:
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


def set_line_offsets(chunks: list[dict], newline_counts: list[int]) -> list[dict]:
    """Fill `line0` of each cut JSONL chunk: newlines counted in the earlier chunks of the same file.
    Chunks that are not cut JSONL (count None) keep theirs."""
    out, running, last = [], 0, None
    for chunk, count in zip(chunks, newline_counts):
        if count is None:
            out.append(chunk)
            continue
        if chunk["fidx"] != last:
            running, last = 0, chunk["fidx"]
        out.append({**chunk, "line0": running})
        running += count
    return out


def read_bytes(chunk: dict) -> tuple[bytes, int]:
    """The bytes of a chunk's owned lines and the number of its first line.

    A chunk [start, end) owns the lines that begin inside it: it skips a partial first line and
    reads past `end` to finish its last one. `line0` is the count of newlines before `start`.
    """
    fs, path = filesystem(chunk["uri"])
    start, end = chunk["start"], chunk["end"]
    if end < 0:
        with fs.open_input_stream(path, compression="detect" if is_compressed(path) else None) as f:
            return f.read(), 1
    with fs.open_input_file(path) as f:
        lo = max(start - 1, 0)
        f.seek(lo)
        data = f.read(end - lo)
        tail = []
        while not (tail[-1] if tail else data).endswith(b"\n"):
            block = f.read(1 << 16)
            if not block:
                break
            cut = block.find(b"\n")
            tail.append(block if cut < 0 else block[: cut + 1])
            if cut >= 0:
                break
    data += b"".join(tail)
    if start == 0:
        return data, 1
    if data[:1] == b"\n":
        return data[1:], chunk["line0"] + 1
    cut = data.find(b"\n")
    if cut < 0 or start + cut >= end:
        return b"", 0  # no line begins inside this chunk
    return data[cut + 1:], chunk["line0"] + 2


def count_newlines(chunk: dict) -> int:
    """Newlines in [start, end) of a chunk's file (the pre-pass that numbers lines of cut files)."""
    fs, path = filesystem(chunk["uri"])
    with fs.open_input_file(path) as f:
        f.seek(chunk["start"])
        n, left = 0, chunk["end"] - chunk["start"]
        while left > 0:
            block = f.read(min(left, 1 << 24))
            if not block:
                break
            n, left = n + block.count(b"\n"), left - len(block)
    return n
