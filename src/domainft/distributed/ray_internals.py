"""Every use of Ray internals in domainft, in one place, checked against the Ray version it was written for.

Placement groups of stopped trials (Ray issue 54305): when ASHA stops a trial, Tune ends the
trial's actor; Ray Train's controller dies with it, but the placement group it made for the
workers lives as long as the driver. Ray's own cleaner asks the state API whether the controller is
alive, which needs the dashboard (off in local runs and tests): without it the group's CPUs stay
reserved and later trials wait forever. So each run writes its placement group id into the trial
folder (a Ray Train internal callback), and the driver removes it when Tune is done with the trial
(distributed/tune.py).

`tests/unit/tune/test_ray_internals.py` fails loudly when Ray changes what this relies on.
"""
from __future__ import annotations

import os
import warnings

import ray
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

RAY_VERSION = "2.60.0"  # what the internals below were read against
PG_FILE = "placement_group"

if ray.__version__ != RAY_VERSION:
    warnings.warn(f"domainft's Ray Train internals (distributed/ray_internals.py) were written for Ray {RAY_VERSION}, "
                  f"this is Ray {ray.__version__}: re-check the placement-group workaround for ray 54305")


class RecordPlacementGroup(WorkerGroupCallback):
    """Runs in the Ray Train controller: writes the worker group's placement group id to `path`.

    A Ray Train internal callback (run_config callbacks may be any RayTrainCallback); each restart
    of the worker group overwrites the file with its new group.
    """

    def __init__(self, path: str):
        self.path = path

    def after_worker_group_start(self, worker_group) -> None:
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        with open(self.path, "w") as f:
            f.write(pg.id.hex())


def release_placement_group(trials_dir: str, trial_id: str) -> bool:
    """Remove the placement group recorded for a trial's Ray Train run, if it still exists.

    Only for trials Tune is done with (no trial of the sweep runs once `Tuner.fit` has returned).
    Returns whether one was removed.
    """
    try:
        with open(os.path.join(trials_dir, trial_id, PG_FILE)) as f:
            pg = PlacementGroup(ray.PlacementGroupID.from_hex(f.read().strip()))
    except (OSError, ValueError):
        return False  # the run never started its workers
    if placement_group_table(pg).get("state") in (None, "REMOVED"):
        return False  # the run shut down cleanly
    remove_placement_group(pg)
    print(f"[tune] trial {trial_id}: removed the placement group its Ray Train run left behind (the run was "
          f"ended by Tune)", flush=True)
    return True
