"""`domainft prepare CONFIG`: the corpus -> <output_dir>/data/ (Parquet splits, data_report.json,
label_map.json, rejects.jsonl), in phases: setup (before Ray: the tokenizer, the input files and the
label sources fail fast), read, plan (dedupe, split, balance: decided on the driver from small columns),
splits (select, augment, replay), write (tokenize into the task's examples), report.

Ray Data runs every stage (distributed/datasets.py); `train`, `tune`, `audit` and `distill` call
`ensure_prepared`, which reuses prepared data whose fingerprint matches.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from domainft.config import Config, ConfigError
from domainft.data.collect import Collector
from domainft.data.freshness import fresh_report, prepare_fingerprint
from domainft.data.continual import LabelSources, final_labels, replay_class_counts, resolve_label_sources
from domainft.data.labels import write_label_map
from domainft.data.layout import PreparedLayout
from domainft.data.plan import Plan, make_plan
from domainft.data.readers import ParseOptions
from domainft.data.report import build_report, count_problems, format_report
from domainft.data.sources import collect_sources
from domainft.data.tokenize import load_tokenizer
from domainft.distributed import datasets
from domainft.errors import UserError
from domainft.tasks import get_task


def main(cfg: Config) -> dict:
    """`domainft prepare`: always prepares afresh."""
    return run_prepare(cfg, force=True)


def ensure_prepared(cfg: Config) -> dict:
    """Prepared data for `cfg`: the existing report when its fingerprint matches, else a fresh run."""
    return run_prepare(cfg, force=False)


@dataclass
class Inputs:
    """What the setup phase found, before Ray starts."""

    files: list  # data.sources.Source of data.train and data.eval
    sources: LabelSources  # the continued model's labels, replay, label fixes
    opts: ParseOptions
    encoder: dict  # split -> what its tokenize actors rebuild the encoder from (the task's encoder_spec)
    pad_token_id: int
    rejects_path: Optional[str]


@dataclass
class Decision:
    """The plan phase's outcome: every row's fate, the label names, the counts."""

    collector: Collector
    names: list[str]
    plan: Plan
    extras: dict  # fixes_applied, replay (+ the replayed rows' table until the splits take it)


class Phases:
    """Seconds spent in each phase, for report["phase_seconds"]."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        self.seconds[name] = time.perf_counter() - self.start - sum(self.seconds.values())

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


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
    layout, fp = PreparedLayout(cfg.output_dir), prepare_fingerprint(cfg)
    if not force and (report := fresh_report(layout, fp)) is not None:
        print(f"prepared data is up to date: {layout.root} (fingerprint {fp})")
        return report
    phases = Phases()
    inputs = setup(cfg, layout)
    with datasets.pipeline_session() as live:
        phases.lap("setup")
        parsed = datasets.parse(inputs.files, inputs.opts, cfg.data.quoting, chunk_bytes, live.reporter())
        phases.lap("read_parse_clean")
        decision = decide(cfg, parsed, inputs)
        phases.lap("collect_plan")
        splits, aug_report = select_splits(cfg, parsed, decision, augment)
        rows = write_splits(cfg, splits, decision, inputs, layout, live, phases, parsed.num_blocks())
    return finish(cfg, layout, fp, inputs, decision, rows, aug_report, phases)


def setup(cfg: Config, layout: PreparedLayout) -> Inputs:
    """Clear earlier outputs (none survives a failed run), then load what a bad config would fail on: the
    tokenizer (on the driver: a bad model path fails before any reading), the input files, the label
    sources (the continued model's labels, data.replay, data.label_fixes)."""
    for path in (layout.report, layout.label_map, layout.rejects, layout.train, layout.eval):
        shutil.rmtree(path) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))
    os.makedirs(layout.root, exist_ok=True)
    d, m, task = cfg.data, cfg.model, get_task(cfg.task)
    if problems := task.config_problems(cfg):
        raise ConfigError(problems, "config")
    notes: list[str] = []
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code, notes)
    for note in notes:
        print(f"[prepare] {note}")
    files = collect_sources(d.train, d.eval, d.file_format)
    sources = resolve_label_sources(m.name_or_path, d.labels, d.replay.from_, d.replay.fraction, d.label_fixes, files)
    explicit = tuple(sources.explicit) if sources.explicit else None
    return Inputs(files=files, sources=sources, opts=task.parse_options(cfg, explicit, tokenizer),
                  encoder={split: task.encoder_spec(cfg, tokenizer, split) for split in ("train", "eval")},
                  pad_token_id=int(tokenizer.pad_token_id or 0),
                  rejects_path=layout.rejects if d.on_bad_record == "skip" else None)


def decide(cfg: Config, parsed: Any, inputs: Inputs) -> Decision:
    """Counts and small columns on the driver, then the global decisions: labels (the continued model's
    first, replay, fixes), dedupe, the stratified split, balancing."""
    d = cfg.data
    collector = datasets.collect(parsed, inputs.files, inputs.rejects_path, inputs.sources.fixes)
    if d.on_bad_record == "error" and (err := collector.first_error()) is not None:
        raise err
    names, arrays = collector.arrays(inputs.sources.explicit)
    names, arrays, extras = final_labels(inputs.sources, names, arrays, collector.fix_hits, cfg.train.seed, d.nfkc,
                                         d.unescape_html)
    plan = make_plan(**arrays, n_labels=len(names), dedupe=d.dedupe, has_eval_source=d.eval is not None,
                     eval_fraction=d.eval_fraction, seed=cfg.train.seed, max_ratio=d.max_class_ratio,
                     balance=d.balance)
    _check_not_empty(plan.counts, names, collector, replay_class_counts(extras, names), get_task(cfg.task).min_labels)
    return Decision(collector, names, plan, extras)


def _check_not_empty(counts: dict, names: list[str], collector: Collector, replayed: Optional[list] = None,
                     min_labels: int = 2) -> None:
    summary = (f"{collector.rows_read} rows read, {sum(collector.rejected.values())} rejected, "
               f"{counts['duplicates_removed']} duplicates, {counts['empty_removed']} empty")
    if sum(counts["train_after"]) == 0:
        raise UserError(f"data.train: no training rows left ({summary})")
    if sum(counts["eval"]) == 0:
        raise UserError(f"no eval rows left ({summary}); give data.eval or a larger data.eval_fraction")
    replayed = replayed or [0] * len(names)
    present = [n for n, c, r in zip(names, counts["train_before"], replayed) if c or r]
    if len(present) < min_labels:
        raise UserError(f"data.train: a classifier needs at least 2 labels, found {present} ({summary})")


def select_splits(cfg: Config, parsed: Any, decision: Decision, augment: Optional[Callable]) -> tuple[dict, Any]:
    """The eval and train splits; the train split augmented (augment.enabled; eval is passed so that no
    augmented text can equal an eval text), then the replayed rows added (never augmented)."""
    splits = datasets.select_splits(parsed, decision.plan)
    aug_report = None
    if cfg.augment.enabled:
        if augment is None:
            from domainft.distributed.augment import augment_train as augment
        splits["train"], aug_report = augment(splits["train"], cfg, eval_ds=splits["eval"])
    if decision.extras.get("replay_table") is not None:
        splits["train"] = datasets.with_rows(splits["train"], decision.extras.pop("replay_table"))
    return splits, aug_report


def write_splits(cfg: Config, splits: dict, decision: Decision, inputs: Inputs, layout: PreparedLayout, live: Any,
                 phases: Phases, parsed_blocks: int) -> dict[str, int]:
    """Tokenize each split into the task's examples (an actor pool) and write its Parquet; rows written."""
    dirs, rows, counts = {"train": layout.train, "eval": layout.eval}, {}, decision.plan.counts
    augmented = cfg.augment.enabled
    actors = None if augmented else max(1, min(datasets.cpus(), parsed_blocks))
    planned = {"train": None if augmented else sum(counts["train_after"]), "eval": sum(counts["eval"])}
    examples = get_task(cfg.task).examples
    for split, ds in splits.items():
        reporter = live.reporter()
        reporter.bar(f"tokenize {split}", planned[split], "rows")
        rows[split] = datasets.tokenize_and_write(ds, dirs[split], inputs.encoder[split], cfg.data.max_length, examples,
                                                  actors, reporter)
        reporter.close(f"tokenize {split}")
        phases.lap(f"tokenize_write_{split}")
    return rows


def finish(cfg: Config, layout: PreparedLayout, fp: str, inputs: Inputs, decision: Decision, rows: dict,
           aug_report: Any, phases: Phases) -> dict:
    """The label map and data_report.json (written last: its presence means the outputs are complete),
    checked to add up, printed."""
    d, c = cfg.data, decision.collector
    write_label_map(layout.label_map, decision.names)
    report = build_report(
        rows_read=c.rows_read, rejected=dict(c.rejected), counts=decision.plan.counts, label_names=decision.names,
        blank_lines=c.blank_lines, train_rows=rows["train"], eval_rows=rows["eval"],
        max_class_ratio=d.max_class_ratio, balance=d.balance,
        eval_source="data.eval" if d.eval else (f"held out {d.eval_fraction:g} of data.train"
                                                 + (" (stratified)" if len(decision.names) > 1 else "")),
        paths={"train_dir": layout.train, "eval_dir": layout.eval, "rejects_path": inputs.rejects_path,
               "label_map_path": layout.label_map},
        fp=fp, seconds=phases.total, n_files=len(inputs.files))
    report["phase_seconds"] = {k: round(v, 3) for k, v in phases.seconds.items()}
    report["pad_token_id"] = inputs.pad_token_id  # the tokenizer's, which made the ids: what batches pad with
    if aug_report is not None:
        report["augmentation"] = aug_report
    report.update({k: v for k, v in decision.extras.items() if k != "replay_table"})
    planned = {"train": sum(decision.plan.counts["train_after"]), "eval": sum(decision.plan.counts["eval"])}
    report.update(get_task(cfg.task).report_extras(cfg, report, planned))
    problems = count_problems(report)
    if problems:
        raise RuntimeError("prepare: counts do not add up (a bug): " + "; ".join(problems))
    tmp = layout.report + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=2)
    os.replace(tmp, layout.report)
    print(format_report(report))
    return report
