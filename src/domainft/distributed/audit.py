"""`domainft audit CONFIG [--folds K]`: find likely label errors in the prepared train split by K-fold
cross-validation through the real engine, then cleanlab on the out-of-fold probabilities.

1. The prepared train split's original rows are cut into K stratified folds (data/audit.py). Fold k
   trains on every row except fold k's (and their balancing copies and augmentations) and is
   selected on the prepared eval split; its Parquet lives in <output_dir>/audit/folds/k/.
2. The folds are independent Ray Train runs (`build_trainer`, as `domainft train` builds them), run
   as a Ray Tune grid over the fold index, as many at a time as the cluster fits (capacity.py).
   Each exports its best/ and scores its held-out rows with it: oof.parquet.
3. cleanlab's find_label_issues on the out-of-fold probabilities, most likely wrong first:
   label_issues.csv (with an empty `fix` column for the reviewer) and audit_report.json.

A fold that finished with the same settings is reused when the audit runs again.
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
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from domainft import console
from domainft.config import Config, to_dict, validate_dict
from domainft.config.identity import identity_hash, run_identity
from domainft.data.audit import (ROW, AuditLayout, assign_folds, build_audit_report, find_issues, fold_tables,
                                 format_audit, issue_rows, original_mask, write_issues_csv)
from domainft.distributed.capacity import max_concurrent_trials, trial_resources
from domainft.distributed.cluster import init_ray
from domainft.distributed.ray_internals import PG_FILE, RecordPlacementGroup, release_placement_group
from domainft.distributed.trainer import build_trainer, finalize, user_error_of, write_json
from domainft.distributed.tuning import TRIAL_ACTOR, _pad_token_id
from domainft.errors import UserError

COLUMNS = ["input_ids", "label", "text", "source_id", "aug_op", "is_augmented"]
OOF, IDENTITY = "oof.parquet", "identity.json"


def run_audit(cfg: Config, folds: int = 5) -> dict:
    """Prepare (if stale), train the K folds, find label issues, write and print the results.

    Returns:
        The audit report (also <output_dir>/audit/audit_report.json).
    """
    t0 = time.time()
    from domainft.distributed.datasets import ensure_prepared

    init_ray()
    report = ensure_prepared(cfg)
    layout = AuditLayout(cfg.output_dir)
    table = pq.read_table(report["train_dir"], columns=COLUMNS)
    original, excluded = original_mask(table)
    labels = table.column("label").to_numpy()[original]
    fold = assign_folds(labels, folds, cfg.train.seed)
    names = report["label_names"]
    console.say(f"[audit] {len(labels)} original train rows in {folds} folds (not audited: "
                + ", ".join(f"{v} {k}" for k, v in excluded.items() if v or k != "other") + ")")
    reports, todo = _write_folds(cfg, report, table, original, fold, folds, layout)
    fold_seconds = _train_folds(cfg, reports, todo, layout) if todo else {}
    probs = _gather(layout, folds, len(labels), len(names))

    sub = table.filter(pa.array(original))
    found = find_issues(labels, probs)
    from domainft.core.metrics import confusion_matrix, metrics_from_confusion
    from domainft.data.sources import collect_sources

    oof = metrics_from_confusion(confusion_matrix(probs.argmax(1), labels, len(names)), names)
    file_of = {f.name: f.uri for f in collect_sources(cfg.data.train, cfg.data.eval, cfg.data.format)}
    rows = issue_rows(found, labels, sub.column("source_id").to_pylist(), sub.column("text").to_pylist(), names,
                      file_of)
    write_issues_csv(layout.issues_csv, rows)
    audit = build_audit_report(
        labels, found, names, folds, excluded,
        out_of_fold={"accuracy": oof["accuracy"], "macro_f1": oof["macro_f1"]},
        folds_reused=[k for k in range(folds) if k not in todo], fold_seconds=fold_seconds,
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
                      "fingerprint": f"{report.get('fingerprint')}:audit:{folds}:{k}"}
        write_json(os.path.join(out, IDENTITY), {"identity": ident, "fold": k, "folds": folds})
        todo.append(k)
    return reports, todo


def _train_folds(cfg: Config, reports: dict[int, dict], todo: list[int], layout: AuditLayout) -> dict[int, float]:
    """Train and score the folds in `todo` as a Tune grid; returns each fold's seconds."""
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    need_cpu, need_gpu = trial_resources(cfg)
    c = max_concurrent_trials(cpus, gpus, need_cpu, need_gpu, total=len(todo))
    if c.trials < 1:
        raise UserError(f"audit: one fold trains like `domainft train`: {cfg.scaling.num_workers} worker(s) x "
                        f"{cfg.scaling.cpus_per_worker:g} CPU" + (" + GPU" if need_gpu else "")
                        + f", plus 1 CPU for Ray Data, but the cluster has {cpus:g} CPU"
                        + (f", {gpus:g} GPU" if need_gpu else "") + ": lower scaling.num_workers or cpus_per_worker")
    how = (f"{c.trials} at a time" if c.trials > 1 else
           f"one at a time (only one fits: limited by {c.limited_by})") + f"; {c.describe(cpus, gpus).split(': ', 1)[1]}"
    console.say(f"[audit] training {len(todo)} fold(s), {how}")
    base = to_dict(cfg)
    trainable = tune.with_resources(
        tune.with_parameters(_fold_trial, base=base, reports=reports, pad_token_id=_pad_token_id(cfg),
                             folds_dir=layout.folds), TRIAL_ACTOR)
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    storage = os.path.join(layout.root, "ray")
    shutil.rmtree(os.path.join(storage, "audit"), ignore_errors=True)  # folds resume on their own (above)
    progress = FoldProgress(layout.folds, cfg.train.epochs, len(todo))
    tuner = tune.Tuner(
        trainable, param_space={"fold": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(max_concurrent=c.trials),
                                    scheduler=FIFOScheduler(), num_samples=1),
        run_config=tune.RunConfig(name="audit", storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0), callbacks=[progress]))
    with console.to_log():  # Ray Tune and Train's own start-up and shutdown chatter
        grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise user_error_of(errors[0]) or errors[0]
    missing = [k for k in todo if not os.path.isfile(os.path.join(layout.fold(k), OOF))]
    if missing:
        raise RuntimeError(f"audit: folds {missing} finished without scoring their held-out rows")
    return progress.seconds


class FoldProgress(tune.Callback):
    """Driver side: one line per fold epoch and per finished fold; releases a fold's placement group."""

    def __init__(self, folds_dir: str, epochs: int, total: int):
        self.folds_dir, self.epochs, self.total = folds_dir, epochs, total
        self.started: dict[str, float] = {}
        self.seconds: dict[int, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.started[trial.trial_id] = time.time()
        console.say(f"[audit] fold {trial.config['fold']}: training")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if "macro_f1" in result:
            console.say(f"[audit] fold {trial.config['fold']}: epoch {result.get('epoch')}/{self.epochs}, eval "
                        f"macro-F1 {result['macro_f1']:.4f}, accuracy {result.get('accuracy', 0):.4f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        k = trial.config["fold"]
        self.seconds[k] = round(time.time() - self.started.get(trial.trial_id, time.time()), 1)
        release_placement_group(self.folds_dir, str(k))
        console.say(f"[audit] fold {k}: done in {self.seconds[k]:.0f} s, held-out rows scored "
                    f"({len(self.seconds)}/{self.total} folds)")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        release_placement_group(self.folds_dir, str(trial.config["fold"]))


def _fold_trial(params: dict, base: dict, reports: dict, pad_token_id: int, folds_dir: str) -> None:
    """One fold: the same TorchTrainer as `domainft train` on the fold's train split, then its best/
    scores the held-out rows (oof.parquet: audit_row, probs)."""
    k = int(params["fold"])
    out = os.path.join(folds_dir, str(k))
    raw = {**base, "output_dir": out, "run": {**base["run"], "name": None, "storage_path": None}}
    cfg = validate_dict(raw, source=f"audit fold {k}", check_paths=False)
    report = reports[k]
    trainer = build_trainer(cfg, report, pad_token_id,
                            callbacks=[TuneReportCallback(), RecordPlacementGroup(os.path.join(out, PG_FILE))],
                            name=f"fold_{k}", storage_path=os.path.join(out, "ray"))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    summary = finalize(cfg, result, report)
    write_json(os.path.join(out, "metrics.json"), summary)
    _score_heldout(summary["best_model_dir"], report["heldout_dir"], os.path.join(out, OOF), pad_token_id)


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
