"""The DeepSpeed config dict (no deepspeed import): the stage a run really uses on one worker."""
from domainft.engine.ds_config import build_ds_config, effective_zero_stage


def test_one_rank_runs_stage_0_unless_something_is_offloaded():
    assert [effective_zero_stage(s, 1) for s in range(4)] == [0, 0, 0, 0]
    assert [effective_zero_stage(s, 2) for s in range(4)] == [0, 1, 2, 3]
    assert effective_zero_stage(2, 1, offload_optimizer=True) == 2
    assert effective_zero_stage(3, 1, offload_params=True) == 3


def test_stage_0_config_has_no_partitioning_settings():
    cfg = build_ds_config(effective_zero_stage(2, 1), "bf16", 16, 2, 1)
    assert cfg["zero_optimization"] == {"stage": 0}
    assert cfg["train_batch_size"] == 32 and cfg["bf16"] == {"enabled": True}
