"""`domainft tune SWEEP.yaml`: a Ray Tune sweep in which every trial is the same Ray Train run as
`domainft train`, on data prepared once.

setup (the sweep and base config, the model checks, how many trials fit, the data) -> run (the trials:
distributed/tune.py; each trial's config is the base with its sampled values, `config.derive`) ->
finish (the ranked table, results.csv, the metric-vs-parameter plot, best_config.yaml).

Layout of <output_dir>:
    sweep.yaml              the resolved sweep and base config (a resumed sweep must match it)
    ray/sweep/              Ray Tune's experiment (what `Tuner.restore` resumes)
    trials/<trial_id>/      each trial's train output_dir: config.yaml, its Ray Train run under ray/
    results.csv, metric_vs_params.png, best_config.yaml
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import yaml

from domainft.config import Config, ConfigError, derive, dump_yaml, to_dict
from domainft.config.sweep import SweepConfig, load_sweep, sweep_to_dict, total_trials, trial_changes
from domainft.errors import UserError
from domainft.tuning_results import (BEST_CONFIG, PLOT_PNG, RESULTS_CSV, best_config, format_table,
                                     plot_metric_vs_params, rank, trial_row, write_best_config, write_csv)

EXPERIMENT = "sweep"
SWEEP_RECORD = "sweep.yaml"
HISTORY_KEYS = ("epoch", "macro_f1", "accuracy", "eval_loss", "loss", "train_loss")


def run_tune(sweep_path: str, overrides: Iterable[str] = ()) -> dict:
    """`domainft tune SWEEP.yaml [overrides]`: validate, prepare the data once, sweep, write results.

    Returns:
        The summary of `run_sweep`.
    """
    from domainft.commands.prepare import ensure_prepared
    from domainft.distributed.cluster import init_ray
    from domainft.distributed.tune import concurrency
    from domainft.planning import check_model

    sweep, base_cfg = load_sweep(sweep_path, overrides)  # every problem, before Ray starts
    check_model(base_cfg)
    init_ray()
    concurrency(base_cfg, total_trials(sweep), sweep.max_concurrent_trials)  # never runs: fail before preparing
    return run_sweep(sweep, base_cfg, ensure_prepared(base_cfg))


def run_sweep(sweep: SweepConfig, base_cfg: Config, report: dict, verbose: int = 1) -> dict:
    """Run (or resume) the sweep on prepared data and write its results.

    Args:
        sweep: From `load_sweep` (paths absolute).
        base_cfg: The base train config with the sweep's `fixed` merged in.
        report: Prepared splits (`ensure_prepared(base_cfg)`): train_dir, eval_dir, label_names, row counts.
        verbose: Ray Tune's console verbosity (0 silent, 1 status tables).

    Returns:
        {"rows": ranked trial rows (see domainft.tuning_results), "best": the best row, "table": the
         printed table, "results_csv", "plot", "best_config": paths, "max_concurrent_trials": int,
         "resumed": bool, "interrupted": bool (trials left unfinished: run it again to resume)}

    Raises:
        UserError: not even one trial fits on the cluster; a resumed sweep differs from the one recorded;
            no trial reported the metric.
    """
    from domainft.distributed import tune

    c, cpus, gpus = tune.concurrency(base_cfg, total_trials(sweep), sweep.max_concurrent_trials)
    print(f"[tune] {c.describe(cpus, gpus)}", flush=True)
    out = sweep.output_dir
    storage = os.path.join(out, "ray")
    resumed = tune.can_restore(os.path.join(storage, EXPERIMENT))
    record_or_check(out, sweep, base_cfg, resuming=resumed)
    if resumed:
        print(f"[tune] resuming the sweep in {os.path.join(storage, EXPERIMENT)}", flush=True)
    base = to_dict(base_cfg)
    results = tune.run_trials(_trial, {"base": base, "report": report}, storage=storage, name=EXPERIMENT,
                              trials_dir=os.path.join(out, "trials"), param_space=tune.to_tune_space(sweep),
                              tune_config=tune.sweep_tune_config(sweep, base_cfg, c.trials), restore=resumed,
                              verbose=verbose)
    records = tune.trial_records(os.path.join(storage, EXPERIMENT), results, HISTORY_KEYS)
    return write_results(sweep, base, records, c.trials, resumed)


def _trial(params: dict, ctx: Any, base: dict, report: dict) -> None:
    """One trial (in its Tune actor): the base config with the sampled values, validated here (a bad sample
    fails this trial with the config error, before any worker starts), then the run `domainft train` runs."""
    from domainft.distributed.trainer import fit
    from domainft.planning import build_spec

    try:
        cfg = derive(base, trial_changes(params, ctx.trial_dir, run_name=f"trial_{ctx.trial_id}",
                                         storage_path=os.path.join(ctx.trial_dir, "ray")), f"trial {ctx.trial_id}")
        spec = build_spec(cfg, report)
    except ConfigError as e:
        # Re-raised as a one-argument error: Ray rebuilds a trial's error from its message as a subclass
        # of its type (RayTaskError.as_instanceof_cause), and ConfigError(problems, source) would take
        # that message for its problem list, one character per problem.
        raise UserError(str(e)) from None
    os.makedirs(ctx.trial_dir, exist_ok=True)
    with open(os.path.join(ctx.trial_dir, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(dump_yaml(cfg))
    fit(spec, ctx.callbacks, live=False)


def record_or_check(out: str, sweep: SweepConfig, base_cfg: Config, resuming: bool) -> None:
    """Write <out>/sweep.yaml; when resuming, the sweep and base config must be the ones recorded."""
    record = {"sweep": sweep_to_dict(sweep), "base_config": to_dict(base_cfg)}
    path = os.path.join(out, SWEEP_RECORD)
    if resuming and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = yaml.safe_load(f) or {}
        changed = _changed_keys(old, record, ignore={"sweep.max_concurrent_trials", "sweep.time_budget_s"})
        if changed:
            raise UserError(f"{out} holds a sweep started with other settings ({', '.join(changed[:8])} differ): "
                            f"resuming needs the same sweep file and base config; choose another output_dir to "
                            f"start a new sweep")
    os.makedirs(out, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(record, f, sort_keys=False)


def _changed_keys(old: Any, new: Any, prefix: str = "", ignore: set = frozenset()) -> list[str]:
    if prefix.rstrip(".") in ignore:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.", ignore)
        return out
    return [] if old == new else [prefix.rstrip(".")]


def write_results(sweep: SweepConfig, base: dict, records: list[dict], max_concurrent: int, resumed: bool) -> dict:
    """Rank the trials, print the table, write results.csv, the plot and best_config.yaml."""
    out, keys = sweep.output_dir, list(sweep.space)
    rows = []
    for r in records:
        params = {k: r["config"].get(k) for k in keys}
        planned = int(params.get("train.epochs") or base["train"]["epochs"])
        rows.append(trial_row(r["trial_id"], params, r["history"], r["error"], sweep.metric, sweep.mode, planned,
                              r["finished"]))
    rows = rank(rows, sweep.mode)
    table = format_table(rows, keys, sweep.metric)
    print(f"\n[tune] {len(rows)} trials, ranked by {sweep.metric} ({sweep.mode}) at each trial's best epoch\n{table}",
          flush=True)
    unfinished = sum(r["status"] == "unfinished" for r in rows)
    if unfinished:
        print(f"[tune] the sweep was interrupted with {unfinished} trial(s) unfinished: run the same command again "
              f"to resume it (finished trials are not rerun)", flush=True)
    summary: dict[str, Any] = {"rows": rows, "table": table, "max_concurrent_trials": max_concurrent,
                               "resumed": resumed, "interrupted": bool(unfinished),
                               "results_csv": str(write_csv(os.path.join(out, RESULTS_CSV), rows, keys, sweep.metric))}
    log_keys = [k for k, d in sweep.space.items() if d.log_scale]
    discrete = [k for k, d in sweep.space.items() if d.kind in ("choice", "grid", "randint")]
    summary["plot"] = str(plot_metric_vs_params(os.path.join(out, PLOT_PNG), rows, keys, sweep.metric, log_keys,
                                                discrete))
    best = rows[0] if rows and rows[0]["value"] is not None else None
    summary["best"] = best
    if best is None:
        raise UserError(f"no trial reported {sweep.metric}; see the errors above and {summary['results_csv']}")
    cfg = best_config(base, best["params"], os.path.join(out, "best"))
    header = [f"Best trial {best['trial_id']} of the sweep in {out}"
              + (" (so far: the sweep was interrupted)" if unfinished else ""),
              f"{sweep.metric} {best['value']:.4f} at epoch {best['best_epoch']} ({best['status']}, "
              f"{best['epochs_run']} epoch(s) run)",
              "values: " + ", ".join(f"{k}={v!r}" for k, v in best["params"].items()),
              f"train it: domainft train {os.path.join(out, BEST_CONFIG)}"]
    summary["best_config"] = str(write_best_config(os.path.join(out, BEST_CONFIG), cfg, header))
    print(f"\n[tune] best: trial {best['trial_id']} {sweep.metric} {best['value']:.4f}\n"
          f"[tune] results: {summary['results_csv']}, {summary['plot']}\n"
          f"[tune] best config: {summary['best_config']}", flush=True)
    return summary
