"""`prepare` on Ray Data: read, validate, clean, dedupe, split, balance, augment, tokenize, write.

The only Ray code on the data path. Per-batch work lives in `domainft.data` (pure functions) and
runs here in `map_batches`. Global decisions (dedupe, stratified split, balance) need every row, so
only small columns (key, label code, text hash) come to the driver; the decision goes back as one
sorted key array in the object store that each batch is filtered against.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from typing import Callable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from domainft.config.schema import Config
from domainft.data.chunks import read_plan
from domainft.data.collect import COLUMNS, Collector
from domainft.data.continual import final_labels, replay_class_counts, resolve_label_sources
from domainft.data.layout import PreparedLayout
from domainft.data.label_fixes import file_digest
from domainft.data.labels import model_label_names, write_label_map
from domainft.data.plan import EVAL, TRAIN, make_plan, select_rows
from domainft.data.readers import ParseOptions, parse_chunk
from domainft.data.report import build_report, count_problems, fingerprint, format_report
from domainft.data.sources import collect_sources, input_signature
from domainft.data.tokenize import (build_encoder, encoder_spec, load_tokenizer, tokenize_table,
                                    tokenizer_signature)
from domainft.distributed.progress import LiveProgress, Reporter
from domainft.errors import UserError

CHUNK_BYTES = 64 * 1024**2  # big JSONL / CSV / TSV / Parquet inputs are read as several tasks of at most this size
MIN_CHUNK_BYTES = 1024**2  # ... and at least this (smaller inputs: enough chunks to keep every CPU busy)
TOKENIZE_BATCH = 512
MIN_ROWS_PER_FILE = 100_000


def data_dir(cfg: Config) -> str:
    return PreparedLayout(cfg.output_dir).root


def prepare_fingerprint(cfg: Config) -> str:
    """Hash of data + augment config, seed, each local input file's path, size and mtime, and what
    decides the tokenizer: model path, revision, trust_remote_code, a local folder's tokenizer files."""
    d, m = cfg.data, cfg.model
    inputs = {"train": input_signature(d.train, d.format), "eval": input_signature(d.eval, d.format),
              "labels": _label_signature(cfg)}
    model = {"name_or_path": m.name_or_path, "revision": m.revision, "trust_remote_code": m.trust_remote_code,
             "tokenizer_files": tokenizer_signature(m.name_or_path)}
    return fingerprint(d.model_dump(mode="json"), cfg.augment.model_dump(mode="json"), model, cfg.train.seed, inputs)


def _label_signature(cfg: Config) -> dict:
    """What beyond the corpus decides the labels: the continued model's labels, the replayed run's
    prepared data, the label fix file's content."""
    d = cfg.data
    out: dict = {}
    try:
        out["model_labels"] = model_label_names(cfg.model.name_or_path)
    except ValueError:
        out["model_labels"] = "invalid"  # resolve_label_sources reports it
    if d.label_fixes and os.path.isfile(d.label_fixes):
        out["label_fixes"] = file_digest(d.label_fixes)
    if d.replay.from_:
        try:
            with open(PreparedLayout(d.replay.from_).report, encoding="utf-8") as f:
                out["replay"] = json.load(f).get("fingerprint")
        except (OSError, ValueError):
            out["replay"] = None
    return out


def _fresh_report(cfg: Config, fp: str) -> Optional[dict]:
    try:
        with open(PreparedLayout(cfg.output_dir).report, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    if report.get("fingerprint") != fp:
        return None
    for d in (report.get("train_dir"), report.get("eval_dir")):
        if not d or not os.path.isdir(d) or not any(n.endswith(".parquet") for n in os.listdir(d)):
            return None
    return report


def ensure_prepared(cfg: Config) -> dict:
    """Prepared data for `cfg`: the existing report when its fingerprint matches, else a fresh run."""
    return run_prepare(cfg, force=False)


def run_prepare(cfg: Config, force: bool = False, *, chunk_bytes: Optional[int] = None,
                augment: Optional[Callable] = None) -> dict:
    """Run the data pipeline, write `<output_dir>/data/`, print the report table and return the report.

    Uses the running Ray if there is one, else starts a local one. With force=False an up-to-date
    output is returned without work. Bad records raise BadRecordError (on_bad_record: error) or go
    to rejects.jsonl (skip); an empty result raises UserError. `chunk_bytes` overrides the size of
    the read chunks big files are cut into (default: from the input size and the CPUs); `augment`
    is the augmentation step, `augment(train_ds, cfg, eval_ds=...) -> (dataset, report)` (default:
    distributed.augment.augment_train), run when augment.enabled.
    """
    start = time.perf_counter()
    d, layout = cfg.data, PreparedLayout(cfg.output_dir)
    out = layout.root
    fp = prepare_fingerprint(cfg)
    if not force and (report := _fresh_report(cfg, fp)) is not None:
        print(f"prepared data is up to date: {out} (fingerprint {fp})")
        return report
    for path in (layout.report, layout.label_map, layout.rejects, layout.train, layout.eval):  # none survives a failed run
        shutil.rmtree(path) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))
    os.makedirs(out, exist_ok=True)
    m = cfg.model  # load on the driver first: a bad model path fails before any reading
    spec = encoder_spec(load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code), m.name_or_path, m.revision,
                        m.trust_remote_code)
    files = collect_sources(d.train, d.eval, d.format)
    # the continued model's labels, data.replay, data.label_fixes: checked before Ray starts
    sources = resolve_label_sources(m.name_or_path, d.labels, d.replay.from_, d.replay.fraction, d.label_fixes, files)
    explicit = sources.explicit
    opts = ParseOptions(d.text_column, d.label_column, d.encoding, tuple(explicit) if explicit else None, d.nfkc,
                        d.unescape_html)
    rejects_path = layout.rejects if d.on_bad_record == "skip" else None
    _ensure_ray()
    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # same inputs -> same rows in the same order
    phases: dict[str, float] = {}

    def lap(name: str) -> None:  # seconds since the previous lap, for report["phase_seconds"]
        phases[name] = time.perf_counter() - start - sum(phases.values())

    live = LiveProgress()
    try:
        live.__enter__()
        lap("setup")
        parsed = _parse(files, opts, d.quoting, chunk_bytes, live.reporter())  # 1. read, validate, clean, hash
        lap("read_parse_clean")
        collector = _collect(parsed, files, rejects_path, sources.fixes)  # 2. counts and small columns on the driver
        if d.on_bad_record == "error" and (err := collector.first_error()) is not None:
            raise err
        names, arrays = collector.arrays(explicit)  # 3. global decisions: dedupe, split, balance
        names, arrays, extras = final_labels(sources, names, arrays, collector.fix_hits, cfg.train.seed, d.nfkc,
                                             d.unescape_html)  # continued model's labels first, replay, fixes
        plan = make_plan(**arrays, n_labels=len(names), dedupe=d.dedupe, has_eval_source=d.eval is not None,
                         eval_fraction=d.eval_fraction, seed=cfg.train.seed, max_ratio=d.max_class_ratio,
                         balance=d.balance)
        _check_not_empty(plan.counts, names, collector, replay_class_counts(extras, names))
        lap("collect_plan")
        ref = [ray.put((plan.keys, plan.split, plan.repeat, plan.label))]  # in a list: not auto-resolved
        splits = {s: parsed.map_batches(_select, fn_kwargs={"plan": ref, "want": want}, batch_format="pyarrow")
                  for s, want in (("eval", EVAL), ("train", TRAIN))}
        aug_report = None
        if cfg.augment.enabled:  # 4. augmentation of the train split only, before tokenizing
            splits["train"], aug_report = _augment(splits["train"], splits["eval"], cfg, augment)
        if extras.get("replay_table") is not None:  # replayed rows: after augmentation (never augmented)
            splits["train"] = splits["train"].union(ray.data.from_arrow(extras.pop("replay_table")))
        dirs, rows = {"train_dir": layout.train, "eval_dir": layout.eval}, {}
        actors = None if cfg.augment.enabled else max(1, min(_cpus(), parsed.num_blocks()))
        planned = {"train": None if cfg.augment.enabled else sum(plan.counts["train_after"]),
                   "eval": sum(plan.counts["eval"])}
        for split, ds in splits.items():  # 5. tokenize (actor pool) and write Parquet
            reporter = live.reporter()
            reporter.bar(f"tokenize {split}", planned[split], "rows")
            rows[split] = _tokenize_and_write(ds, dirs[f"{split}_dir"], spec, d.max_length, actors, reporter)
            reporter.close(f"tokenize {split}")
            lap(f"tokenize_write_{split}")
    finally:
        live.__exit__(None, None, None)
        ctx.execution_options.preserve_order = saved_order
    write_label_map(layout.label_map, names)
    report = build_report(
        rows_read=collector.rows_read, rejected=dict(collector.rejected), counts=plan.counts, label_names=names,
        blank_lines=collector.blank_lines, train_rows=rows["train"], eval_rows=rows["eval"],
        max_class_ratio=d.max_class_ratio, balance=d.balance,
        eval_source="data.eval" if d.eval else f"held out {d.eval_fraction:g} of data.train (stratified)",
        paths={**dirs, "rejects_path": rejects_path, "label_map_path": layout.label_map},
        fp=fp, seconds=time.perf_counter() - start, n_files=len(files))
    report["phase_seconds"] = {k: round(v, 3) for k, v in phases.items()}
    if aug_report is not None:
        report["augmentation"] = aug_report
    report.update({k: v for k, v in extras.items() if k != "replay_table"})
    problems = count_problems(report)
    if problems:
        raise RuntimeError("prepare: counts do not add up (a bug): " + "; ".join(problems))
    tmp = layout.report + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=2)
    os.replace(tmp, layout.report)  # written last: its presence means the outputs are complete
    print(format_report(report))
    return report


def _collect(parsed, files, rejects_path: Optional[str], fixes=None) -> Collector:
    """Stream the parsed rows' small columns to the driver (the projection runs where the blocks
    are: no text travels), writing rejects as they come. Raises UserError for unreadable files."""
    with open(rejects_path or os.devnull, "w", encoding="utf-8") as fh:
        collector = Collector(files, fh if rejects_path else None, fixes.source_ids() if fixes else None)
        for batch in parsed.select_columns(COLUMNS).iter_batches(batch_format="pyarrow", batch_size=None):
            collector.add(batch)
    collector.raise_if_fatal()
    return collector


def _ensure_ray() -> None:
    from domainft.distributed.cluster import init_ray

    init_ray()


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@ray.remote(num_cpus=1)
def _remote_call(fn, arg):
    return fn(arg)


def _parse(files, opts: ParseOptions, quoting: str, chunk_bytes: Optional[int] = None,
           reporter: Optional[Reporter] = None) -> ray.data.MaterializedDataset:
    """Parse every file (cut into chunks) into good and rejected rows, materialized in the object store.
    Each parsed chunk advances the `read` bar (in kB) of `reporter`."""
    total = sum(f.size for f in files)
    if chunk_bytes is None:
        chunk_bytes = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, total // (2 * _cpus())))
    # cut files: record starts and line numbers found by parallel scan tasks
    chunks = read_plan(files, chunk_bytes, opts.encoding, quoting,
                       scan_map=lambda fn, todo: ray.get([_remote_call.remote(fn, c) for c in todo]))
    blocks = min(len(chunks), max(2 * _cpus(), total // chunk_bytes + 1))
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


def _check_not_empty(counts: dict, names: list[str], collector: Collector, replayed: Optional[list] = None) -> None:
    summary = (f"{collector.rows_read} rows read, {sum(collector.rejected.values())} rejected, "
               f"{counts['duplicates_removed']} duplicates, {counts['empty_removed']} empty")
    if sum(counts["train_after"]) == 0:
        raise UserError(f"data.train: no training rows left ({summary})")
    if sum(counts["eval"]) == 0:
        raise UserError(f"no eval rows left ({summary}); give data.eval or a larger data.eval_fraction")
    replayed = replayed or [0] * len(names)
    present = [n for n, c, r in zip(names, counts["train_before"], replayed) if c or r]
    if len(present) < 2:
        raise UserError(f"data.train: a classifier needs at least 2 labels, found {present} ({summary})")


def _augment(train_ds, eval_ds, cfg: Config, augment: Optional[Callable]):
    """The train split after augmentation, and its report; eval is passed so that no augmented text
    can equal an eval text. `augment` is run_prepare's injected step (default: augment_train)."""
    if augment is None:
        from domainft.distributed.augment import augment_train as augment
    return augment(train_ds, cfg, eval_ds=eval_ds)


class _Tokenize:
    """One tokenizer per actor, built once from the driver's spec and reused for every batch."""

    def __init__(self, spec: dict, max_length: int, reporter: Optional[Reporter] = None, bar: str = ""):
        self.encode = build_encoder(spec, max_length)
        self.reporter, self.bar = reporter, bar

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = tokenize_table(self.encode, batch)
        if self.reporter is not None:
            self.reporter.advance(self.bar, out.num_rows)
        return out


def _tokenize_and_write(ds, path: str, spec: dict, max_length: int, actors: Optional[int],
                        reporter: Optional[Reporter] = None) -> int:
    """Tokenize on an actor pool and write Parquet; returns the rows written (from the file footers).

    `actors`: a fixed pool of that size, else an autoscaling one (1..CPUs) that leaves CPUs to the
    stages before it (augmentation). Ray Data's autoscaler rarely grows a pool fed by a few large
    blocks on a small cluster, so without augmentation the pool is fixed to use every CPU.
    """
    compute = (ray.data.ActorPoolStrategy(size=actors) if actors else
               ray.data.ActorPoolStrategy(min_size=1, max_size=_cpus()))
    # Ray Data logs "constructor arguments in the object store and max_restarts > 0" for every
    # callable class (ray issue 53727); harmless here: the driver holds the arguments until the end.
    bar = f"tokenize {os.path.basename(path)}"
    ds = ds.map_batches(_Tokenize, fn_constructor_kwargs={"spec": spec, "max_length": max_length,
                                                          "reporter": reporter, "bar": bar},
                        batch_size=TOKENIZE_BATCH, batch_format="pyarrow", compute=compute)
    # Writers take no CPU slot: the tokenizer actors may hold every CPU, and a writer that waited
    # for one would stall the pipeline (writing Parquet is light next to tokenizing).
    ds.write_parquet(path, min_rows_per_file=MIN_ROWS_PER_FILE, ray_remote_args={"num_cpus": 0})
    files = [os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet")] if os.path.isdir(path) else []
    return sum(pq.read_metadata(f).num_rows for f in files)
