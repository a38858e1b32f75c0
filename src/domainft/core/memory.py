"""Per-GPU memory for model states under ZeRO, by the ZeRO paper's accounting (Rajbhandari et al. 2020).

Mixed precision (bf16/fp16): per trainable parameter 2 bytes of weights + 2 of gradients + 12 of
optimizer state (fp32 master copy, Adam m and v). fp32: 4 + 4 + 8 (m and v; the weights are the
master copy). Frozen parameters hold weights only. Stage 1 partitions optimizer states across the
GPUs, stage 2 also gradients, stage 3 also weights. `total` is these model states; communication buckets,
allocator fragmentation and the CUDA context are never included (budget a few GB per GPU for them).

8-bit AdamW (bitsandbytes) keeps each moment in 1 byte plus one fp32 scale per 256 values: about
2.03 bytes per trainable parameter instead of 8 (plus the 4-byte fp32 master under bf16/fp16).
Tensors under 4096 elements keep 32-bit moments; at ZeRO 1-3 a group is one flat partition, so
this matters only at ZeRO 0 and is ignored here. Frozen int8 weights (LLM.int8) take 1 byte.

QLoRA's frozen 4-bit NF4 weights with double quantization (Dettmers et al. 2023, arXiv 2305.14314, section 3)
take 4 bits plus their quantization constants: one 8-bit absmax per block of 64 weights and one fp32
second-level constant per 256 such blocks, 0.5 + 1/64 + 4/(64*256) = 0.516 bytes per parameter. Only what
bitsandbytes replaces is quantized: Linear weights outside the head (not their biases, norms, embeddings, or
the 3-D routed-expert tensors of transformers' mixture-of-experts layers).

Two more terms make the per-GPU total (`gpu_total`): at ZeRO 3 the weights of the module being computed are
gathered whole (and its gradients are whole until reduce-scattered), which DeepSpeed's own estimator
(`estimate_zero3_model_states_mem_needs`) counts as 4 bytes per parameter of the largest layer; and the
activations of one micro batch (core/activations.py), which ZeRO does not partition.

DeepSpeed's estimators differ from the paper's count by the fp32 gradient partition the optimizer step
reads: 4 bytes per parameter on top at ZeRO 2 (`2 + 18/N` instead of `2 + 14/N`) and 2 at ZeRO 3
(`18/N` instead of `16/N`); tests/unit/planning checks both against the functions themselves.
"""
from __future__ import annotations

import math

# bytes per parameter: (weights, gradients, optimizer states)
_BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
ADAM8_BYTES = 2 + 2 * 4 / 256  # two uint8 moments + their per-block fp32 absmax
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # QLoRA: 4-bit weight, 8-bit absmax per 64, fp32 per 256 blocks


def estimate_memory(total_params: int, trainable_params: int, precision: str, num_gpus: int, zero_stage: int,
                    offload_optimizer: bool = False, offload_params: bool = False, eight_bit: bool = False,
                    int8_params: int = 0, int4_params: int = 0, gathered_params: int = 0,
                    gathered_trainable: int = 0, activation_bytes: int = 0) -> dict:
    """Bytes of model states on each GPU, and with ZeRO 3's gathered module and the activations added.

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
        int4_params: Of the frozen parameters, those stored as 4-bit NF4 (model.load_in_4bit, QLoRA).
        gathered_params: ZeRO 3: the parameters of the largest module, gathered whole while it computes.
        gathered_trainable: Of those, the trainable ones (their 16-bit gradients are whole until reduced).
        activation_bytes: One micro batch's activations (core/activations.py), the same at every stage.

    Returns:
        {"zero_stage", "precision", "num_gpus", "weights", "gradients", "optimizer_states",
         "total" (the model states on the GPU), "cpu_offload" (bytes per rank moved to CPU memory),
         "gathered" (ZeRO 3's whole module, else 0), "activations", "gpu_total" (total + gathered +
         activations)}; all sizes in bytes.
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

    if min(int8_params, int4_params) < 0 or int8_params + int4_params > total_params - trainable_params:
        raise ValueError(f"int8_params + int4_params must be frozen parameters: 0..{total_params - trainable_params}, "
                         f"got {int8_params} + {int4_params}")
    if not 0 <= gathered_trainable <= gathered_params <= total_params:
        raise ValueError(f"need 0 <= gathered_trainable <= gathered_params <= total_params, got {gathered_trainable}, "
                         f"{gathered_params} and {total_params}")
    w_bytes, g_bytes, o_bytes = _BYTES[precision]
    if eight_bit:
        o_bytes = o_bytes - 8 + ADAM8_BYTES
    weights = (total_params - int8_params - int4_params) * w_bytes + int8_params + math.ceil(int4_params * NF4_BYTES)
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
    gathered = gathered_params * w_bytes + gathered_trainable * g_bytes if zero_stage == 3 else 0
    total = weights + gradients + optimizer
    return {"zero_stage": zero_stage, "precision": precision, "num_gpus": num_gpus, "weights": weights,
            "gradients": gradients, "optimizer_states": optimizer, "total": total, "cpu_offload": cpu,
            "gathered": gathered, "activations": activation_bytes, "gpu_total": total + gathered + activation_bytes}


def estimate_all_stages(total_params: int, trainable_params: int, precision: str, num_gpus: int,
                        offload_optimizer: bool = False, offload_params: bool = False, eight_bit: bool = False,
                        int8_params: int = 0, int4_params: int = 0, gathered_params: int = 0,
                        gathered_trainable: int = 0, activation_bytes: int = 0) -> list[dict]:
    """`estimate_memory` for ZeRO stages 0-3, for `plan` to compare.

    The offload flags apply only where DeepSpeed allows them (optimizer: stages 1-3; params: stage 3);
    elsewhere they are ignored rather than raising, so one call always yields four rows.
    """
    return [estimate_memory(total_params, trainable_params, precision, num_gpus, stage,
                            offload_optimizer=offload_optimizer and stage >= 1,
                            offload_params=offload_params and stage == 3, eight_bit=eight_bit,
                            int8_params=int8_params, int4_params=int4_params, gathered_params=gathered_params,
                            gathered_trainable=gathered_trainable, activation_bytes=activation_bytes)
            for stage in range(4)]
