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

from domainft.config import apply_overrides, load_config, validate_dict
from domainft.config.sweep import Dim, validate_sweep
from domainft.commands.train import train_prepared
from domainft.commands.tune import run_sweep

EPOCHS = 2


def _write_base(path, splits, model_dir, out):
    raw = {
        "output_dir": str(out), "data": {"train": splits["train_dir"]}, "model": {"name_or_path": str(model_dir)},
        "optim": {"lr": 1e-3, "head_lr_mult": 1.0, "layer_decay": 0.8, "warmup_ratio": 0.1},
        "unfreeze": {"every_epochs": 0, "initial_layers": 1, "thaw_warmup_steps": 2},
        "train": {"epochs": EPOCHS, "batch_size": 16, "seed": 3, "max_steps_per_epoch": 6, "log_every_steps": 50},
        "deepspeed": {"zero_stage": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "run": {"keep_checkpoints": 1},
    }
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
def test_asha_sweep_bad_sample_results_and_best_config_trains(ray_cluster, tmp_path, splits, tiny_model_dir):
    sweep, base_cfg = _sweep(tmp_path, splits, tiny_model_dir, "num_samples=1")
    # A bad value reaches a trial only when the sweep file is not checked first (the CLI always checks):
    # here one grid point is invalid, so 1 of the 3 trials must fail alone, with the config error.
    space = {**sweep.space, "optim.layer_decay": Dim.model_validate({"grid": [0.7, 0.9, 1.5]})}
    sweep = sweep.model_copy(update={"space": space})
    t0 = time.time()
    summary = run_sweep(sweep, base_cfg, splits, verbose=0)
    seconds = time.time() - t0
    rows = summary["rows"]
    print(f"\n{summary['table']}\n({seconds:.0f} s)")

    # a grid of 3 points: 2 real trials under ASHA, and the 1.5 one fails alone with the config error
    assert len(rows) == 3
    bad = [r for r in rows if r["params"]["optim.layer_decay"] == 1.5]
    good = [r for r in rows if r["params"]["optim.layer_decay"] != 1.5]
    assert len(bad) == 1 and bad[0]["status"] == "error" and bad[0]["epochs_run"] == 0
    assert "optim.layer_decay" in bad[0]["error"] and "less than or equal to 1" in bad[0]["error"]
    assert len(good) == 2 and all(r["status"] in ("completed", "stopped") for r in good)
    assert all(r["value"] is not None and 0.0 <= r["value"] <= 1.0 for r in good)
    assert all(1 <= r["epochs_run"] <= EPOCHS for r in good)
    assert summary["max_concurrent_trials"] == 2  # (2 CPU - 1 for Ray Data) / (1 worker x 0.5 CPU)

    # each trial has its own output_dir with its resolved config and its own Ray Train run named from its id
    for r in good:
        trial_dir = os.path.join(sweep.output_dir, "trials", r["trial_id"])
        cfg = load_config(os.path.join(trial_dir, "config.yaml"))
        assert cfg.output_dir == trial_dir
        assert cfg.optim.lr == pytest.approx(r["params"]["optim.lr"])
        assert os.path.isdir(os.path.join(trial_dir, "ray", f"trial_{r['trial_id']}"))

    # no placement group is left holding CPUs once the sweep is over (stopped trials included)
    deadline = time.time() + 30
    while ray_cluster.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert ray_cluster.available_resources().get("CPU", 0) == pytest.approx(2)

    # results.csv: one row per trial with params, metric, epochs run and status
    with open(summary["results_csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and {"trial_id", "status", "macro_f1", "epochs_run", "optim.lr"} <= set(table[0])
    assert table[0]["trial_id"] == summary["best"]["trial_id"]
    assert open(summary["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # best_config.yaml: accepted by `domainft train` unchanged, with the best trial's values
    best = load_config(summary["best_config"])
    assert best.output_dir == os.path.join(sweep.output_dir, "best")
    assert best.optim.lr == pytest.approx(summary["best"]["params"]["optim.lr"])
    assert best.optim.layer_decay == summary["best"]["params"]["optim.layer_decay"]
    assert summary["best"]["value"] == max(r["value"] for r in good)

    # ... and it trains (1 epoch here)
    one_epoch = validate_dict(apply_overrides(best.model_dump(mode="json"), ["train.epochs=1"]))
    trained = train_prepared(one_epoch, splits, quiet=True)
    assert [h["epoch"] for h in trained["history"]] == [1]
    assert os.path.isfile(os.path.join(trained["best_model_dir"], "model.safetensors"))


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
    exp = os.path.join(sweep.output_dir, "ray", "sweep")
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
