"""`config.derive`: the one way a config is made from another (A/B arms, audit folds, Tune trials, a sweep's
best config, the distillation student's run, `augment`)."""
import pytest

from domainft.config import ConfigError, derive, to_dict, validate_dict


def test_derive_sets_dotted_keys_and_validates_like_a_config_file(base):
    cfg = validate_dict(base)
    arm = derive(cfg, {"augment.enabled": True, "optim.lr": 1e-4, "output_dir": "/runs/ab/augmented",
                       "run.name": None}, "A/B augmented")
    assert arm.augment.enabled and arm.optim.lr == 1e-4 and arm.output_dir == "/runs/ab/augmented"
    assert cfg.augment.enabled is False and cfg.optim.lr == 5e-5  # the base is not changed
    assert {k: v for k, v in to_dict(arm).items() if k not in ("augment", "optim", "output_dir")} == \
           {k: v for k, v in to_dict(cfg).items() if k not in ("augment", "optim", "output_dir")}
    assert derive(to_dict(cfg), {"train.epochs": 2}, "trial t1").train.epochs == 2  # a dict base (Ray boundary)


def test_a_derived_config_gets_every_problem_named_by_its_source(base):
    cfg = validate_dict(base)
    with pytest.raises(ConfigError) as e:
        derive(cfg, {"optim.lr": -1, "train.epochs": 0}, "trial 3f2a")
    assert str(e.value).startswith("trial 3f2a: 2 problem(s)")
    assert [p.split(":")[0] for p in e.value.problems] == ["optim.lr", "train.epochs"]
    with pytest.raises(ConfigError) as e:
        derive(cfg, {"augment.ab": True}, "A/B")  # the cross-field checks too
    assert e.value.problems == ["augment.ab: needs augment.enabled: true"]
