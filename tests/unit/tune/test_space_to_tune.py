"""Space -> Ray Tune domains (imports ray.tune; never starts Ray)."""
import numpy as np
import pytest
from ray import tune

from domainft.config.sweep import SweepConfig
from domainft.distributed.tune import to_tune_space


def _sweep(searcher="random"):
    return SweepConfig.model_validate({"base": "b", "output_dir": "o", "num_samples": 2, "searcher": searcher,
                                       "space": {"optim.lr": {"loguniform": [1e-5, 1e-4]},
                                                 "optim.layer_decay": {"uniform": [0.6, 0.9]},
                                                 "optim.warmup_ratio": {"quniform": [0.0, 0.2, 0.05]},
                                                 "train.batch_size": {"qloguniform": [8, 64, 8]},
                                                 "unfreeze.initial_layers": {"randint": [1, 4]},
                                                 "optim.schedule": {"choice": ["linear", "cosine"]},
                                                 "unfreeze.every_epochs": {"grid": [0, 1]}}})


def test_each_distribution_maps_to_its_tune_domain():
    """Judged by what the domains draw (Ray's public `sample`), not by Ray's private classes: bounds, steps,
    and the shape that tells log-uniform from uniform (its median is the geometric mean of the bounds)."""
    space = to_tune_space(_sweep())
    assert space["unfreeze.every_epochs"] == {"grid_search": [0, 1]}
    draw = {k: np.array(space[k].sample(size=4000, random_state=0), dtype=object) for k in space
            if k != "unfreeze.every_epochs"}
    lr = draw["optim.lr"].astype(float)
    assert lr.min() >= 1e-5 and lr.max() <= 1e-4
    assert np.median(lr) == pytest.approx((1e-5 * 1e-4) ** 0.5, rel=0.1)  # uniform: 5.5e-5
    decay = draw["optim.layer_decay"].astype(float)
    assert decay.min() >= 0.6 and decay.max() <= 0.9 and abs(np.median(decay) - 0.75) < 0.02
    warmup = draw["optim.warmup_ratio"].astype(float)
    assert set(np.round(warmup / 0.05, 6)) <= {0.0, 1.0, 2.0, 3.0, 4.0} and len(set(np.round(warmup, 6))) >= 4
    batch = draw["train.batch_size"].astype(int)
    assert set(batch % 8) == {0} and batch.min() >= 8 and batch.max() <= 64
    assert np.mean(batch <= 24) > 0.5  # log-spaced: the small sizes are drawn more often than the large
    assert set(draw["unfreeze.initial_layers"]) == {1, 2, 3}  # randint: upper bound excluded
    assert set(draw["optim.schedule"]) == {"linear", "cosine"}


def test_grid_searcher_enumerates_choices():
    s = SweepConfig.model_validate({"base": "b", "output_dir": "o", "num_samples": 1, "searcher": "grid",
                                    "space": {"optim.schedule": {"choice": ["linear", "cosine"]},
                                              "unfreeze.every_epochs": {"grid": [0, 1]}}})
    assert to_tune_space(s) == {"optim.schedule": tune.grid_search(["linear", "cosine"]),
                                "unfreeze.every_epochs": tune.grid_search([0, 1])}


def test_optuna_suggests_valid_values_for_each_allowed_distribution():
    from ray.tune.search.optuna import OptunaSearch

    space = {"optim.lr": {"loguniform": [1e-5, 1e-4]}, "optim.layer_decay": {"uniform": [0.6, 0.9]},
             "optim.warmup_ratio": {"quniform": [0.0, 0.2, 0.05]}, "unfreeze.initial_layers": {"randint": [1, 4]},
             "optim.schedule": {"choice": ["linear", "cosine"]}, "optim.betas": {"choice": [[0.9, 0.999], [0.9, 0.98]]}}
    s = SweepConfig.model_validate({"base": "b", "output_dir": "o", "num_samples": 2, "searcher": "optuna",
                                    "space": space})
    search = OptunaSearch(seed=0)
    search.set_search_properties("macro_f1", "max", to_tune_space(s))
    for i in range(5):
        got = search.suggest(f"t{i}")
        assert set(got) == set(space)
        assert 1e-5 <= got["optim.lr"] <= 1e-4 and got["unfreeze.initial_layers"] in (1, 2, 3)
        assert round(got["optim.warmup_ratio"] / 0.05, 6).is_integer()
        assert got["optim.betas"] in ([0.9, 0.999], [0.9, 0.98])
