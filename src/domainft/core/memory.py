"""Per-GPU memory for model states under ZeRO, by the ZeRO paper's accounting (Rajbhandari et al. 2020).

Mixed precision (bf16/fp16): per trainable parameter 2 bytes of weights + 2 of gradients + 12 of
optimizer state (fp32 master copy, Adam m and v). fp32: 4 + 4 + 8 (m and v; the weights are the
master copy). Frozen parameters hold weights only. Stage 1 partitions optimizer states across the
GPUs, stage 2 also gradients, stage 3 also weights. Activations, buffers, temporary all-gather
buffers and the CUDA context are not included.

8-bit AdamW (bitsandbytes) keeps each moment in 1 byte plus one fp32 scale per 256 values: about
2.03 bytes per trainable parameter instead of 8 (plus the 4-byte fp32 master under bf16/fp16).
Tensors under 4096 elements keep 32-bit moments; at ZeRO 1-3 a group is one flat partition, so
this matters only at ZeRO 0 and is ignored here. Frozen int8 weights (LLM.int8) take 1 byte.
"""
from __future__ import annotations

import math

# bytes per parameter: (weights, gradients, optimizer states)
_BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
ADAM8_BYTES = 2 + 2 * 4 / 256  # two uint8 moments + their per-block fp32 absmax


def estimate_memory(total_params: int, trainable_params: int, precision: str, num_gpus: int, zero_stage: int,
                    offload_optimizer: bool = False, offload_params: bool = False, eight_bit: bool = False,
                    int8_params: int = 0) -> dict:
    """Bytes of model states on each GPU.

    Args:
        total_params: All parameters (frozen ones included: they still need weights).
        trainable_params: Parameters with gradients and optimizer state.
        precision: "fp32", "bf16" or "fp16".
        num_gpus: Data-parallel ranks the states are partitioned over.
        zero_stage: 0-3.
        offload_optimizer: Optimizer states live in CPU memory (ZeRO 1-3).
        offload_params: Weights live in CPU memory (ZeRO 3 only).
        eight_bit: 8-bit AdamW moments.
        int8_params: Of the frozen parameters, those stored as int8 (model.load_in_8bit).

    Returns:
        {"zero_stage", "precision", "num_gpus", "weights", "gradients", "optimizer_states",
         "total" (the GPU sum), "cpu_offload" (bytes per rank moved to CPU memory)}; all sizes in bytes.
    """
    if precision not in _BYTES:
        raise ValueError(f"precision must be one of {tuple(_BYTES)}, got {precision!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage}")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    if not 0 <= trainable_params <= total_params:
        raise ValueError(f"need 0 <= trainable_params <= total_params, got {trainable_params} and {total_params}")
    if offload_optimizer and zero_stage == 0:
        raise ValueError("offload_optimizer needs ZeRO stage 1, 2 or 3")
    if offload_params and zero_stage != 3:
        raise ValueError("offload_params needs ZeRO stage 3")

    if not 0 <= int8_params <= total_params - trainable_params:
        raise ValueError(f"int8_params must be frozen parameters: 0..{total_params - trainable_params}, got {int8_params}")
    w_bytes, g_bytes, o_bytes = _BYTES[precision]
    if eight_bit:
        o_bytes = o_bytes - 8 + ADAM8_BYTES
    weights = (total_params - int8_params) * w_bytes + int8_params
    gradients = trainable_params * g_bytes
    optimizer = math.ceil(trainable_params * o_bytes)
    # ceil: a partition that does not divide evenly is padded, so the largest rank holds the ceiling.
    if zero_stage >= 1:
        optimizer = math.ceil(optimizer / num_gpus)
    if zero_stage >= 2:
        gradients = math.ceil(gradients / num_gpus)
    if zero_stage >= 3:
        weights = math.ceil(weights / num_gpus)
    cpu = 0
    if offload_optimizer:
        cpu, optimizer = cpu + optimizer, 0
    if offload_params:
        cpu, weights = cpu + weights, 0
    return {"zero_stage": zero_stage, "precision": precision, "num_gpus": num_gpus, "weights": weights,
            "gradients": gradients, "optimizer_states": optimizer, "total": weights + gradients + optimizer,
            "cpu_offload": cpu}


def estimate_all_stages(total_params: int, trainable_params: int, precision: str, num_gpus: int,
                        offload_optimizer: bool = False, offload_params: bool = False, eight_bit: bool = False,
                        int8_params: int = 0) -> list[dict]:
    """`estimate_memory` for ZeRO stages 0-3, for `plan` to compare.

    The offload flags apply only where DeepSpeed allows them (optimizer: stages 1-3; params: stage 3);
    elsewhere they are ignored rather than raising, so one call always yields four rows.
    """
    return [estimate_memory(total_params, trainable_params, precision, num_gpus, stage,
                            offload_optimizer=offload_optimizer and stage >= 1,
                            offload_params=offload_params and stage == 3, eight_bit=eight_bit,
                            int8_params=int8_params)
            for stage in range(4)]
