"""Ray Tune, the one module that uses it: trials that are each one Ray Train run, as many at a time as the
cluster fits. `domainft tune` runs a search over a sweep's space; `domainft audit` a grid over folds.

Ray Train v2 pattern: Tune drives a function per trial (the driver's `trial_fn`, given a TrialContext)
that builds its run and calls `trainer.fit` with the context's callbacks; `TuneReportCallback` relays
each epoch's report to Tune, so that ASHA can stop weak trials early. Concurrency comes from the
cluster's resources (capacity.py), placement groups of stopped trials are released (ray_internals.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from domainft.config import Config
from domainft.config.sweep import SweepConfig, max_epochs
from domainft.distributed.capacity import Concurrency, cannot_fit_message, max_concurrent_trials, trial_resources
from domainft.distributed.ray_internals import PG_FILE, RecordPlacementGroup, release_placement_group
from domainft.errors import UserError

# A trial's own Tune actor only waits on fit() (like Ray Train's controller, which holds no CPU):
# it asks for memory instead of a CPU, so a trial costs exactly its workers' CPUs and a 2-CPU
# machine can run a 2 x 0.5-CPU trial and still keep the whole CPU that Ray Data needs.
TRIAL_ACTOR = {"memory": 512 * 1024**2}


@dataclass
class TrialContext:
    """What a trial function gets besides its sampled values."""

    trial_id: str
    trial_dir: str  # <trials_dir>/<trial id, or the value of the run's dir_param>: the trial creates it
    callbacks: list = field(default_factory=list)  # Ray Train run callbacks: pass them to trainer.fit


def concurrency(cfg: Config, total: Optional[int] = None, cap: Optional[int] = None,
                what: str = "the sweep") -> tuple[Concurrency, float, float]:
    """(how many trials of `cfg`'s resources run at once, cluster CPUs, cluster GPUs).

    Raises:
        UserError: Not even one trial fits on the cluster.
    """
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    c = max_concurrent_trials(cpus, gpus, *trial_resources(cfg), total=total, cap=cap)
    if c.trials < 1:
        raise UserError(cannot_fit_message(c, cpus, gpus, cfg, what))
    return c, cpus, gpus


# ---------------------------------------------------------------------------------------------------
# A sweep's search space, searcher and scheduler
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
# to load an init checkpoint (a path in the loop config) when `ray.train.get_checkpoint()` is None,
# (2) `build_trainer` to pass it, and (3) here: a Train callback that gives Tune each epoch's
# checkpoint path and a trial that starts from `tune.get_checkpoint()`.
def sweep_tune_config(sweep: SweepConfig, base_cfg: Config, max_concurrent: int) -> tune.TuneConfig:
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


def grid_tune_config(max_concurrent: int) -> tune.TuneConfig:
    """Every point of the param space's grid once, `max_concurrent` at a time."""
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    return tune.TuneConfig(search_alg=BasicVariantGenerator(max_concurrent=max_concurrent), scheduler=FIFOScheduler(),
                           num_samples=1, trial_dirname_creator=_trial_dirname)


def grid(key: str, values: list) -> dict:
    return {key: tune.grid_search(values)}


def _trial_dirname(trial) -> str:
    return trial.trial_id


# ---------------------------------------------------------------------------------------------------
# Running trials
# ---------------------------------------------------------------------------------------------------

def _trial_key(config: dict, trial_id: str, dir_param: Optional[str]) -> str:
    return str(config[dir_param]) if dir_param else trial_id


def _trial(params: dict, trial_fn: Callable, trials_dir: str, dir_param: Optional[str], fn_kwargs: dict) -> None:
    trial_id = tune.get_context().get_trial_id()
    out = os.path.join(trials_dir, _trial_key(params, trial_id, dir_param))
    callbacks = [TuneReportCallback(), RecordPlacementGroup(os.path.join(out, PG_FILE))]
    trial_fn(params, TrialContext(trial_id, out, callbacks), **fn_kwargs)


class ReleaseTrainPlacementGroups(tune.Callback):
    """Runs in the driver: removes a finished trial's Ray Train placement group if it is still there."""

    def __init__(self, trials_dir: str, dir_param: Optional[str]):
        self.trials_dir, self.dir_param = trials_dir, dir_param

    def _release(self, trial) -> None:
        release_placement_group(self.trials_dir, _trial_key(trial.config, trial.trial_id, self.dir_param))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial)


class TrialLines(tune.Callback):
    """Runs in the driver: the caller's console lines as trials start, report and finish (plain functions of
    the trial's sampled values, its report, its seconds)."""

    def __init__(self, on_start: Optional[Callable] = None, on_result: Optional[Callable] = None,
                 on_complete: Optional[Callable] = None):
        self.start, self.result, self.complete = on_start, on_result, on_complete
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.started[trial.trial_id] = time.time()
        if self.start:
            self.start(trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if self.result:
            self.result(trial.config, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if self.complete:
            self.complete(trial.config, round(time.time() - self.started.get(trial.trial_id, time.time()), 1))


def can_restore(experiment_dir: str) -> bool:
    return tune.Tuner.can_restore(experiment_dir)


def run_trials(trial_fn: Callable, fn_kwargs: dict, *, storage: str, name: str, trials_dir: str,
               param_space: Optional[dict] = None, tune_config: Optional[tune.TuneConfig] = None,
               restore: bool = False, dir_param: Optional[str] = None, verbose: int = 0,
               lines: Optional[TrialLines] = None):
    """Run (or resume) the trials of one Tune experiment `<storage>/<name>`.

    Args:
        trial_fn: `trial_fn(params, TrialContext, **fn_kwargs)`, run in each trial's actor (a module-level
            function: Tune pickles it by reference).
        trials_dir: Each trial's folder is `<trials_dir>/<trial id>`, or the value of its `dir_param`.
        restore: Resume the experiment: finished and errored trials are kept, unfinished ones start again
            (and their Ray Train run continues from its last epoch checkpoint).
        verbose: Ray Tune's console verbosity (0 silent, 1 status tables).

    Returns:
        Tune's ResultGrid.
    """
    trainable = tune.with_resources(
        tune.with_parameters(_trial, trial_fn=trial_fn, trials_dir=trials_dir, dir_param=dir_param,
                             fn_kwargs=fn_kwargs), TRIAL_ACTOR)
    path = os.path.join(storage, name)
    if restore:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        callbacks = [ReleaseTrainPlacementGroups(trials_dir, dir_param)] + ([lines] if lines else [])
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=tune.RunConfig(
                               name=name, storage_path=storage, verbose=verbose,
                               failure_config=tune.FailureConfig(max_failures=0),  # Train retries workers itself
                               callbacks=callbacks))
    results = tuner.fit()
    # Trials still running when the experiment is interrupted get no on_trial_complete: release theirs too.
    for key in sorted(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else []:
        release_placement_group(trials_dir, key)
    return results


def trial_records(experiment_dir: str, results, keys: tuple[str, ...]) -> list[dict]:
    """Every trial of an experiment (finished, errored, or never started when it was interrupted):
    {"trial_id", "config", "finished", "error" (one string or None), "history" (its reports, `keys` only)}."""
    by_id = {os.path.basename(r.path.rstrip("/")): r for r in results}
    out = []
    for trial in tune.ExperimentAnalysis(experiment_dir).trials:
        result = by_id.get(trial.trial_id)
        error = f"{type(result.error).__name__}: {result.error}" if result is not None and result.error else None
        out.append({"trial_id": trial.trial_id, "config": dict(trial.config), "error": error,
                    "finished": trial.status in ("TERMINATED", "ERROR"),
                    "history": _history(result, keys) if result is not None else []})
    return out


def _history(result, keys: tuple[str, ...]) -> list[dict]:
    df = result.metrics_dataframe
    if df is None or df.empty:
        return []
    cols = [c for c in keys if c in df.columns]
    return [{c: (None if v != v else v) for c, v in zip(cols, row)} for row in df[cols].itertuples(index=False)]
