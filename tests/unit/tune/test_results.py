"""Results of a sweep from plain rows: status, ranking, table, CSV, plot, best_config.yaml, trial configs."""
import csv

import pytest
import yaml

from domainft.config import load_config
from domainft.config.sweep import trial_changes
from domainft.tuning_results import (best_config, format_table, plot_metric_vs_params, rank, trial_row,
                                     write_best_config, write_csv)

H = [{"epoch": 1, "macro_f1": 0.5, "loss": 0.9}, {"epoch": 2, "macro_f1": 0.7, "loss": 0.6},
     {"epoch": 3, "macro_f1": 0.65, "loss": 0.5}]


def test_trial_row_best_epoch_and_status():
    r = trial_row("t1", {"optim.lr": 1e-4}, H, None, "macro_f1", "max", planned_epochs=3)
    assert (r["status"], r["value"], r["best_epoch"], r["epochs_run"], r["last"]) == ("completed", 0.7, 2, 3, 0.65)
    r = trial_row("t1", {}, H, None, "loss", "min", planned_epochs=3)
    assert (r["value"], r["best_epoch"]) == (0.5, 3)
    assert trial_row("t2", {}, H[:1], None, "macro_f1", "max", 3)["status"] == "stopped"
    assert trial_row("t3", {}, H[:1], None, "macro_f1", "max", 3, finished=False)["status"] == "unfinished"
    assert trial_row("t4", {}, [], None, "macro_f1", "max", 3)["status"] == "no result"
    err = trial_row("t5", {}, [], "UserError: trial t5: 1 problem(s)\n  - optim.lr: bad", "macro_f1", "max", 3)
    assert (err["status"], err["value"], err["error"]) == ("error", None, "  - optim.lr: bad")
    nan = trial_row("t6", {}, [{"epoch": 1, "macro_f1": float("nan")}], None, "macro_f1", "max", 3)
    assert nan["value"] is None and nan["epochs_run"] == 1


def _rows():
    return [trial_row("b", {"optim.lr": 3e-5, "optim.schedule": "cosine"}, H[:1], None, "macro_f1", "max", 3),
            trial_row("a", {"optim.lr": 1e-4, "optim.schedule": "linear"}, H, None, "macro_f1", "max", 3),
            trial_row("c", {"optim.lr": 2.0, "optim.schedule": "linear"}, [], "UserError: bad lr", "macro_f1",
                      "max", 3),
            trial_row("d", {"optim.lr": 5e-5, "optim.schedule": "linear"}, H[:2], None, "macro_f1", "max", 3)]


def test_rank_best_first_then_no_value():
    assert [r["trial_id"] for r in rank(_rows(), "max")] == ["a", "d", "b", "c"]  # a, d tie on 0.7: by id
    assert [r["trial_id"] for r in rank(_rows(), "min")] == ["b", "a", "d", "c"]


def test_table_and_csv(tmp_path):
    rows = rank(_rows(), "max")
    keys = ["optim.lr", "optim.schedule"]
    table = format_table(rows, keys, "macro_f1")
    lines = table.splitlines()
    assert lines[0].split() == ["trial", "status", "macro_f1", "epoch", "epochs", "optim.lr", "optim.schedule"]
    assert lines[1].split() == ["a", "completed", "0.7000", "2", "3", "0.0001", "linear"]
    assert lines[3].split() == ["b", "stopped", "0.5000", "1", "1", "3e-05", "cosine"]
    assert lines[4].split()[:3] == ["c", "error", "-"] and lines[-1] == "  c: UserError: bad lr"
    path = write_csv(tmp_path / "results.csv", rows, keys, "macro_f1")
    got = list(csv.DictReader(open(path)))
    assert [g["trial_id"] for g in got] == ["a", "d", "b", "c"]
    assert got[0] == {"trial_id": "a", "status": "completed", "macro_f1": "0.7", "best_epoch": "2", "epochs_run": "3",
                      "last_macro_f1": "0.65", "optim.lr": "0.0001", "optim.schedule": "linear", "error": ""}
    assert got[3]["error"] == "UserError: bad lr" and got[3]["macro_f1"] == ""


def test_plot_is_a_png(tmp_path):
    path = plot_metric_vs_params(tmp_path / "p.png", rank(_rows(), "max"), ["optim.lr", "optim.schedule"],
                                 "macro_f1", log_keys=["optim.lr"])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_trial_changes_coerce_the_sampled_values_and_set_the_trial_paths():
    params = {"optim.lr": 3e-5, "train.epochs": 2.0, "deepspeed.zero_stage": 1}
    changes = trial_changes(params, "/s/trials/t1", run_name="trial_t1", storage_path="/s/trials/t1/ray")
    assert changes == {"optim.lr": 3e-5, "train.epochs": 2, "deepspeed.zero_stage": 1, "output_dir": "/s/trials/t1",
                       "run.name": "trial_t1", "run.storage_path": "/s/trials/t1/ray"}
    assert isinstance(changes["train.epochs"], int)  # quniform gives 2.0: an integer key gets 2
    assert params["train.epochs"] == 2.0  # not mutated
    assert trial_changes({}, "/o")["run.name"] is None  # default: named from output_dir, as a user's run is


def test_best_config_is_a_valid_train_config(tmp_path, base_file):
    base = yaml.safe_load(open(base_file))
    cfg = best_config(base, {"optim.lr": 3e-5, "unfreeze.every_epochs": 2}, str(tmp_path / "sweep" / "best"))
    path = write_best_config(tmp_path / "sweep" / "best_config.yaml", cfg, ["Best trial t1", "macro_f1 0.9"])
    text = path.read_text()
    assert text.startswith("# Best trial t1\n# macro_f1 0.9\n")
    again = load_config(path)  # what `domainft train best_config.yaml` does
    assert again.optim.lr == 3e-5 and again.unfreeze.every_epochs == 2
    assert again.output_dir == str(tmp_path / "sweep" / "best")
    assert again.run.name is None and again.run.storage_path is None
    assert again.model_dump() == cfg.model_dump()


def test_best_config_that_does_not_validate_is_a_bug(tmp_path, base_file):
    with pytest.raises(RuntimeError, match="optim.lr"):
        best_config(yaml.safe_load(open(base_file)), {"optim.lr": 2.0}, str(tmp_path / "best"))
