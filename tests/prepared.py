"""A prepared-data report that `plan` and `train` take as this config's own (its fingerprint, split folders
holding a Parquet file), without running `prepare`: for tests of what is computed from the row counts."""
import json
from pathlib import Path

from domainft.data.freshness import prepare_fingerprint
from domainft.data.layout import PreparedLayout


def write_report(cfg, **report) -> dict:
    layout = PreparedLayout(cfg.output_dir)
    for split in ("train", "eval"):
        d = Path(layout.root) / split
        d.mkdir(parents=True, exist_ok=True)
        (d / "part-0.parquet").touch()  # fresh_report looks for the files only
        report.setdefault(f"{split}_dir", str(d))
    report = {**report, "fingerprint": prepare_fingerprint(cfg)}
    Path(layout.report).write_text(json.dumps(report))
    return report
