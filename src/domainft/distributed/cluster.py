"""Joining or starting Ray: one place, so every command behaves the same."""
from __future__ import annotations

import os

import ray
import ray.data

from domainft import console

# Forwarded to a local cluster's workers (a submitted job's runtime_env carries its own).
FORWARDED_ENV = ("DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "HF_HOME", "NLTK_DATA",
                 "DOMAINFT_NLTK_DATA", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                 "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "TRANSFORMERS_VERBOSITY",
                 "TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS", "DOMAINFT_VERBOSE")


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (`ray job submit`, KubeRay) or start a local one."""
    if ray.is_initialized():
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Workers' own output (DeepSpeed, transformers, Ray Train internals) stays in Ray's log files
    # unless --verbose: our lines and bars reach the console through distributed/progress.py.
    console.quiet_libraries()  # before init: its own warnings (token auth, "Started a local Ray instance") too
    with console.to_log():
        if os.environ.get("RAY_ADDRESS"):
            # A submitted job's runtime_env already carries its env; passing ours too is a conflict error.
            ray.init(log_to_driver=console.verbose())
        else:
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            ray.init(include_dashboard=False, runtime_env={"env_vars": env} if env else None,
                     log_to_driver=console.verbose())
    # Ray Data configures its loggers on import (at the top of this module): route them after ray.init.
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours instead (distributed/progress.py)
    console.quiet_libraries()
    link_ray_logs()


def link_ray_logs() -> None:
    """`<output_dir>/logs/ray` -> this Ray session's log folder (workers' output), when Ray runs here."""
    path = console.log_path()
    try:
        session = ray._private.worker._global_node.get_logs_dir_path()  # a local session only
    except AttributeError:
        return
    if path is None or not os.path.isdir(session):
        return
    link = path.parent / "ray"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(session, target_is_directory=True)
    except OSError:
        pass
