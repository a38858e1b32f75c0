"""`domainft augment CONFIG`: augment the prepared train split on its own and write it, to look at the
output (`prepare` augments the train split itself when augment.enabled).

setup (the prepared, un-augmented train split: prepared first when missing) -> run (Ray Data:
distributed/augment.py) -> finish (data/augmented/, data/augment_report.json, the report and examples).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from domainft.config import Config, derive
from domainft.data.augment.pipeline import AUG_OP, SOURCE_ID, TEXT
from domainft.data.layout import PreparedLayout
from domainft.errors import UserError


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


def run_augment(cfg: Config) -> dict:
    """Reads <output_dir>/data/train/*.parquet (prepared first, with augmentation off, when missing),
    keeps its original rows, writes originals + augmented rows to <output_dir>/data/augmented/,
    the report to <output_dir>/data/augment_report.json, and prints the report and examples."""
    from domainft.tasks import require_labelled

    require_labelled(cfg, "augment")
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.augment import augment_prepared
    from domainft.distributed.cluster import init_ray

    if not cfg.augment.enabled:
        print("augment.enabled is false in the config; running the augmentation anyway (this command asks for it)",
              file=sys.stderr)
    cfg = derive(cfg, {"augment.enabled": True}, "augment")
    layout = PreparedLayout(cfg.output_dir)
    init_ray()
    if not layout.parquet_files("train"):
        ensure_prepared(derive(cfg, {"augment.enabled": False, "augment.ab": False}, "augment: the plain split"))
        if not layout.parquet_files("train"):
            raise UserError(f"no prepared train split under {layout.train} after prepare")
    dest = Path(layout.path("augmented"))
    if dest.exists():
        shutil.rmtree(dest)
    report, examples = augment_prepared(layout.parquet_files("train"), layout.parquet_files("eval"), cfg, str(dest))
    report_path = Path(layout.path("augment_report.json"))
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(format_report(report))
    for ex in examples:
        print(f"\n[{ex[SOURCE_ID]} | {ex[AUG_OP]}] {ex[TEXT][:300]!r}")
    print(f"\nwrote {dest} and {report_path}")
    return report
