"""How many Tune trials fit on the cluster at once: pure arithmetic on `ray.cluster_resources()` totals.

Next to the Ray code that uses it (tune.py); no Ray import, so it is unit-tested without a cluster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from domainft.config.schema import Config

# Ray Data read tasks ask for a whole CPU that no training worker holds; without one they wait
# forever, silently (see RAY_DEEPSPEED_ON_CPU.md). Concurrent trials share this one CPU.
DATA_RESERVE_CPUS = 1.0


@dataclass(frozen=True)
class Concurrency:
    """How many trials run at once, and why."""

    trials: int
    cpus_per_trial: float
    gpus_per_trial: float
    limited_by: str

    def describe(self, cluster_cpus: float, cluster_gpus: float) -> str:
        need = f"{self.cpus_per_trial:g} CPU" + (f" + {self.gpus_per_trial:g} GPU" if self.gpus_per_trial else "")
        have = f"{cluster_cpus:g} CPU" + (f", {cluster_gpus:g} GPU" if cluster_gpus else "")
        return (f"max_concurrent_trials {self.trials} (limited by {self.limited_by}): each trial needs {need}; "
                f"cluster has {have}, {DATA_RESERVE_CPUS:g} CPU kept free for Ray Data")


def trial_resources(cfg: Config) -> tuple[float, float]:
    """(CPUs, GPUs) one trial's Ray Train workers hold. The trial's own Tune actor holds no CPU."""
    sc = cfg.scaling
    return sc.num_workers * sc.cpus_per_worker, float(sc.num_workers if sc.use_gpu else 0)


def max_concurrent_trials(cluster_cpus: float, cluster_gpus: float, cpus_per_trial: float, gpus_per_trial: float,
                          total: Optional[int] = None, cap: Optional[int] = None) -> Concurrency:
    """Trials that fit at once, leaving DATA_RESERVE_CPUS free for Ray Data read tasks.

    Args:
        cluster_cpus, cluster_gpus: `ray.cluster_resources()` totals.
        cpus_per_trial, gpus_per_trial: From `trial_resources`.
        total: Trials in the sweep, if known (no point in more slots).
        cap: The sweep's own max_concurrent_trials.

    Returns:
        Concurrency with trials == 0 when not even one trial fits (the caller raises).
    """
    eps = 1e-9  # 0.1 * 3 is 0.30000000000000004
    free = cluster_cpus - DATA_RESERVE_CPUS
    limits = {"CPU": math.floor(free / cpus_per_trial + eps) if cpus_per_trial > 0 else math.inf}
    if gpus_per_trial:
        limits["GPU"] = math.floor(cluster_gpus / gpus_per_trial + eps)
    if total is not None:
        limits["number of trials"] = total
    if cap is not None:
        limits["the sweep's max_concurrent_trials"] = cap
    by, n = min(limits.items(), key=lambda kv: kv[1])
    return Concurrency(max(0, int(n)), cpus_per_trial, gpus_per_trial, by)


def cannot_fit_message(c: Concurrency, cluster_cpus: float, cluster_gpus: float, cfg: Config,
                       what: str = "the sweep") -> str:
    sc = cfg.scaling
    need_cpu = c.cpus_per_trial + DATA_RESERVE_CPUS
    parts = [f"one trial needs {sc.num_workers} worker(s) x {sc.cpus_per_worker:g} CPU = {c.cpus_per_trial:g} CPU "
             f"plus {DATA_RESERVE_CPUS:g} CPU for Ray Data = {need_cpu:g} CPU"]
    if c.gpus_per_trial:
        parts.append(f"and {c.gpus_per_trial:g} GPU")
    parts.append(f"but the cluster has {cluster_cpus:g} CPU" + (f", {cluster_gpus:g} GPU" if c.gpus_per_trial else ""))
    return (f"{what} can never run: " + " ".join(parts) + ". Lower scaling.num_workers or scaling.cpus_per_worker "
            "(in the sweep's `fixed`), or use a bigger cluster.")
