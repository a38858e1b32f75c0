"""Throughput of `prepare` (rows/s) on a synthetic corpus of >= 100k rows, with Ray on 1 CPU, then 2 CPUs;
and the peak memory of `prepare` on a 1 GB CSV (Ray's worker processes and the driver).

Not a test: numbers depend on the machine and on what else runs on it. Prints one JSON object.
Rows are 2-4 sentences drawn (seeded) from the BBC documents of one class, so texts are mostly
unique, realistic English news, and labelled by their folder. In the CSV, commas and quotes in the
texts are quoted as any exporter does, and one row in ten spans lines (sentences joined by newlines).

The memory goal: the read tasks' memory is bounded by the chunk and block size, not by the file
size. Peak `heap_mb` per task is the number to read (see `PeakMemory`): RSS also counts shared pages,
and USS the object-store pages a task wrote.

    .venv/bin/python benchmarks/prepare.py [--rows 120000] [--cpus 1 2] [--max-length 128]
                                           [--memory-gb 1.0] [--memory-cpus 2] [--skip-throughput]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthesize(bbc: Path, rows: int, path: Path, seed: int = 0) -> dict:
    import numpy as np

    sentences = _sentences(bbc)
    labels = sorted(sentences)
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            label = labels[i % len(labels)]
            pool = sentences[label]
            text = " ".join(pool[j] for j in rng.integers(0, len(pool), size=int(rng.integers(2, 5))))
            out.write(json.dumps({"text": text, "label": label}) + "\n")
    return {"rows": rows, "bytes": path.stat().st_size, "sentences": sum(map(len, sentences.values()))}


def synthesize_csv(bbc: Path, gigabytes: float, path: Path, seed: int = 0) -> dict:
    """A CSV of about `gigabytes` GiB of (text, label) rows, written as csv.writer (and pandas) write it."""
    import csv

    import numpy as np

    pools = _sentences(bbc)
    labels = sorted(pools)
    rng = np.random.default_rng(seed)
    target, rows = int(gigabytes * 1024**3), 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        w.writerow(["text", "label"])
        while out.tell() < target:
            picks = rng.integers(0, 1 << 30, size=(4096, 5))  # drawn in blocks: a 1 GiB file is ~2.5M rows
            for p in picks:
                label = labels[rows % len(labels)]
                pool = pools[label]
                sep = "\n" if p[4] % 10 == 0 else " "
                w.writerow([sep.join(pool[j % len(pool)] for j in p[:2 + p[3] % 3]), label])
                rows += 1
    return {"rows": rows, "bytes": path.stat().st_size}


def _sentences(bbc: Path) -> dict[str, list[str]]:
    sentences: dict[str, list[str]] = {}
    for f in sorted(bbc.glob("*/*.txt")):
        text = f.read_bytes().decode("utf-8", errors="replace")
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
        sentences.setdefault(f.parent.name, []).extend(parts)
    return sentences


class PeakMemory:
    """Samples this process (the driver) and its descendants (Ray's raylet, GCS and worker processes)
    every `interval` seconds in a thread; keeps peaks per role, and per task for the workers (a Ray
    worker's process title names the task or actor it runs: `ray::MapBatches(_parse_batch)`).

    `heap_mb` is the process's private memory (USS) less the pages of Ray's shared-memory object store
    (`/dev/shm/plasma*`) that only it maps: a task's outputs are written there, and count in its USS
    until another process maps them, so USS alone grows with the data a task hands on.
    """

    def __init__(self, interval: float = 0.5):
        import threading

        self.interval, self.peaks, self.by_task, self.worker_sum_heap = interval, {}, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @staticmethod
    def _memory(p) -> dict:
        rss = uss = store = 0
        for m in p.memory_maps(grouped=True):
            private = m.private_clean + m.private_dirty
            rss, uss = rss + m.rss, uss + private
            store += private if "plasma" in m.path else 0
        return {"rss": rss, "uss": uss, "heap": uss - store}

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        workers_heap = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                mem, cmd = self._memory(p), " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError):
                continue
            role = "driver" if p.pid == me.pid else "worker" if cmd.startswith("ray::") else (
                "raylet" if "raylet" in cmd else "other_ray")
            peak = self.peaks.setdefault(role, dict.fromkeys(mem, 0))
            for k, v in mem.items():
                peak[k] = max(peak[k], v)
            if role == "worker":
                task = cmd.split(" ")[0][len("ray::"):]
                task = task.split(").")[0] + ")" if ")." in task else task  # an actor's method: the actor
                got = self.by_task.setdefault(task, dict.fromkeys(mem, 0))
                for k, v in mem.items():
                    got[k] = max(got[k], v)
                workers_heap += mem["heap"]
        self.worker_sum_heap = max(self.worker_sum_heap, workers_heap)

    def report(self) -> dict:
        mb = (lambda v: {f"{k}_mb": round(b / 1024**2, 1) for k, b in v.items()})
        out = {f"{role}_peak": mb(v) for role, v in sorted(self.peaks.items())}
        out["worker_peak_by_task"] = {t: mb(v) for t, v in sorted(self.by_task.items(), key=lambda kv: -kv[1]["heap"])
                                      if v["heap"] >= 32 * 1024**2}
        out["workers_sum_peak_heap_mb"] = round(self.worker_sum_heap / 1024**2, 1)
        return out


def run_memory(cpus: int, corpus: Path, out: Path, max_length: int) -> dict:
    """One `prepare` of the CSV with memory sampled throughout."""
    import contextlib

    import ray

    from domainft.commands.prepare import run_prepare
    from domainft.config import validate_dict
    from domainft.distributed.datasets import CHUNK_BYTES

    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=2 * 1024**3, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    try:
        cfg = validate_dict({"output_dir": str(out / "memory"), "model": {"name_or_path": str(ROOT / "models/minilm")},
                             "data": {"train": str(corpus), "max_length": max_length, "eval_fraction": 0.1}})
        start = time.perf_counter()
        with PeakMemory() as mem, contextlib.redirect_stdout(sys.stderr):
            report = run_prepare(cfg, force=True)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"cpus": cpus, "seconds": round(seconds, 1), "rows_read": report["rows_read"],
            "train_rows": report["train_rows"], "rejected": report["rejected"],
            "chunk_bytes": CHUNK_BYTES, "phase_seconds": report["phase_seconds"], **mem.report()}


def run(cpus: int, corpus: Path, out: Path, max_length: int, repeats: int) -> dict:
    """Best of `repeats` runs (the machine is shared: the fastest run is the least disturbed one)."""
    import contextlib

    import ray

    from domainft.commands.prepare import run_prepare
    from domainft.config import validate_dict

    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=1024**3, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    try:
        cfg = validate_dict({"output_dir": str(out / f"cpus{cpus}"), "model": {"name_or_path": str(ROOT / "models/minilm")},
                             "data": {"train": str(corpus), "max_length": max_length, "eval_fraction": 0.1}})
        times, report = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
                r = run_prepare(cfg, force=True)
            times.append(time.perf_counter() - start)
            report = r if report is None or times[-1] <= min(times) else report
    finally:
        ray.shutdown()
    seconds = min(times)
    return {"cpus": cpus, "seconds": round(seconds, 2), "all_seconds": [round(t, 2) for t in times],
            "rows_read": report["rows_read"], "rows_per_s": round(report["rows_read"] / seconds, 1),
            "train_rows": report["train_rows"], "eval_rows": report["eval_rows"],
            "duplicates_removed": report["duplicates_removed"], "phase_seconds": report["phase_seconds"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=120_000)
    p.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="runs per CPU setting; the fastest is reported")
    p.add_argument("--memory-gb", type=float, default=1.0, help="size of the CSV for the peak-memory run (0: none)")
    p.add_argument("--memory-cpus", type=int, default=2)
    p.add_argument("--skip-throughput", action="store_true", help="only the peak-memory run")
    a = p.parse_args()
    if a.rows < 100_000 and not a.skip_throughput:
        print("note: fewer than 100k rows; startup costs dominate", file=sys.stderr)
    out: dict = {"benchmark": "prepare", "max_length": a.max_length, "host_cpus": os.cpu_count()}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="domainft-bench-") as tmp:
        tmp = Path(tmp)
        if not a.skip_throughput:
            corpus = tmp / "synthetic.jsonl"
            out["corpus"] = synthesize(ROOT / "data" / "bbc", a.rows, corpus)
            results = [run(c, corpus, tmp, a.max_length, a.repeats) for c in a.cpus]
            base = results[0]["rows_per_s"]
            out["runs"] = results
            out["speedup"] = {str(r["cpus"]): round(r["rows_per_s"] / base, 2) for r in results}
        if a.memory_gb > 0:
            csv_path = tmp / "synthetic.csv"
            out["memory"] = {"corpus": synthesize_csv(ROOT / "data" / "bbc", a.memory_gb, csv_path),
                             **run_memory(a.memory_cpus, csv_path, tmp, a.max_length)}
    out["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
