"""DeepSpeed config as a pure dict, from flat arguments. Imports neither deepspeed nor ray.

No "optimizer" and no "scheduler" block, ever: a DeepSpeed optimizer block replaces our per-layer
groups (and JIT-compiles FusedAdam), and a scheduler block sets one LR for every group (DeepSpeed
issue 7713). We pass a torch AdamW and a per-group LambdaLR to `deepspeed.initialize` instead.
"""
from __future__ import annotations

from typing import Any

from domainft.config.load import deep_merge


def build_ds_config(
    zero_stage: int,
    precision: str,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    max_grad_norm: float = 1.0,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    on_gpu: bool = False,
    overrides: dict | None = None,
) -> dict[str, Any]:
    """DeepSpeed config for one run.

    Args:
        zero_stage: 0-3. Stage 0 (plain data parallel) is fastest when the model and optimizer fit on one
            device; stages 1-3 trade communication for memory.
        precision: "fp32", "bf16" or "fp16" (fp16 is GPU-only; DeepSpeed refuses it on CPU).
        micro_batch, grad_accum, world_size: batch geometry; train_batch_size is derived.
        max_grad_norm: gradient clipping (0 = off).
        offload_optimizer, offload_params: ZeRO-Offload / ZeRO-Infinity to CPU memory.
        on_gpu: pin offloaded memory only when a GPU exists.
        overrides: validated user extras, merged last.
    Returns:
        A JSON-able dict for `deepspeed.initialize(config=...)`.
    """
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": float(max_grad_norm),
        # DeepSpeed prints a line every N steps otherwise; our loop logs progress itself.
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "hysteresis": 2,
                       "min_loss_scale": 1}
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage in (1, 2):
        # Large buckets: fewer, bigger collectives. overlap_comm needs CUDA streams.
        zero.update(contiguous_gradients=True, overlap_comm=on_gpu,
                    reduce_bucket_size=int(5e8), allgather_bucket_size=int(5e8))
    if zero_stage == 3:
        zero.update(contiguous_gradients=True, overlap_comm=on_gpu, stage3_gather_16bit_weights_on_model_save=False)
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        # A client (torch) optimizer with offload: DeepSpeed would otherwise insist on its CPU Adam op.
        cfg["zero_force_ds_cpu_optimizer"] = False
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    cfg["zero_optimization"] = zero
    return deep_merge(cfg, overrides or {})
