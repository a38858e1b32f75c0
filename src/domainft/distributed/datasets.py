"""`prepare` on Ray Data: the stages of the pipeline (commands/prepare.py runs them in order).

The only Ray code on the data path. Per-batch work lives in `domainft.data` (pure functions) and
runs here in `map_batches`. Global decisions (dedupe, stratified split, balance) need every row, so
only small columns (key, label code, text hash) come to the driver; the decision goes back as one
sorted key array in the object store that each batch is filtered against.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from typing import Callable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from domainft.data.chunks import read_plan
from domainft.data.collect import COLUMNS, Collector
from domainft.data.plan import EVAL, TRAIN, Plan, select_rows
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.chat import chat_encoder_from_spec
from domainft.data.tokenize import build_encoder
from domainft.distributed.cluster import init_ray
from domainft.distributed.progress import LiveProgress, Reporter

CHUNK_BYTES = 64 * 1024**2  # big JSONL / CSV / TSV / Parquet inputs are read as several tasks of at most this size
MIN_CHUNK_BYTES = 1024**2  # ... and at least this (smaller inputs: enough chunks to keep every CPU busy)
TOKENIZE_BATCH = 512
MIN_ROWS_PER_FILE = 100_000


@contextlib.contextmanager
def pipeline_session() -> Iterator[LiveProgress]:
    """Ray up (joined or started), rows kept in input order while the pipeline runs (same inputs -> same
    rows in the same order), and the driver's live progress (bars and lines from the tasks)."""
    init_ray()
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        with LiveProgress() as live:
            yield live
    finally:
        ctx.execution_options.preserve_order = saved


def collect(parsed, files, rejects_path: Optional[str], fixes=None) -> Collector:
    """Stream the parsed rows' small columns to the driver (the projection runs where the blocks
    are: no text travels), writing rejects as they come. Raises UserError for unreadable files."""
    with open(rejects_path or os.devnull, "w", encoding="utf-8") as fh:
        collector = Collector(files, fh if rejects_path else None, fixes.source_ids() if fixes else None)
        for batch in parsed.select_columns(COLUMNS).iter_batches(batch_format="pyarrow", batch_size=None):
            collector.add(batch)
    collector.raise_if_fatal()
    return collector


def cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@ray.remote(num_cpus=1)
def _remote_call(fn, arg):
    return fn(arg)


def parse(files, opts: ParseOptions, quoting: str, chunk_bytes: Optional[int] = None,
          reporter: Optional[Reporter] = None) -> ray.data.MaterializedDataset:
    """Parse every file (cut into chunks) into good and rejected rows, materialized in the object store.
    Each parsed chunk advances the `read` bar (in kB) of `reporter`."""
    total = sum(f.size for f in files)
    if chunk_bytes is None:
        chunk_bytes = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, total // (2 * cpus())))
    # cut files: record starts and line numbers found by parallel scan tasks
    chunks = read_plan(files, chunk_bytes, opts.encoding, quoting,
                       scan_map=lambda fn, todo: ray.get([_remote_call.remote(fn, c) for c in todo]))
    blocks = min(len(chunks), max(2 * cpus(), total // chunk_bytes + 1))
    ds = ray.data.from_items(chunks, override_num_blocks=blocks)
    if reporter is not None:
        reporter.bar("read", max(1, -(-total // 1000)), "kB")
    ds = ds.map_batches(_parse_batch, batch_format="pyarrow", batch_size=None,
                        fn_kwargs={"opts": asdict(opts), "reporter": reporter})
    out = ds.materialize()
    if reporter is not None:
        reporter.close("read")
    return out


def _parse_batch(batch: pa.Table, opts: dict, reporter: Optional[Reporter] = None) -> Iterator[pa.Table]:
    o = ParseOptions(**{**opts, "labels": tuple(opts["labels"]) if opts["labels"] is not None else None})
    for chunk in batch.to_pylist():
        if reporter is not None:  # a cut chunk is its byte range; a whole file its size
            size = chunk["end"] - chunk["start"] if chunk["end"] >= 0 and chunk["fmt"] != "parquet" else chunk["size"]
            reporter.advance("read", -(-size // 1000))
        yield from parse_chunk(chunk, o)


def _select(batch: pa.Table, plan: list, want: int) -> pa.Table:
    keys, split, repeat, label = ray.get(plan[0])  # zero-copy NumPy views of the object store
    return select_rows(batch, keys, split, repeat, label, want)


def select_splits(parsed, plan: Plan) -> dict:
    """The eval and train splits of the plan (the driver's decisions), as lazy datasets over the parsed rows."""
    ref = [ray.put((plan.keys, plan.split, plan.repeat, plan.label))]  # in a list: not auto-resolved
    return {s: parsed.map_batches(_select, fn_kwargs={"plan": ref, "want": want}, batch_format="pyarrow")
            for s, want in (("eval", EVAL), ("train", TRAIN))}


def with_rows(ds, table: pa.Table):
    """`ds` and the rows of `table` (replayed rows of a previous run)."""
    return ds.union(ray.data.from_arrow(table))


class _Tokenize:
    """One tokenizer per actor, built once from the driver's spec and reused for every batch; the task's
    `examples` makes each record a training example with it. `examples` comes from the driver (pickled by
    reference): an actor imports its module, not the task's model code."""

    def __init__(self, spec: dict, max_length: int, examples: Callable, reporter: Optional[Reporter] = None,
                 bar: str = ""):
        # A `chat` spec (task sft): conversations -> token ids and loss labels (data.chat's ChatEncoder).
        self.encode = chat_encoder_from_spec(spec["chat"], max_length) if "chat" in spec else build_encoder(spec,
                                                                                                         max_length)
        self.examples = examples
        self.reporter, self.bar = reporter, bar

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = self.examples(self.encode, batch)
        if self.reporter is not None:
            self.reporter.advance(self.bar, out.num_rows)
        return out


def tokenize_and_write(ds, path: str, spec: dict, max_length: int, examples: Callable, actors: Optional[int],
                       reporter: Optional[Reporter] = None) -> int:
    """Tokenize on an actor pool and write Parquet; returns the rows written (from the file footers).

    `actors`: a fixed pool of that size, else an autoscaling one (1..CPUs) that leaves CPUs to the
    stages before it (augmentation). Ray Data's autoscaler rarely grows a pool fed by a few large
    blocks on a small cluster, so without augmentation the pool is fixed to use every CPU.
    """
    compute = (ray.data.ActorPoolStrategy(size=actors) if actors else
               ray.data.ActorPoolStrategy(min_size=1, max_size=cpus()))
    # Ray Data logs "constructor arguments in the object store and max_restarts > 0" for every
    # callable class (ray issue 53727); harmless here: the driver holds the arguments until the end.
    bar = f"tokenize {os.path.basename(path)}"
    kwargs = {"spec": spec, "max_length": max_length, "examples": examples, "reporter": reporter, "bar": bar}
    ds = ds.map_batches(_Tokenize, fn_constructor_kwargs=kwargs,
                        batch_size=TOKENIZE_BATCH, batch_format="pyarrow", compute=compute)
    # Writers take no CPU slot: the tokenizer actors may hold every CPU, and a writer that waited
    # for one would stall the pipeline (writing Parquet is light next to tokenizing).
    ds.write_parquet(path, min_rows_per_file=MIN_ROWS_PER_FILE, ray_remote_args={"num_cpus": 0})
    files = [os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet")] if os.path.isdir(path) else []
    return sum(pq.read_metadata(f).num_rows for f in files)
