"""Space -> Ray Tune domains (imports ray.tune; never starts Ray)."""
import random

from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

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
    space = to_tune_space(_sweep())
    assert isinstance(space["optim.lr"], Float) and isinstance(space["optim.lr"].get_sampler(), Float._LogUniform)
    assert isinstance(space["optim.layer_decay"].get_sampler(), Float._Uniform)
    assert isinstance(space["unfreeze.initial_layers"], Integer)
    assert isinstance(space["optim.schedule"], Categorical)
    assert space["unfreeze.every_epochs"] == {"grid_search": [0, 1]}
    random.seed(0)
    for _ in range(50):
        assert 1e-5 <= space["optim.lr"].sample() <= 1e-4
        assert 0.6 <= space["optim.layer_decay"].sample() <= 0.9
        assert round(space["optim.warmup_ratio"].sample() / 0.05, 6).is_integer()
        assert space["train.batch_size"].sample() % 8 == 0
        assert space["unfreeze.initial_layers"].sample() in (1, 2, 3)
        assert space["optim.schedule"].sample() in ("linear", "cosine")


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
