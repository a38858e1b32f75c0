import pytest

from domainft.core.memory import estimate_all_stages, estimate_memory

P = 100_000_000  # 100M parameters
GB = P  # bytes per byte-per-parameter, for readability: 2 * GB = 2 bytes per parameter


def test_mixed_precision_stages_match_the_zero_paper():
    # ZeRO paper, Figure 1: 2 + 2 + 12 bytes per parameter, partitioned over N_d GPUs.
    rows = estimate_all_stages(P, P, "bf16", num_gpus=4)
    assert [r["zero_stage"] for r in rows] == [0, 1, 2, 3]
    assert [(r["weights"], r["gradients"], r["optimizer_states"]) for r in rows] == [
        (2 * GB, 2 * GB, 12 * GB),
        (2 * GB, 2 * GB, 3 * GB),
        (2 * GB, GB // 2, 3 * GB),
        (GB // 2, GB // 2, 3 * GB),
    ]
    assert [r["total"] for r in rows] == [16 * GB, 7 * GB, 5.5 * GB, 4 * GB]


def test_fp32_and_frozen_params():
    r = estimate_memory(P, P // 4, "fp32", num_gpus=1, zero_stage=0)
    assert (r["weights"], r["gradients"], r["optimizer_states"]) == (4 * GB, GB, 2 * GB)
    r = estimate_memory(P, 0, "fp16", num_gpus=2, zero_stage=2)
    assert (r["weights"], r["gradients"], r["optimizer_states"], r["total"]) == (2 * GB, 0, 0, 2 * GB)


def test_offload():
    r = estimate_memory(P, P, "bf16", num_gpus=2, zero_stage=2, offload_optimizer=True)
    assert r["optimizer_states"] == 0 and r["cpu_offload"] == 6 * GB and r["total"] == 2 * GB + GB
    r = estimate_memory(P, P, "bf16", num_gpus=2, zero_stage=3, offload_optimizer=True, offload_params=True)
    assert (r["weights"], r["optimizer_states"], r["cpu_offload"], r["total"]) == (0, 0, 6 * GB + GB, GB)
    rows = estimate_all_stages(P, P, "bf16", 2, offload_optimizer=True, offload_params=True)
    assert rows[0]["cpu_offload"] == 0 and rows[1]["optimizer_states"] == 0 and rows[2]["weights"] == 2 * GB
    assert rows[3]["weights"] == 0


def test_uneven_partition_rounds_up_and_bad_input():
    assert estimate_memory(7, 7, "fp32", num_gpus=2, zero_stage=3)["weights"] == 14  # ceil(28 / 2)
    assert estimate_memory(7, 7, "bf16", num_gpus=3, zero_stage=1)["optimizer_states"] == 28  # ceil(84 / 3)
    with pytest.raises(ValueError, match="offload_params"):
        estimate_memory(P, P, "bf16", 2, zero_stage=2, offload_params=True)
    with pytest.raises(ValueError, match="offload_optimizer"):
        estimate_memory(P, P, "bf16", 2, zero_stage=0, offload_optimizer=True)
    with pytest.raises(ValueError, match="precision"):
        estimate_memory(P, P, "int8", 2, zero_stage=0)
    with pytest.raises(ValueError, match="trainable"):
        estimate_memory(P, 2 * P, "bf16", 2, zero_stage=0)
