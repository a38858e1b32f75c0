"""Ray Tune sweeps over peft.* keys: searchable, and every sampled value is checked before Ray."""
import pytest

from domainft.config import ConfigError
from domainft.config.sweep import key_problem, load_sweep


def test_peft_keys_are_searchable_and_a_sweep_over_them_validates(write_sweep, sweep_raw):
    for key in ("peft.method", "peft.r", "peft.alpha", "peft.dropout", "peft.target_modules", "peft.num_virtual_tokens",
                "peft.trainable", "optim.eight_bit"):
        assert key_problem(key) is None, key
    sweep_raw["fixed"] = {"peft": {"method": "lora"}, "unfreeze": {"every_epochs": 0}}
    sweep_raw["space"] = {"peft.r": {"choice": [4, 8, 16]}, "peft.alpha": {"uniform": [8, 32]},
                          "peft.target_modules": {"choice": [["query", "value"], ["query", "key", "value"]]}}
    sweep, base = load_sweep(write_sweep(sweep_raw))
    assert base.peft.method == "lora" and sweep.space["peft.r"].args == [4, 8, 16]
    sweep_raw["space"] = {"peft.r": {"choice": [0, 8]}}
    with pytest.raises(ConfigError, match=r"space.peft.r \(value 0\): peft.r: Input should be greater than or equal"):
        load_sweep(write_sweep(sweep_raw))
