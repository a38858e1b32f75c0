"""`domainft augment CONFIG`: augment the prepared train split on its own and write it (the prepare
pipeline augments through distributed/augment.py itself; this command is for looking at the output)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from domainft.data.layout import PreparedLayout
from domainft.data.augment.pipeline import AUG_OP, IS_AUGMENTED, SOURCE_ID, TEXT
from domainft.distributed.augment import augment_train
from domainft.distributed.datasets import ensure_prepared
from domainft.errors import UserError


def _originals_only(table: pa.Table) -> pa.Table:
    return table.filter(pc.invert(table.column(IS_AUGMENTED)))


def _augmented_only(table: pa.Table) -> pa.Table:
    return table.filter(table.column(IS_AUGMENTED))


def _split_files(output_dir: str, split: str) -> list[str]:
    return PreparedLayout(output_dir).parquet_files(split)


def format_report(report: dict) -> str:
    """A plain-text table of the augmentation report."""
    lines = [f"augmentation: {report.get('rows_in', 0)} rows in -> {report.get('rows_out', 0)} rows out "
             f"({report.get('augmented', 0)} augmented of {report.get('attempted', 0)} attempted, "
             f"{report.get('seconds', 0)} s)"]
    width = max([len(k) for k in list(report.get("rows_per_op", {})) + list(report.get("dropped", {}))] + [10])
    lines.append(f"  {'kept, per op'.ljust(width)}  rows")
    for op, n in report.get("rows_per_op", {}).items():
        lines.append(f"  {op.ljust(width)}  {n}")
    lines.append(f"  {'dropped, per reason'.ljust(width)}  rows")
    for reason, n in report.get("dropped", {}).items():
        lines.append(f"  {reason.ljust(width)}  {n}")
    return "\n".join(lines)


def run_augment(cfg: Any) -> dict:
    """`domainft augment CONFIG`: augment the prepared, un-augmented train split and write it.

    Reads <output_dir>/data/train/*.parquet (prepared first, with augmentation off, when missing),
    keeps its original rows, writes originals + augmented rows to <output_dir>/data/augmented/,
    the report to <output_dir>/data/augment_report.json, and prints the report and examples.
    """
    if not cfg.augment.enabled:
        cfg = cfg.model_copy(deep=True)
        cfg.augment.enabled = True
        print("augment.enabled is false in the config; running the augmentation anyway (this command asks for it)",
              file=sys.stderr)
    from domainft.distributed.cluster import init_ray

    init_ray()
    train_files = _split_files(cfg.output_dir, "train")
    if not train_files:
        plain = cfg.model_copy(deep=True)
        plain.augment.enabled = False
        ensure_prepared(plain)
        train_files = _split_files(cfg.output_dir, "train")
        if not train_files:
            raise UserError(f"no prepared train split under {cfg.output_dir}/data/train after prepare")
    train = ray.data.read_parquet(train_files)
    if IS_AUGMENTED in train.schema().names:  # a split prepared with augmentation on: start from its originals
        train = train.map_batches(_originals_only, batch_format="pyarrow")
    eval_files = _split_files(cfg.output_dir, "eval")
    eval_ds = ray.data.read_parquet(eval_files) if eval_files else None
    out, report = augment_train(train, cfg, eval_ds=eval_ds)
    dest = Path(PreparedLayout(cfg.output_dir).path("augmented"))
    if dest.exists():
        shutil.rmtree(dest)
    out.write_parquet(str(dest))
    report_path = Path(PreparedLayout(cfg.output_dir).path("augment_report.json"))
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(format_report(report))
    examples = out.map_batches(_augmented_only, batch_format="pyarrow").take(4)
    for ex in examples:
        print(f"\n[{ex[SOURCE_ID]} | {ex[AUG_OP]}] {ex[TEXT][:300]!r}")
    print(f"\nwrote {dest} and {report_path}")
    return report
