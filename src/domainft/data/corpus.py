"""Read a configured corpus in this process, without Ray: the pure readers, in file order.

For commands that need every text once but not the prepare pipeline (`domainft terms`). Every
input format prepare reads works here; bad records follow `data.on_bad_record` as in prepare
(`error`: the first one raises, naming file and line; `skip`: counted, not written anywhere).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator, Optional

import pyarrow.compute as pc

from domainft.data.chunks import read_plan
from domainft.data.collect import Collector
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.sources import SourceFile

CHUNK_BYTES = 64 << 20  # a big JSONL file is read 64 MiB at a time: memory stays flat


class CorpusReader:
    """The good texts of a corpus, once each (exact duplicates skipped when `dedupe`).

    Counts, filled while `texts()` runs: rows_read, rejected (by reason), duplicates, empty,
    bytes_done of bytes_total.
    """

    def __init__(self, files: list[SourceFile], opts: ParseOptions, on_bad_record: str = "error",
                 dedupe: bool = True, chunk_bytes: int = CHUNK_BYTES, quoting: str = "auto"):
        self.files, self.opts, self.on_bad_record, self.dedupe = files, opts, on_bad_record, dedupe
        self.quoting = quoting
        self.chunk_bytes = chunk_bytes
        self.good = self.duplicates = self.empty = self.bytes_done = 0
        self.bytes_total = sum(f.size for f in files)
        self._bad = Collector(files)  # sees only control and rejected rows: the error text is prepare's

    @property
    def rows_read(self) -> int:
        return self.good + self._bad.rows_read

    @property
    def rejected(self) -> Counter:
        return self._bad.rejected

    def texts(self, progress: Optional[Callable[["CorpusReader"], None]] = None) -> Iterator[str]:
        """Yield each usable text; `progress(self)` is called after every read chunk."""
        seen: set[int] = set()
        chunks = read_plan(self.files, self.chunk_bytes, self.opts.encoding, self.quoting)
        per_file = Counter(c["fidx"] for c in chunks)
        for chunk in chunks:
            for table in parse_chunk(chunk, self.opts):
                good = table.column("reason").is_null()
                self._bad.add(table.filter(pc.invert(good)))
                self._bad.raise_if_fatal()
                if self.on_bad_record == "error" and (err := self._bad.first_error()) is not None:
                    raise err
                kept = table.filter(good)
                self.good += kept.num_rows
                for text, h, empty in zip(kept.column("text").to_pylist(), kept.column("h").to_pylist(),
                                          kept.column("empty").to_pylist()):
                    if empty:
                        self.empty += 1
                    elif self.dedupe and h in seen:
                        self.duplicates += 1
                    else:
                        if self.dedupe:
                            seen.add(h)
                        yield text
            cut = chunk["end"] >= 0 and chunk["fmt"] != "parquet"
            self.bytes_done += chunk["end"] - chunk["start"] if cut else chunk["size"] // per_file[chunk["fidx"]]
            if progress is not None:
                progress(self)
