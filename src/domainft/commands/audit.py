"""`domainft audit CONFIG [--folds K]`: find likely label errors in the prepared train split by K-fold
cross-validation through the real engine, then cleanlab on the out-of-fold probabilities.

setup: the prepared train split's original rows are cut into K stratified folds (data/audit.py). Fold k
trains on every row except fold k's (and their balancing copies and augmentations) and is selected on
the prepared eval split; its Parquet lives in <output_dir>/audit/folds/k/. A fold that finished with the
same settings is reused.
run: the folds are independent Ray Train runs, `train_prepared`'s run and finish, as a Ray Tune grid over
the fold index (distributed/tune.py), as many at a time as the cluster fits. Each exports its best/ and
scores its held-out rows with it: oof.parquet.
finish: cleanlab's find_label_issues on the out-of-fold probabilities, most likely wrong first:
label_issues.csv (with an empty `fix` column for the reviewer) and audit_report.json.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from domainft import console
from domainft.config import Config, derive, to_dict
from domainft.commands.train import write_json
from domainft.config.identity import identity_hash, run_identity
from domainft.data.audit import (ROW, AuditLayout, assign_folds, build_audit_report, find_issues, fold_tables,
                                 format_audit, issue_rows, original_mask, write_issues_csv)

COLUMNS = ["input_ids", "label", "text", "source_id", "aug_op", "is_augmented"]
OOF, IDENTITY = "oof.parquet", "identity.json"


def run_audit(cfg: Config, folds: int = 5) -> dict:
    """Prepare (if stale), train the K folds, find label issues, write and print the results.

    Returns:
        The audit report (also <output_dir>/audit/audit_report.json).
    """
    from domainft.tasks import require_labelled

    require_labelled(cfg, "audit")
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.cluster import init_ray
    from domainft.planning import check_model

    t0 = time.time()
    check_model(cfg)
    init_ray()
    # setup: the prepared train split's original rows, cut into folds; the folds to (re)train
    report = ensure_prepared(cfg)
    layout = AuditLayout(cfg.output_dir)
    table = pq.read_table(report["train_dir"], columns=COLUMNS)
    original, excluded = original_mask(table)
    labels = table.column("label").to_numpy()[original]
    fold = assign_folds(labels, folds, cfg.train.seed)
    console.say(f"[audit] {len(labels)} original train rows in {folds} folds (not audited: "
                + ", ".join(f"{v} {k}" for k, v in excluded.items() if v or k != "other") + ")")
    reports, todo = _write_folds(cfg, report, table, original, fold, folds, layout)
    # run: each fold a Ray Train run, as a Tune grid
    fold_seconds = _train_folds(cfg, reports, todo, layout) if todo else {}
    # finish: cleanlab on the out-of-fold probabilities
    probs = _gather(layout, folds, len(labels), len(report["label_names"]))
    return finish(cfg, report, layout, table.filter(pa.array(original)), labels, probs, excluded,
                  {"folds": folds, "folds_reused": [k for k in range(folds) if k not in todo],
                   "fold_seconds": fold_seconds}, t0)


def finish(cfg: Config, report: dict, layout: AuditLayout, audited: pa.Table, labels: np.ndarray,
           probs: np.ndarray, excluded: dict, folds: dict, t0: float) -> dict:
    """label_issues.csv (most likely wrong first, with an empty `fix` column), audit_report.json, the table."""
    from domainft.core.metrics import confusion_matrix, metrics_from_confusion
    from domainft.data.sources import collect_sources

    names = report["label_names"]
    found = find_issues(labels, probs)
    oof = metrics_from_confusion(confusion_matrix(probs.argmax(1), labels, len(names)), names)
    file_of = {f.name: f.uri for f in collect_sources(cfg.data.train, cfg.data.eval, cfg.data.file_format)}
    rows = issue_rows(found, labels, audited.column("source_id").to_pylist(), audited.column("text").to_pylist(),
                      names, file_of)
    write_issues_csv(layout.issues_csv, rows)
    audit = build_audit_report(
        labels, found, names, folds["folds"], excluded,
        out_of_fold={"accuracy": oof["accuracy"], "macro_f1": oof["macro_f1"]},
        folds_reused=folds["folds_reused"], fold_seconds=folds["fold_seconds"],
        label_issues_csv=layout.issues_csv, prepared_fingerprint=report.get("fingerprint"),
        seconds=round(time.time() - t0, 1))
    write_json(layout.report, audit)
    print(format_audit(audit, rows))
    return audit


def _fold_identity(cfg: Config, report: dict, folds: int, k: int) -> str:
    return identity_hash(run_identity(cfg, f"{report.get('fingerprint')}:audit:{folds}:{k}:{cfg.train.seed}"))


def _write_folds(cfg: Config, report: dict, table: pa.Table, original: np.ndarray, fold: np.ndarray, folds: int,
                 layout: AuditLayout) -> tuple[dict[int, dict], list[int]]:
    """Each fold's train/ and heldout/ Parquet and its prepared-splits dict; the folds still to train
    (a finished fold with the same identity is kept, any other fold folder is started afresh)."""
    reports, todo = {}, []
    for k in range(folds):
        out = layout.fold(k)
        ident = _fold_identity(cfg, report, folds, k)
        recorded = _read_json(os.path.join(out, IDENTITY)).get("identity")
        if recorded == ident and os.path.isfile(os.path.join(out, OOF)):
            console.say(f"[audit] fold {k}: reusing the finished fold in {out}")
            continue
        if recorded != ident and os.path.isdir(out):
            shutil.rmtree(out)
        train, held = fold_tables(table, original, fold, k)
        for name, t in (("train", train), ("heldout", held)):
            os.makedirs(os.path.join(out, name), exist_ok=True)
            pq.write_table(t, os.path.join(out, name, "part-0.parquet"))
        names = report["label_names"]
        counts = np.bincount(train.column("label").to_numpy(), minlength=len(names))
        reports[k] = {"train_dir": os.path.join(out, "train"), "eval_dir": report["eval_dir"],
                      "heldout_dir": os.path.join(out, "heldout"), "label_names": names,
                      "train_rows": train.num_rows, "eval_rows": report["eval_rows"], "heldout_rows": held.num_rows,
                      "class_counts_after": {n: int(c) for n, c in zip(names, counts)},
                      "pad_token_id": report["pad_token_id"],
                      "fingerprint": f"{report.get('fingerprint')}:audit:{folds}:{k}"}
        write_json(os.path.join(out, IDENTITY), {"identity": ident, "fold": k, "folds": folds})
        todo.append(k)
    return reports, todo


def _train_folds(cfg: Config, reports: dict[int, dict], todo: list[int], layout: AuditLayout) -> dict[int, float]:
    """Train and score the folds in `todo` as a Tune grid; returns each fold's seconds."""
    from domainft.distributed import tune
    from domainft.distributed.trainer import user_error_of

    c, cpus, gpus = tune.concurrency(cfg, total=len(todo), what="the audit (each fold trains like `domainft train`)")
    how = f"{c.trials} at a time" if c.trials > 1 else f"one at a time (only one fits: limited by {c.limited_by})"
    how += f"; {c.describe(cpus, gpus).split(': ', 1)[1]}"
    console.say(f"[audit] training {len(todo)} fold(s), {how}")
    fl = FoldLines(cfg.train.epochs, len(todo))
    lines = tune.TrialLines(on_start=fl.start, on_result=fl.result, on_complete=fl.complete)
    storage = os.path.join(layout.root, "ray")
    shutil.rmtree(os.path.join(storage, "audit"), ignore_errors=True)  # folds resume on their own (above)
    with console.to_log():  # Ray Tune and Train's own start-up and shutdown chatter
        results = tune.run_trials(_fold_trial, {"base": to_dict(cfg), "reports": reports}, storage=storage,
                                  name="audit", trials_dir=layout.folds, param_space=tune.grid("fold", todo),
                                  tune_config=tune.grid_tune_config(c.trials), dir_param="fold", lines=lines)
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise user_error_of(errors[0]) or errors[0]
    missing = [k for k in todo if not os.path.isfile(os.path.join(layout.fold(k), OOF))]
    if missing:
        raise RuntimeError(f"audit: folds {missing} finished without scoring their held-out rows")
    return fl.seconds


class FoldLines:
    """The console lines of the folds as they start, finish epochs and finish; each fold's seconds."""

    def __init__(self, epochs: int, total: int):
        self.epochs, self.total = epochs, total
        self.seconds: dict[int, float] = {}

    def start(self, config: dict) -> None:
        console.say(f"[audit] fold {config['fold']}: training")

    def result(self, config: dict, r: dict) -> None:
        if "macro_f1" in r:
            console.say(f"[audit] fold {config['fold']}: epoch {r.get('epoch')}/{self.epochs}, eval "
                        f"macro-F1 {r['macro_f1']:.4f}, accuracy {r.get('accuracy', 0):.4f}")

    def complete(self, config: dict, seconds: float) -> None:
        self.seconds[config["fold"]] = seconds
        console.say(f"[audit] fold {config['fold']}: done in {seconds:.0f} s, held-out rows scored "
                    f"({len(self.seconds)}/{self.total} folds)")


def _fold_trial(params: dict, ctx: Any, base: dict, reports: dict) -> None:
    """One fold (in its Tune actor): the run `domainft train` runs on the fold's train split, then its
    best/ scores the held-out rows (oof.parquet: audit_row, probs)."""
    from domainft.commands.train import finish
    from domainft.distributed.trainer import fit
    from domainft.planning import build_spec

    k = int(params["fold"])
    cfg = derive(base, {"output_dir": ctx.trial_dir, "run.name": f"fold_{k}",
                        "run.storage_path": os.path.join(ctx.trial_dir, "ray")}, f"audit fold {k}")
    report = reports[k]
    spec = build_spec(cfg, report)
    summary = finish(cfg, spec, fit(spec, ctx.callbacks, live=False))
    write_json(os.path.join(ctx.trial_dir, "metrics.json"), summary)
    _score_heldout(summary["best_model_dir"], report["heldout_dir"], os.path.join(ctx.trial_dir, OOF),
                   spec.data.pad_token_id)


def _score_heldout(best_dir: str, heldout_dir: str, path: str, pad_token_id: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from domainft.core.scoring import predict_proba

    held = pq.read_table(heldout_dir, columns=["input_ids", ROW])
    model = AutoModelForSequenceClassification.from_pretrained(best_dir, dtype=torch.float32)
    probs = predict_proba(model, held.column("input_ids").to_pylist(), pad_id=pad_token_id)
    tmp = path + ".tmp"
    pq.write_table(pa.table({ROW: held.column(ROW), "probs": pa.array(list(probs), pa.list_(pa.float32()))}), tmp)
    os.replace(tmp, path)  # its presence means the fold is complete


def _gather(layout: AuditLayout, folds: int, n: int, n_labels: int) -> np.ndarray:
    """(n, C) out-of-fold probabilities, every audited row exactly once."""
    probs = np.full((n, n_labels), np.nan, dtype=np.float32)
    for k in range(folds):
        t = pq.read_table(os.path.join(layout.fold(k), OOF))
        probs[t.column(ROW).to_numpy()] = np.stack(t.column("probs").to_numpy(zero_copy_only=False))
    if np.isnan(probs).any():
        raise RuntimeError(f"audit: {int(np.isnan(probs).any(axis=1).sum())} audited rows have no out-of-fold score")
    return probs


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
