"""How many trials run at once: the workers' CPUs (and GPUs) of each trial, one CPU always left to Ray Data."""
import pytest

from domainft.config import validate_dict
from domainft.distributed.capacity import cannot_fit_message, max_concurrent_trials, trial_resources


def _cfg(**scaling):
    return validate_dict({"output_dir": "o", "data": {"train": "t"}, "model": {"name_or_path": "m"},
                          "scaling": scaling}, check_paths=False)


@pytest.mark.parametrize("cpus,workers,per_worker,expect,by", [
    (2, 1, 0.5, 2, "CPU"),     # the test cluster: two 1 x 0.5-CPU trials, 1 CPU left for Ray Data
    (2, 2, 0.5, 1, "CPU"),     # configs/bbc_demo.yaml on a 2-core machine
    (2, 2, 1.0, 0, "CPU"),     # 2 CPUs held by workers leave nothing for Ray Data: never fits
    (16, 2, 1.0, 7, "CPU"),
    (4, 3, 0.1, 10, "CPU"),    # 3 x 0.1 = 0.30000000000000004: still 10
])
def test_cpu_arithmetic(cpus, workers, per_worker, expect, by):
    need_cpu, need_gpu = trial_resources(_cfg(num_workers=workers, cpus_per_worker=per_worker))
    c = max_concurrent_trials(cpus, 0, need_cpu, need_gpu)
    assert (c.trials, c.limited_by) == (expect, by)


def test_gpus_limit_and_caps():
    need = trial_resources(_cfg(num_workers=2, cpus_per_worker=4, use_gpu=True))
    assert need == (8, 2)
    c = max_concurrent_trials(64, 4, *need)
    assert (c.trials, c.limited_by) == (2, "GPU")
    assert max_concurrent_trials(64, 8, *need, total=3).trials == 3
    c = max_concurrent_trials(64, 8, *need, total=10, cap=1)
    assert (c.trials, c.limited_by) == (1, "the sweep's max_concurrent_trials")
    assert max_concurrent_trials(64, 1, *need).trials == 0  # 2 GPUs per trial, 1 in the cluster


def test_messages():
    cfg = _cfg(num_workers=2, cpus_per_worker=1.0)
    c = max_concurrent_trials(2, 0, *trial_resources(cfg))
    msg = cannot_fit_message(c, 2, 0, cfg)
    assert "2 worker(s) x 1 CPU = 2 CPU plus 1 CPU for Ray Data = 3 CPU" in msg and "cluster has 2 CPU" in msg
    ok = max_concurrent_trials(2, 0, 0.5, 0, total=4)
    assert ok.describe(2, 0) == ("max_concurrent_trials 2 (limited by CPU): each trial needs 0.5 CPU; cluster has "
                                 "2 CPU, 1 CPU kept free for Ray Data")
