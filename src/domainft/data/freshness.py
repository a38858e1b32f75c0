"""Whether prepared data is still that of a config: a fingerprint of everything that decides it (the data
and augment sections, the seed, each input file's path, size and mtime, the tokenizer, the label sources)
and the report that carries it. `prepare` reuses fresh data; `plan` ignores stale data's row counts.
No Ray."""
from __future__ import annotations

import json
import os
from typing import Optional

from domainft.config import Config
from domainft.data.label_fixes import file_digest
from domainft.data.labels import model_label_names
from domainft.data.layout import PreparedLayout
from domainft.data.report import fingerprint
from domainft.data.sources import input_signature
from domainft.data.tokenize import tokenizer_signature


def prepare_fingerprint(cfg: Config) -> str:
    """Hash of data + augment config, seed, each local input file's path, size and mtime, and what
    decides the tokenizer: model path, revision, trust_remote_code, a local folder's tokenizer files."""
    d, m = cfg.data, cfg.model
    inputs = {"train": input_signature(d.train, d.file_format), "eval": input_signature(d.eval, d.file_format),
              "labels": _label_signature(cfg), "task": cfg.task}  # another task prepares the corpus otherwise
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


def fresh_report(layout: PreparedLayout, fp: str) -> Optional[dict]:
    """The report of complete prepared data with fingerprint `fp`, else None."""
    try:
        with open(layout.report, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    if report.get("fingerprint") != fp:
        return None
    for d in (report.get("train_dir"), report.get("eval_dir")):
        if not d or not os.path.isdir(d) or not any(n.endswith(".parquet") for n in os.listdir(d)):
            return None
    return report
