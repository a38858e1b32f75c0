"""Driver side of `domainft train`: prepare if stale, build the TorchTrainer, fit, then export the best
checkpoint as a Hugging Face directory with metrics.json and plots."""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Optional

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train import LoggingConfig
from ray.train.torch import TorchTrainer

from domainft.config import Config, to_dict
from domainft.distributed.cluster import init_ray
from domainft.distributed.worker import CKPT_TAG, STATE_FILE, geometry, train_fn_per_worker
from domainft.errors import UserError

def _loop_config(cfg: Config, report: dict, pad_token_id: int) -> dict[str, Any]:
    return {"config": to_dict(cfg),
            "data": {"label_names": report["label_names"], "train_rows": report["train_rows"],
                     "eval_rows": report["eval_rows"], "pad_token_id": pad_token_id}}


def _datasets(report: dict, cfg: Config) -> dict:
    cols = ["input_ids", "label"]
    # Per-operator bars from inside the workers would interleave with the training progress lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    train = ray.data.read_parquet(report["train_dir"]).select_columns(cols)
    evals = ray.data.read_parquet(report["eval_dir"]).select_columns(cols)
    # Ray Data read tasks need a CPU the training workers don't hold, or they wait forever (a silent
    # hang). When the workers leave under one CPU free, read everything into the object store first.
    free = ray.cluster_resources().get("CPU", 0) - cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    if free < 1:
        print(f"[train] {free:.1f} CPU left for Ray Data beside the workers: materializing the splits first")
        train, evals = train.materialize(), evals.materialize()
    return {"train": train, "eval": evals}


def run_fingerprint(cfg: Config, report: dict) -> str:
    """Ray Train resumes a run of the same name from its latest checkpoint. The default name carries
    this hash, so an identical resubmission resumes and a changed config or dataset starts afresh."""
    raw = to_dict(cfg)
    for section, key in (("run", "max_failures"), ("run", "keep_checkpoints"), ("train", "log_every_steps"),
                         ("augment", "ab")):
        raw[section].pop(key, None)
    raw["_data"] = report.get("fingerprint") or [report.get("train_dir"), report.get("train_rows")]
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]


def build_trainer(cfg: Config, report: dict, pad_token_id: int, callbacks: Optional[list] = None,
                  name: Optional[str] = None, storage_path: Optional[str] = None) -> TorchTrainer:
    """The TorchTrainer for one run; `domainft train` and every Tune trial build it the same way."""
    sc, rc = cfg.scaling, cfg.run
    geometry(report["train_rows"], sc.num_workers, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs)
    metric = cfg.train.metric_for_best
    resources = {"CPU": sc.cpus_per_worker} | ({"GPU": 1} if sc.use_gpu else {})
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=_loop_config(cfg, report, pad_token_id),
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name or rc.name or f"{os.path.basename(cfg.output_dir.rstrip('/')) or 'run'}-"
                                             f"{run_fingerprint(cfg, report)}",
            storage_path=storage_path or rc.storage_path or os.path.join(cfg.output_dir, "ray"),
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=rc.keep_checkpoints, checkpoint_score_attribute=metric,
                                               checkpoint_score_order="min" if metric == "loss" else "max"),
            callbacks=callbacks,
            # Ray Train's per-report INFO lines would drown our progress lines; warnings still show.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=_datasets(report, cfg),
        # Eval is not split: every rank sees all of it and takes every world-th batch (no row dropped).
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def run_train(cfg: Config) -> dict:
    """Prepare (if stale), train, export. Returns the summary written to metrics.json."""
    from domainft.distributed.datasets import ensure_prepared

    init_ray()
    return train_prepared(cfg, ensure_prepared(cfg))


def train_prepared(cfg: Config, report: dict, callbacks: Optional[list] = None, quiet: bool = False) -> dict:
    """Train on prepared splits (`report` from prepare: train_dir, eval_dir, label_names, row counts)."""
    t0 = time.time()
    from domainft.core import build_tokenizer

    tokenizer = build_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code,
                                revision=cfg.model.revision)
    trainer = build_trainer(cfg, report, pad_token_id=tokenizer.pad_token_id or 0, callbacks=callbacks)
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors; surface the worker's own message
        raise UserError(f"training failed: {e}") from e
    summary = finalize(cfg, result, report)
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(os.path.join(cfg.output_dir, "metrics.json"), summary)
    if not quiet:
        print(format_summary(summary))
    return summary


def best_checkpoint(result, metric: str):
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint")
    pick = min if metric == "loss" else max
    return pick(result.best_checkpoints, key=lambda cm: cm[1][metric])


def finalize(cfg: Config, result, report: dict) -> dict:
    """Export the best checkpoint (consolidated from ZeRO) and collect history, LR trace and plots."""
    from domainft.core import export_hf, plot_group_lrs, plot_learning_curves
    from domainft.engine.consolidate import full_state_dict

    metric = cfg.train.metric_for_best
    best_ckpt, best_metrics = best_checkpoint(result, metric)
    best_dir = os.path.join(cfg.output_dir, "best")
    with best_ckpt.as_directory() as d:
        state_dict = full_state_dict(d, CKPT_TAG)
        export_hf(state_dict, cfg.model.name_or_path, report["label_names"], cfg.model.name_or_path, best_dir,
                  trust_remote_code=cfg.model.trust_remote_code)
    with result.checkpoint.as_directory() as d:
        state = json.loads(open(os.path.join(d, STATE_FILE)).read())
    history = state["history"]
    best = next(h for h in history if h["epoch"] == best_metrics["epoch"])
    plots = {"learning_curves": os.path.join(cfg.output_dir, "learning_curves.png"),
             "group_lrs": os.path.join(cfg.output_dir, "group_lrs.png")}
    plot_learning_curves(history, plots["learning_curves"])
    plot_group_lrs(state["lr_trace"], plots["group_lrs"], events=state["unfreeze_events"])
    return {"best": best, "metric_for_best": metric, "history": history, "best_model_dir": best_dir,
            "lr_trace": state["lr_trace"], "unfreeze_events": state["unfreeze_events"], "groups": state["groups"],
            "plots": plots, "label_names": report["label_names"],
            "data": {k: report[k] for k in ("train_rows", "eval_rows") if k in report},
            "checkpoint": best_ckpt.path, "config": to_dict(cfg)}


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def format_summary(s: dict) -> str:
    lines = ["", "epoch  train_loss  eval_loss  accuracy  macro_f1  trainable_down_to"]
    for h in s["history"]:
        lines.append(f"{h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['eval_loss']:>9.4f}  {h['accuracy']:>8.4f}  "
                     f"{h['macro_f1']:>8.4f}  depth {h['lowest_trainable']}")
    b = s["best"]
    lines += ["", f"best epoch {b['epoch']} by {s['metric_for_best']}: accuracy {b['accuracy']:.4f}, "
                  f"macro-F1 {b['macro_f1']:.4f}", "", "class            precision  recall      f1  support"]
    for name, pc in b["per_class"].items():
        lines.append(f"{name[:16]:<16} {pc['precision']:>9.4f} {pc['recall']:>7.4f} {pc['f1']:>7.4f} "
                     f"{pc['support']:>8}")
    lines += ["", f"model: {s['best_model_dir']}", f"plots: {', '.join(s['plots'].values())}"]
    return "\n".join(lines)
