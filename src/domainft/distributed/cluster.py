"""Joining or starting Ray: one place, so every command behaves the same."""
from __future__ import annotations

import os

import ray

# Forwarded to a local cluster's workers (a submitted job's runtime_env carries its own).
FORWARDED_ENV = ("DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "HF_HOME", "NLTK_DATA",
                 "DOMAINFT_NLTK_DATA", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                 "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION")


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (`ray job submit`, KubeRay) or start a local one."""
    if ray.is_initialized():
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("RAY_ADDRESS"):
        # A submitted job's runtime_env already carries its env; passing ours too is a conflict error.
        ray.init(log_to_driver=True)
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(include_dashboard=False, runtime_env={"env_vars": env} if env else None, log_to_driver=True)
