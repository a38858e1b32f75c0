"""`domainft tune` on the local Ray cluster: a real Tuner with ASHA over real Ray Train trials (tiny BERT,
synthetic token splits), a bad sample failing only its trial, results, best_config.yaml that trains, resume."""
import csv
import glob
import os
import signal
import threading
import time

import pytest
import yaml

from domainft.config import apply_overrides, load_config
from run_configs import raw_config
from domainft.config.sweep import Dim, validate_sweep
from domainft.commands.tune import run_sweep

EPOCHS = 2


def _write_base(path, splits, model_dir, out):
    raw = raw_config(out, splits["train_dir"], model_dir, optim={"lr": 1e-3, "layer_decay": 0.8, "warmup_ratio": 0.1},
                     unfreeze={"initial_layers": 1, "thaw_warmup_steps": 2},
                     train_={"epochs": EPOCHS, "seed": 3, "max_steps_per_epoch": 6, "log_every_steps": 50},
                     deepspeed={"zero_stage": 0}, scaling={"num_workers": 1})
    path.write_text(yaml.safe_dump(raw))
    return path


def _sweep(tmp, splits, model_dir, *overrides):
    base = _write_base(tmp / "base.yaml", splits, model_dir, tmp / "base_out")
    raw = {
        "base": base.name, "output_dir": str(tmp / "sweep"), "num_samples": 2, "metric": "macro_f1", "mode": "max",
        "searcher": {"type": "random", "seed": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "space": {"optim.lr": {"loguniform": [1e-5, 3e-3]}, "unfreeze.every_epochs": {"choice": [0, 1]}},
    }
    return validate_sweep(apply_overrides(raw, overrides), tmp)


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_splits):
    return token_splits(tmp_path_factory.mktemp("tune_splits"), n_train=600, n_eval=90)


@pytest.mark.timeout(600)
def test_asha_stops_the_weak_trial_a_bad_sample_fails_alone_and_results_are_written(ray_cluster, tmp_path, splits,
                                                                                      tiny_model_dir):
    sweep, base_cfg = _sweep(tmp_path, splits, tiny_model_dir, "num_samples=1", "max_concurrent_trials=1",
                             "fixed.train.max_steps_per_epoch=10")
    # One trial at a time, in grid order: a learning one, one whose LR moves nothing, and one whose value is
    # invalid. A bad value reaches a trial only when the sweep file is not checked first (the CLI always
    # checks): it must fail alone, with the config error.
    space = {"optim.lr": Dim.model_validate({"grid": [3e-3, 1e-12, -1.0]})}
    sweep = sweep.model_copy(update={"space": space})
    t0 = time.time()
    summary = run_sweep(sweep, base_cfg, splits, verbose=0)
    seconds = time.time() - t0
    rows = summary["rows"]
    print(f"\n{summary['table']}\n({seconds:.0f} s)")

    by_lr = {r["params"]["optim.lr"]: r for r in rows}
    assert set(by_lr) == {3e-3, 1e-12, -1.0}
    bad, good, weak = by_lr[-1.0], by_lr[3e-3], by_lr[1e-12]
    assert bad["status"] == "error" and bad["epochs_run"] == 0
    assert "optim.lr" in bad["error"] and "greater than 0" in bad["error"]
    # ASHA's decision (grace period 1, reduction factor 2): at the epoch-1 rung the weak trial scores below
    # the learning one, recorded before it, so it is stopped there; the learning one runs every epoch.
    # A FIFO scheduler, or ASHA not given the epochs, would run both to the end.
    assert good["status"] == "completed" and good["epochs_run"] == EPOCHS
    assert weak["value"] < good["value"]
    assert weak["status"] == "stopped" and weak["epochs_run"] == 1, weak

    # each trial has its own output_dir with its resolved config and its own Ray Train run named from its id
    for r in (good, weak):
        trial_dir = os.path.join(sweep.output_dir, "trials", r["trial_id"])
        cfg = load_config(os.path.join(trial_dir, "config.yaml"))
        assert cfg.output_dir == trial_dir
        assert cfg.optim.lr == pytest.approx(r["params"]["optim.lr"])
        assert os.path.isdir(os.path.join(trial_dir, "ray", f"trial_{r['trial_id']}"))

    # no placement group is left holding CPUs once the sweep is over (stopped trials included)
    assert _cpus_free_within(ray_cluster, 2, seconds=30)

    # results.csv: one row per trial with params, metric, epochs run and status, the best first
    with open(summary["results_csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and {"trial_id", "status", "macro_f1", "epochs_run", "optim.lr"} <= set(table[0])
    assert table[0]["trial_id"] == summary["best"]["trial_id"] == good["trial_id"]
    assert float(table[0]["macro_f1"]) == pytest.approx(good["value"])
    assert open(summary["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # best_config.yaml: what `domainft train` loads (the same loader), with the best trial's values
    best = load_config(summary["best_config"])
    assert best.output_dir == os.path.join(sweep.output_dir, "best")
    assert best.optim.lr == pytest.approx(3e-3) and best.train.max_steps_per_epoch == 10
    assert best.model == base_cfg.model and best.data == base_cfg.data


def _cpus_free_within(ray_cluster, cpus, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if ray_cluster.available_resources().get("CPU", 0) >= cpus - 1e-6:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.timeout(600)
def test_interrupted_optuna_sweep_resumes_without_rerunning_finished_trials(ray_cluster, tmp_path, splits, tiny_model_dir):
    # Optuna, FIFO, one trial at a time, 2 trials of 3 epochs: interrupt the sweep (SIGUSR1 is Tune's stop
    # signal, like Ctrl-C) once the first trial is done and the second has saved epoch 1; then run it again.
    sweep, base_cfg = _sweep(tmp_path, splits, tiny_model_dir, "num_samples=2", "scheduler=fifo",
                             "searcher=optuna", "max_concurrent_trials=1", "fixed.train.epochs=3")
    trials = os.path.join(sweep.output_dir, "trials")

    def saved(trial_id):  # each epoch's checkpoint is saved just before the epoch is reported
        return {os.path.basename(p) for p in glob.glob(os.path.join(trials, trial_id, "ray", "*", "epoch_*"))}

    def interrupt():
        deadline = time.time() + 400
        while time.time() < deadline:
            states = [saved(t) for t in (os.listdir(trials) if os.path.isdir(trials) else [])]
            if any("epoch_003" in s for s in states) and {"epoch_001"} in states:
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    first = run_sweep(sweep, base_cfg, splits, verbose=0)
    thread.join(timeout=5)
    assert first["interrupted"]
    by_id = {r["trial_id"]: r for r in first["rows"]}
    done = [t for t, r in by_id.items() if r["status"] == "completed"]
    assert len(done) == 1 and {r["status"] for r in first["rows"]} == {"completed", "unfinished"}
    # the interrupted trial's Ray Train run was ended by Tune: its placement group is released
    # (asynchronously: actors and bundles are returned a moment after the sweep returns)
    assert _cpus_free_within(ray_cluster, 2, seconds=60)
    # every start of a trial rewrites its config.yaml, every start of its worker the worker's pid file
    started = {f: os.path.getmtime(os.path.join(trials, done[0], f)) for f in ("config.yaml", "workers/rank0.pid")}

    second = run_sweep(sweep, base_cfg, splits, verbose=0)
    assert second["resumed"] and not second["interrupted"]
    assert len(second["rows"]) == 2 and all(r["status"] == "completed" for r in second["rows"])
    assert all(r["epochs_run"] == 3 for r in second["rows"])
    assert {f: os.path.getmtime(os.path.join(trials, done[0], f)) for f in started} == started  # not rerun
    assert {r["trial_id"]: r for r in second["rows"]}[done[0]]["value"] == by_id[done[0]]["value"]

    # the samples are Optuna's (TPE, seeded with the searcher's seed, else train.seed): the same asks of a
    # fresh OptunaSearch give them, in trial order; a random or grid searcher would give others
    from ray.tune.search.optuna import OptunaSearch

    from domainft.distributed.tune import to_tune_space

    search = OptunaSearch(seed=sweep.searcher.seed if sweep.searcher.seed is not None else base_cfg.train.seed)
    search.set_search_properties(sweep.metric, sweep.mode, to_tune_space(sweep))
    expected = [search.suggest(f"t{i}") for i in range(2)]
    started = sorted(second["rows"], key=lambda r: os.path.getctime(os.path.join(trials, r["trial_id"])))
    for want, row in zip(expected, started):
        assert set(want) == set(sweep.space)
        for key, value in want.items():
            assert row["params"][key] == pytest.approx(value), (key, row["params"], want)
