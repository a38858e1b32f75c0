"""`domainft tune`: a Ray Tune sweep in which every trial is the same Ray Train run as `domainft train`.

Ray Train v2 pattern: Tune drives a function (`_trial`) that builds the run's TorchTrainer with
`build_trainer` and calls `fit()`; `TuneReportCallback` relays each epoch's report to Tune so that
ASHA can stop weak trials early. The data is prepared once, in the driver, and every trial reads
the same Parquet splits. Sweep files are described in tune/README.md and `domainft.config.sweep`.

Layout of <output_dir>:
    sweep.yaml              the resolved sweep and base config (a resumed sweep must match it)
    ray/sweep/              Ray Tune's experiment (what `Tuner.restore` resumes)
    trials/<trial_id>/      each trial's train output_dir: config.yaml, its Ray Train run under ray/
    results.csv, metric_vs_params.png, best_config.yaml
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from domainft.config import Config, ConfigError, dump_yaml, to_dict, validate_dict
from domainft.config.sweep import SweepConfig, load_sweep, max_epochs, sweep_to_dict, total_trials, trial_dict
from domainft.distributed.capacity import Concurrency, cannot_fit_message, max_concurrent_trials, trial_resources
from domainft.distributed.cluster import init_ray
from domainft.distributed.ray_internals import (PG_FILE, RecordPlacementGroup, ReleaseTrainPlacementGroups,
                                                release_placement_group)
from domainft.distributed.trainer import build_trainer
from domainft.errors import UserError
from domainft.tuning_results import (BEST_CONFIG, PLOT_PNG, RESULTS_CSV, best_config, format_table,
                                     plot_metric_vs_params, rank, trial_row, write_best_config, write_csv)

EXPERIMENT = "sweep"
SWEEP_RECORD = "sweep.yaml"
HISTORY_KEYS = ("epoch", "macro_f1", "accuracy", "eval_loss", "loss", "train_loss")
# A trial's own Tune actor only waits on fit() (like Ray Train's controller, which holds no CPU):
# it asks for memory instead of a CPU, so a trial costs exactly its workers' CPUs and a 2-CPU
# machine can run a 2 x 0.5-CPU trial and still keep the whole CPU that Ray Data needs.
TRIAL_ACTOR = {"memory": 512 * 1024**2}


def run_tune(sweep_path: str, overrides: Iterable[str] = ()) -> dict:
    """`domainft tune SWEEP.yaml [overrides]`: validate, prepare the data once, sweep, write results.

    Returns:
        The summary of `run_sweep`.
    """
    sweep, base_cfg = load_sweep(sweep_path, overrides)  # every problem, before Ray starts
    from domainft.planning import check_model

    check_model(base_cfg)
    from domainft.distributed.datasets import ensure_prepared

    init_ray()
    plan_concurrency(sweep, base_cfg, announce=False)  # a sweep that can never run fails before preparing
    return run_sweep(sweep, base_cfg, ensure_prepared(base_cfg))


def plan_concurrency(sweep: SweepConfig, base_cfg: Config, announce: bool = True) -> Concurrency:
    """max_concurrent_trials for this cluster (printed when `announce`); UserError when not even one
    trial can ever fit."""
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    need_cpu, need_gpu = trial_resources(base_cfg)
    c = max_concurrent_trials(cpus, gpus, need_cpu, need_gpu, total=total_trials(sweep),
                              cap=sweep.max_concurrent_trials)
    if c.trials < 1:
        raise UserError(cannot_fit_message(c, cpus, gpus, base_cfg))
    if announce:
        print(f"[tune] {c.describe(cpus, gpus)}", flush=True)
    return c


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
    concurrency = plan_concurrency(sweep, base_cfg)
    out = sweep.output_dir
    path = os.path.join(out, "ray", EXPERIMENT)
    resumed = tune.Tuner.can_restore(path)
    _record_or_check(out, sweep, base_cfg, resuming=resumed)
    base = to_dict(base_cfg)
    trainable = _trainable(base, report, _pad_token_id(base_cfg), os.path.join(out, "trials"))
    if resumed:
        # Finished and errored trials are kept; unfinished ones start again, and their Ray Train run
        # (named from the trial id) continues from its last epoch checkpoint.
        print(f"[tune] resuming the sweep in {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(trainable, param_space=to_tune_space(sweep),
                           tune_config=_tune_config(sweep, base_cfg, concurrency.trials),
                           run_config=tune.RunConfig(
                               name=EXPERIMENT, storage_path=os.path.join(out, "ray"), verbose=verbose,
                               failure_config=tune.FailureConfig(max_failures=0),  # Train retries workers itself
                               callbacks=[ReleaseTrainPlacementGroups(os.path.join(out, "trials"))]))
    grid = tuner.fit()
    # Trials still running when the sweep is interrupted get no on_trial_complete: release theirs too.
    trials_dir = os.path.join(out, "trials")
    for trial_id in sorted(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else []:
        release_placement_group(trials_dir, trial_id)
    return _write_results(sweep, base, grid, concurrency.trials, resumed)


# ---------------------------------------------------------------------------------------------------
# Search space, searcher, scheduler
# ---------------------------------------------------------------------------------------------------

def to_tune_space(sweep: SweepConfig) -> dict[str, Any]:
    """Dotted key -> Ray Tune domain. Under searcher grid, `choice` is enumerated like `grid`."""
    space = {}
    for key, dim in sweep.space.items():
        a, kind = dim.args, dim.kind
        if kind == "choice" and sweep.searcher.type == "grid":
            kind = "grid"
        space[key] = {
            "uniform": lambda: tune.uniform(a[0], a[1]),
            "loguniform": lambda: tune.loguniform(a[0], a[1]),
            "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
            "qloguniform": lambda: tune.qloguniform(a[0], a[1], a[2]),
            "randint": lambda: tune.randint(a[0], a[1]),
            "choice": lambda: tune.choice(list(a)),
            "grid": lambda: tune.grid_search(list(a)),
        }[kind]()
    return space


# PBT is not offered (the sweep schema has no `pbt`). It exploits by pausing a trial and restarting it from another
# trial's checkpoint with perturbed values; here a trial's state lives in its Ray Train run, which
# TuneReportCallback does not hand to Tune (it relays metrics only), and a v2 TorchTrainer cannot be
# started from a given checkpoint (`resume_from_checkpoint` raises). Enabling it needs (1) the worker
# to load `loop_config["init_checkpoint"]` (a checkpoint path) when `ray.train.get_checkpoint()` is
# None, (2) `build_trainer(..., init_checkpoint=path)` to pass it, and (3) here: a Train callback that
# gives Tune each epoch's checkpoint path and a trial that starts from `tune.get_checkpoint()`.
def _tune_config(sweep: SweepConfig, base_cfg: Config, max_concurrent: int) -> tune.TuneConfig:
    seed = sweep.searcher.seed if sweep.searcher.seed is not None else base_cfg.train.seed
    # Tune applies max_concurrent_trials only to a `Searcher` (wrapping it in a ConcurrencyLimiter); the
    # random/grid generator ignores it ("max_concurrent_trials will be ignored") and must get it itself.
    # Too many concurrent trials is not just slow here: their workers take the CPU Ray Data needs.
    if sweep.searcher.type == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=seed)  # TPE; metric and mode come from TuneConfig
    else:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    if sweep.scheduler.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # time_attr "epoch" (reported by the worker), not training_iteration: a resumed trial's Ray
        # Train run continues from its checkpoint, so its first report can be epoch 3.
        # ASHA stops every trial that reaches max_t, which ends its Ray Train run before the run shuts
        # down by itself. By default max_t is one more than any trial runs: the same rungs below it,
        # and a trial that survives them ends cleanly. An explicit scheduler.max_t is used as given.
        max_t = sweep.scheduler.max_t or max_epochs(sweep, base_cfg.train.epochs) + 1
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=sweep.scheduler.grace_period,
                                  reduction_factor=sweep.scheduler.reduction_factor)
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=sweep.num_samples,
                           max_concurrent_trials=max_concurrent if sweep.searcher.type == "optuna" else None,
                           time_budget_s=sweep.time_budget_s, trial_dirname_creator=_trial_dirname)


def _trial_dirname(trial) -> str:
    return trial.trial_id


# ---------------------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------------------

def _trainable(base: dict, report: dict, pad_token_id: int, trials_dir: str):
    return tune.with_resources(
        tune.with_parameters(_trial, base=base, report=report, pad_token_id=pad_token_id, trials_dir=trials_dir),
        TRIAL_ACTOR)


def _trial(params: dict, base: dict, report: dict, pad_token_id: int, trials_dir: str) -> None:
    """One trial: the base config with the sampled values, validated here (a bad sample fails this trial
    with the config error, before any worker starts), then the same TorchTrainer as `domainft train`."""
    trial_id = tune.get_context().get_trial_id()
    out = os.path.join(trials_dir, trial_id)
    try:
        cfg = validate_dict(trial_dict(base, params, out), source=f"trial {trial_id}", check_paths=False)
    except ConfigError as e:
        # Re-raised as a one-argument error: Ray rebuilds a trial's error from its message as a subclass
        # of its type (RayTaskError.as_instanceof_cause), and ConfigError(problems, source) would take
        # that message for its problem list, one character per problem.
        raise UserError(str(e)) from None
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(dump_yaml(cfg))
    trainer = build_trainer(cfg, report, pad_token_id,
                            callbacks=[TuneReportCallback(), RecordPlacementGroup(os.path.join(out, PG_FILE))],
                            name=f"trial_{trial_id}", storage_path=os.path.join(out, "ray"))
    trainer.fit()


def _pad_token_id(cfg: Config) -> int:
    from domainft.core import build_tokenizer

    m = cfg.model
    tok = build_tokenizer(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    return tok.pad_token_id or 0


# ---------------------------------------------------------------------------------------------------
# Resume and results
# ---------------------------------------------------------------------------------------------------

def _record_or_check(out: str, sweep: SweepConfig, base_cfg: Config, resuming: bool) -> None:
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


def _history(result) -> list[dict]:
    df = result.metrics_dataframe
    if df is None or df.empty:
        return []
    cols = [c for c in HISTORY_KEYS if c in df.columns]
    return [{c: (None if v != v else v) for c, v in zip(cols, row)} for row in df[cols].itertuples(index=False)]


def _write_results(sweep: SweepConfig, base: dict, grid, max_concurrent: int, resumed: bool) -> dict:
    out = sweep.output_dir
    keys = list(sweep.space)
    # Trials (id, sampled values, status) from the experiment state; reports and errors from the results.
    # A trial that never started (the sweep was interrupted) has no result files yet.
    results = {os.path.basename(r.path.rstrip("/")): r for r in grid}
    rows = []
    for trial in tune.ExperimentAnalysis(os.path.join(out, "ray", EXPERIMENT)).trials:
        result = results.get(trial.trial_id)
        params = {k: trial.config.get(k) for k in keys}
        planned = int(params.get("train.epochs") or base["train"]["epochs"])
        error = f"{type(result.error).__name__}: {result.error}" if result is not None and result.error else None
        history = _history(result) if result is not None else []
        finished = trial.status in ("TERMINATED", "ERROR")
        rows.append(trial_row(trial.trial_id, params, history, error, sweep.metric, sweep.mode, planned, finished))
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
