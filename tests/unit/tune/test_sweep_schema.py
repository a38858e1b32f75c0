"""Sweep files: the typed model, every problem reported at once, checks against the base config."""
import os

import pytest

from domainft.config import ConfigError
from domainft.config.sweep import (Dim, SweepConfig, flatten_space, grid_size, key_problem, load_sweep, max_epochs,
                                   total_trials)


def _problems(write_sweep, raw, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_sweep(write_sweep(raw), overrides)
    return e.value.problems


def test_valid_sweep_resolves_paths_and_merges_fixed(write_sweep, sweep_raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep_raw["fixed"] = {"train": {"epochs": 2}}
    sweep, base = load_sweep(write_sweep(sweep_raw))
    assert sweep.base == str(tmp_path / "configs" / "base.yaml")  # relative to the sweep file
    assert sweep.output_dir == str(tmp_path / "runs" / "sweep")  # relative to the working directory
    assert base.train.epochs == 2 and base.scaling.num_workers == 2
    assert sweep.space["optim.lr"].kind == "loguniform" and sweep.space["unfreeze.every_epochs"].args == [0, 1, 2]
    assert sweep.searcher.type == "random" and sweep.scheduler.reduction_factor == 2.0


def test_overrides_apply_to_the_sweep_file(write_sweep, sweep_raw):
    sweep, base = load_sweep(write_sweep(sweep_raw), ["num_samples=9", "scheduler=fifo", "fixed.train.epochs=1",
                                                      "space.optim.layer_decay={uniform: [0.7, 0.9]}"])
    assert sweep.num_samples == 9 and sweep.scheduler.type == "fifo" and base.train.epochs == 1
    assert sweep.space["optim.layer_decay"].args == (0.7, 0.9)


def test_nested_space_is_flattened_to_dotted_keys():
    raw = {"optim": {"lr": {"loguniform": [1e-5, 1e-4]}, "layer_decay": {"uniform": [0.6, 0.9]}},
           "unfreeze.every_epochs": {"choice": [0, 1]}, "optim.warmup_ratio": {"uniformm": [0.0, 0.1]}}
    assert list(flatten_space(raw)) == ["optim.lr", "optim.layer_decay", "unfreeze.every_epochs",
                                        "optim.warmup_ratio"]  # a typo'd distribution stays a leaf


@pytest.mark.parametrize("dim,message", [
    ({"uniform": [0.9, 0.6]}, "low must be < high"),
    ({"loguniform": [0.0, 1e-4]}, "low must be > 0"),
    ({"quniform": [1, 8, 0]}, "q must be > 0"),
    ({"choice": []}, "at least one value"),
    ({"uniform": [0.1, 0.2], "choice": [1]}, "exactly one of"),
    ({"uniform": [0.1]}, "uniform"),
])
def test_bad_distributions(dim, message):
    with pytest.raises(Exception, match=message):
        Dim.model_validate(dim)


def test_representative_values_bound_each_distribution():
    assert Dim(uniform=(0.6, 0.9)).representative_values() == [0.6, 0.9]
    assert Dim(randint=(1, 4)).representative_values() == [1, 3]  # high excluded, as in Ray Tune
    assert Dim(quniform=(1, 7, 2)).representative_values() == [0, 8]  # rounded to multiples of q
    assert Dim(choice=["linear", "cosine"]).representative_values() == ["linear", "cosine"]


def test_every_problem_is_reported_at_once_with_hints(write_sweep, sweep_raw):
    sweep_raw.update(num_sample=3, mode="maximum")
    sweep_raw["space"] = {**sweep_raw["space"], "optim.lrr": {"uniform": [0.1, 0.2]},
                          "optim.warmup_ratio": {"loguniformm": [0.01, 0.1]}}
    sweep_raw["fixed"] = {"train": {"epochz": 2}}
    problems = _problems(write_sweep, sweep_raw)
    text = "\n".join(problems)
    assert "num_sample: unknown key (did you mean 'num_samples'?)" in text
    assert "mode: Input should be 'max' or 'min'" in text
    assert "space.optim.lrr: not a train config key (did you mean 'optim.lr'?)" in text
    assert "space.optim.warmup_ratio.loguniformm: unknown key (did you mean 'loguniform'?)" in text
    assert "train.epochz: unknown key (did you mean 'train.epochs'?)" in text  # the base config, checked too
    assert len(problems) == 5


def test_missing_keys_are_listed_together(write_sweep):
    problems = _problems(write_sweep, {"metric": "macro_f1"})
    assert {p.split(":")[0] for p in problems} == {"base", "output_dir", "space", "num_samples"}


@pytest.mark.parametrize("key,reason", [
    ("data.max_length", "prepared once per sweep"),
    ("model.name_or_path", "tokenizer"),
    ("augment.n_aug", "augmented"),
    ("train.seed", "split"),
    ("scaling.num_workers", "resources"),
    ("run.keep_checkpoints", "per trial"),
    ("output_dir", "trials/<trial_id>"),
    ("optim", "section"),
    ("optim.lrr", "did you mean 'optim.lr'"),
])
def test_keys_that_cannot_be_searched(key, reason):
    assert reason in key_problem(key)


def test_searchable_keys():
    for key in ("optim.lr", "optim.layer_decay", "optim.schedule", "unfreeze.every_epochs", "train.batch_size",
                "deepspeed.zero_stage", "deepspeed.overrides.zero_optimization.reduce_bucket_size"):
        assert key_problem(key) is None, key


def test_cross_field_problems(write_sweep, sweep_raw):
    sweep_raw.update(metric="eval_loss", mode="max", searcher="grid")
    sweep_raw["space"]["train.epochs"] = {"uniform": [1, 3]}
    sweep_raw["fixed"] = {"run": {"name": "mine"}}
    text = "\n".join(_problems(write_sweep, sweep_raw))
    assert "mode: eval_loss is better when lower; use mode: min" in text
    assert "space.optim.lr: searcher grid needs grid or choice values (got loguniform)" in text
    assert "space.train.epochs: an integer key; use randint" in text
    assert "fixed.run.name: each trial's Ray Train run is named from its trial id" in text


def test_optuna_rejects_grid_and_qloguniform(write_sweep, sweep_raw):
    sweep_raw["searcher"] = {"type": "optuna", "seed": 0}
    sweep_raw["space"]["optim.schedule"] = {"grid": ["linear", "cosine"]}
    sweep_raw["space"]["train.batch_size"] = {"qloguniform": [8, 64, 8]}
    problems = _problems(write_sweep, sweep_raw)
    assert any("Optuna does not enumerate grids" in p for p in problems)
    assert any(p.startswith("space.train.batch_size: Optuna drops the quantization") for p in problems)


def test_values_are_checked_against_the_base_config(write_sweep, sweep_raw):
    sweep_raw["space"] = {"optim.layer_decay": {"uniform": [0.5, 1.5]}, "unfreeze.every_epochs": {"choice": [0, -1]},
                          "optim.schedule": {"choice": ["linear", "cosinus"]}}
    problems = _problems(write_sweep, sweep_raw)
    assert "space.optim.layer_decay (value 1.5): optim.layer_decay: Input should be less than or equal to 1 " \
           "(got 1.5)" in problems
    assert any(p.startswith("space.unfreeze.every_epochs (value -1)") for p in problems)
    assert any(p.startswith("space.optim.schedule (value 'cosinus')") for p in problems)
    assert len(problems) == 3


def test_one_whole_sample_is_checked(write_sweep, sweep_raw):
    # each value is fine alone; together (first values) every_steps and every_epochs clash
    sweep_raw["fixed"] = {"unfreeze": {"every_epochs": 0}}
    sweep_raw["space"] = {"unfreeze.every_steps": {"choice": [5]}, "unfreeze.every_epochs": {"choice": [1]}}
    problems = _problems(write_sweep, sweep_raw)
    assert len(problems) == 1 and problems[0].startswith("space (sample ")
    assert "unfreeze.every_steps=5" in problems[0] and "unfreeze.every_epochs=1" in problems[0]
    assert problems[0].endswith("set either every_steps or every_epochs, not both")


def test_missing_base_file(write_sweep, sweep_raw):
    sweep_raw["base"] = "nope.yaml"
    problems = _problems(write_sweep, sweep_raw)
    assert len(problems) == 1 and "file not found" in problems[0] and os.sep + "nope.yaml" in problems[0]


def test_asha_grace_period_must_be_reachable(write_sweep, sweep_raw):
    sweep_raw["scheduler"] = {"type": "asha", "grace_period": 5}
    assert any("more than the epochs a trial runs (3)" in p for p in _problems(write_sweep, sweep_raw))


def test_trial_counts_and_max_epochs():
    s = SweepConfig.model_validate({"base": "b", "output_dir": "o", "num_samples": 3, "searcher": "grid", "space": {
        "optim.lr": {"grid": [1e-5, 1e-4]}, "unfreeze.every_epochs": {"choice": [0, 1, 2]},
        "train.epochs": {"choice": [2, 4]}}})
    assert grid_size(s) == 12 and total_trials(s) == 36 and max_epochs(s, 3) == 4
    r = s.model_copy(update={"searcher": s.searcher.model_copy(update={"type": "random"})})
    assert grid_size(r) == 2 and total_trials(r) == 6  # random search only enumerates `grid`


def test_pbt_is_not_offered(write_sweep, sweep_raw):
    """Not in the schema until trials can start from another trial's checkpoint (tune/README.md)."""
    sweep_raw["scheduler"] = {"type": "pbt"}
    assert "scheduler.type: Input should be 'asha' or 'fifo' (got 'pbt')" in "\n".join(_problems(write_sweep, sweep_raw))
