"""`domainft export MODEL_DIR OUT_DIR`: setup (the folder, the length and the check data, before any export
work) -> run (fp32 export and parity, the checks, optional int8: export/pipeline.py, in phases) -> finish
(export_report.json, the summary; exit 1 when a parity or int8 check failed: not a user error)."""
from __future__ import annotations

from typing import Optional


def run(model_dir: str, out_dir: str, quantize: Optional[str] = None, check: Optional[str] = None,
        max_length: Optional[int] = None, trust_remote_code: bool = False, exporter: str = "torchscript",
        threads: Optional[int] = None) -> int:
    from domainft.export.pipeline import format_summary, run_export

    report = run_export(model_dir, out_dir, quantize=quantize, check=check, max_length=max_length,
                        trust_remote_code=trust_remote_code, exporter=exporter, threads=threads)
    print(format_summary(report))
    return 0 if report["passed"] else 1
