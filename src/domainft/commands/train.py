"""`domainft train CONFIG`: setup (the config's problems with its model and data, then prepare if stale,
then the RunSpec: every problem a user error before Ray Train starts) -> run (Ray Train + DeepSpeed, one
worker loop per rank) -> finish (best/ as the task writes it, metrics.json, plots, the summary).

`train_prepared` is the run and finish on data already prepared: the A/B arms (`run_ab`, train with and
without augmentation), distillation and audit folds train through it too.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from domainft.config import Config, derive, to_dict
from domainft.errors import UserError
from domainft.planning import build_spec, check_model
from domainft.runspec import RunSpec
from domainft.summary import format_summary
from domainft.tasks import get_task


def main(cfg: Config, source: str = "the config") -> dict:
    """`domainft train`: prepare if needed, train, export."""
    if cfg.distill.teacher:
        raise UserError(f"{source}: distill.teacher is set: run `domainft distill` to distil, or remove it")
    return run_ab(cfg) if cfg.augment.ab else run_train(cfg)


def run_train(cfg: Config) -> dict:
    """Prepare (if stale), train, export. Returns the summary written to metrics.json."""
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.cluster import init_ray

    check_model(cfg)  # the model's family and PEFT needs, from config.json: before the data is prepared
    init_ray()
    return train_prepared(cfg, ensure_prepared(cfg))


def train_prepared(cfg: Config, report: dict, callbacks: Optional[list] = None, quiet: bool = False) -> dict:
    """Train on prepared splits (`report` from prepare: train_dir, eval_dir, label_names, row counts,
    pad_token_id) and finish. Returns the summary written to metrics.json."""
    from domainft.distributed.trainer import fit

    t0 = time.time()
    spec = build_spec(cfg, report)
    result = fit(spec, callbacks)
    summary = finish(cfg, spec, result)
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(os.path.join(cfg.output_dir, "metrics.json"), summary)
    if not quiet:
        print(format_summary(summary, get_task(spec.task).summary_lines(summary)))
    return summary


def finish(cfg: Config, spec: RunSpec, result: Any) -> dict:
    """best/ from the best checkpoint's trained fp32 weights (over the pretrained model), the history, LR
    trace and unfreezing events, the plots and the task's warnings, and, for a run that continues another,
    its forgetting. Returns the summary (metrics.json without `seconds`)."""
    from domainft import console
    from domainft.core import plot_group_lrs, plot_learning_curves

    task, state = get_task(spec.task), result.state
    with console.to_log():  # DeepSpeed's consolidation and transformers' save reports
        exported = task.export(spec, result.best_weights(), state.trained_params())
    history = state.history
    best = next(h for h in history if h["epoch"] == result.best_metrics["epoch"])
    plots = {"learning_curves": os.path.join(cfg.output_dir, "learning_curves.png"),
             "group_lrs": os.path.join(cfg.output_dir, "group_lrs.png")}
    plot_learning_curves(history, plots["learning_curves"])
    plot_group_lrs(state.lr_trace, plots["group_lrs"], events=state.unfreeze_events)
    summary = {"best": best, "metric_for_best": spec.train.metric_for_best, "history": history,
               "lr_trace": state.lr_trace, "unfreeze_events": state.unfreeze_events,
               "groups": [{k: v for k, v in g.items() if k != "param_names"} for g in state.groups],
               "resumed_from": state.resumed_from, "stopped_early": state.stopped_early,
               "warnings": task.warnings(best, history, spec), "plots": plots,
               "label_names": spec.data.label_names,
               "data": {"train_rows": spec.data.train_rows, "eval_rows": spec.data.eval_rows},
               "checkpoint": result.best_checkpoint.path, "config": to_dict(cfg),
               "trainable_params": state.trainable_params, "total_params": state.total_params,
               "peft_method": spec.model.peft.method, **exported}
    with console.to_log():
        summary.update(continual_scores(cfg, spec, summary["best_model_dir"]))
    return summary


def continual_scores(cfg: Config, spec: RunSpec, best_dir: str) -> dict:
    """{"continual": scores on the previous run's eval split and the new one, before and after} when
    this run continues one (data.replay.from, or a domainft best/ as model.name_or_path); else {}."""
    from domainft.core.scoring import forgetting_metrics
    from domainft.data.replay import previous_output_dir, previous_run

    previous = previous_output_dir(cfg.data.replay.from_, cfg.model.name_or_path, cfg.output_dir)
    if previous is None or not spec.data.eval_dir:
        return {}
    prev = previous_run(previous)
    scores = forgetting_metrics(prev.eval_dir, prev.label_names, spec.data.eval_dir, spec.data.label_names, best_dir,
                                cfg.model.name_or_path, cfg.data.max_length)
    return {"continual": {"previous_output_dir": previous, **scores}}


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def ab_configs(cfg: Config) -> dict[str, Config]:
    return {arm: derive(cfg, {"augment.enabled": enabled, "augment.ab": False,
                              "output_dir": os.path.join(cfg.output_dir, "ab", arm)}, f"A/B {arm}")
            for arm, enabled in (("baseline", False), ("augmented", True))}


def run_ab(cfg: Config) -> dict:
    """`domainft train CONFIG augment.ab=true`: train with and without augmentation on the same split and
    seed, and report both side by side (augmentation often gives pretrained transformers no gain): the
    two arms' configs and prepared data (checked to share the eval split), each arm trained as `train`
    trains, then ab_report.json and the table."""
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.cluster import init_ray

    check_model(cfg)
    init_ray()
    arms = ab_configs(cfg)
    reports = {arm: ensure_prepared(c) for arm, c in arms.items()}
    # Same input, seed and split code: the eval splits must be identical, or the comparison is void.
    if reports["baseline"]["eval_rows"] != reports["augmented"]["eval_rows"]:
        raise UserError("A/B: the two arms got different eval splits; check data.eval / train.seed")
    results = {}
    for arm, c in arms.items():
        print(f"\n=== A/B arm: {arm} ({reports[arm]['train_rows']} train rows) ===", flush=True)
        results[arm] = train_prepared(c, reports[arm])
    table = {arm: {"train_rows": reports[arm]["train_rows"], "eval_rows": reports[arm]["eval_rows"],
                   "accuracy": r["best"]["accuracy"], "macro_f1": r["best"]["macro_f1"],
                   "best_epoch": r["best"]["epoch"]} for arm, r in results.items()}
    delta = {k: table["augmented"][k] - table["baseline"][k] for k in ("accuracy", "macro_f1")}
    out = {"arms": table, "delta_augmented_minus_baseline": delta,
           "augmentation": reports["augmented"].get("augmentation")}
    os.makedirs(cfg.output_dir, exist_ok=True)
    with open(os.path.join(cfg.output_dir, "ab_report.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(format_ab(out))
    return out


def format_ab(out: dict) -> str:
    lines = ["", "arm         train_rows  eval_rows  accuracy  macro_f1  best_epoch"]
    for arm, r in out["arms"].items():
        lines.append(f"{arm:<11} {r['train_rows']:>10} {r['eval_rows']:>10} {r['accuracy']:>9.4f} "
                     f"{r['macro_f1']:>9.4f} {r['best_epoch']:>11}")
    d = out["delta_augmented_minus_baseline"]
    lines.append(f"augmented - baseline: accuracy {d['accuracy']:+.4f}, macro-F1 {d['macro_f1']:+.4f}")
    return "\n".join(lines)
