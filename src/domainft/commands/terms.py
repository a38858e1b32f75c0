"""`domainft terms CONFIG`: candidate domain terms for augment.protected_terms, mined from the corpus in this
process (no Ray): setup (the corpus reader) -> run (count: data/terms.py) -> finish (the term file, its
scores beside it, the top terms)."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

from domainft.config import Config
from domainft.data.corpus import CorpusReader
from domainft.data.labels import build_label_names
from domainft.data.readers import ParseOptions
from domainft.data.sources import collect_sources
from domainft.data.term_file import format_table, sidecar_path, term_file_header, write_terms
from domainft.data.terms import TermCounts, rank_terms
from domainft.errors import UserError


def run_terms(cfg: Config, top: int, out: Optional[str] = None) -> list:
    """Read the configured corpus in this process (no Ray), mine, write the term file and its scores,
    print the summary and the top terms. Returns the terms."""
    from domainft.tasks import require_labelled

    require_labelled(cfg, "terms")
    d = cfg.data
    out = out or os.path.join(cfg.output_dir, "domain_terms.txt")
    if os.path.abspath(sidecar_path(out)) == os.path.abspath(out):
        raise UserError(f"--out {out}: the scores go to a .tsv beside the term file; give the term file another suffix")
    start = last = time.perf_counter()
    files = collect_sources(d.train, d.eval, d.file_format)
    labels = tuple(build_label_names(d.labels, [])) if d.labels is not None else None
    reader = CorpusReader(files, ParseOptions(d.text_column, d.label_column, d.encoding, labels, d.nfkc,
                                              d.unescape_html), d.on_bad_record, d.dedupe, quoting=d.quoting)

    def progress(r: CorpusReader) -> None:  # a line every 5 s: only a big corpus prints any
        nonlocal last
        if time.perf_counter() - last >= 5:
            last = time.perf_counter()
            print(f"terms: read {r.bytes_done / max(r.bytes_total, 1):.0%} of {r.bytes_total / 1e6:,.1f} MB, "
                  f"{r.good:,} texts", file=sys.stderr)

    counts = TermCounts(cfg.augment.language)
    for text in reader.texts(progress):
        counts.add(text)
    if counts.texts == 0:
        raise UserError(f"{d.train}: no text to mine terms from ({reader.rows_read} rows read, "
                        f"{sum(reader.rejected.values())} rejected, {reader.empty} empty)")
    terms = rank_terms(counts, top)
    tsv = write_terms(terms, out, term_file_header(d.train + (f" and {d.eval}" if d.eval else ""), counts.texts,
                                                   sidecar_path(out).name))
    skipped = ", ".join(f"{k} {v}" for k, v in (("rejected", sum(reader.rejected.values())),
                                                 ("duplicates", reader.duplicates), ("empty", reader.empty)) if v)
    print(f"{len(terms)} terms from {counts.texts:,} texts ({reader.rows_read:,} rows read"
          f"{', ' + skipped if skipped else ''}) in {time.perf_counter() - start:.1f} s")
    print(format_table(terms, 20))
    print(f"wrote {out} (scores: {tsv})")
    return terms
