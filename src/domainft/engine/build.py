"""The only module that imports deepspeed: build an engine around our optimizer (torch AdamW, or
bitsandbytes AdamW8bit) and per-group scheduler."""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Sequence

import torch


def ensure_accelerator_env() -> None:
    """DeepSpeed picks its accelerator at import: say which, before anything imports it."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def avoid_hidden_compiles() -> None:
    # DeepSpeed's CPU accelerator JIT-builds an inference-only shm all-reduce op in init_distributed
    # (~60 s on 2 cores). Declaring no compatible ops skips it. A private extensions dir avoids a
    # stale lock in a shared cache blocking any build that still happens.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), f"domainft_ext_{os.getpid()}"))
    ensure_accelerator_env()
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {}


def build_engine(
    model: torch.nn.Module,
    param_groups: list[dict],
    lr_lambdas: Sequence[Callable[[int], float]],
    ds_config: dict,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    eight_bit: bool = False,
):
    """Wrap `model` in a DeepSpeed engine with AdamW over `param_groups` and one LR lambda per group.

    Args:
        model: the Hugging Face model (all groups registered, frozen ones at LR factor 0).
        param_groups: non-empty torch param groups (DeepSpeed drops empty groups, which would misalign lambdas).
        lr_lambdas: multiplier of each group's peak LR as a function of the optimizer step.
        ds_config: from `ds_config.build_ds_config`.
        eight_bit: bitsandbytes' AdamW8bit (block-wise 8-bit moments; tensors under 4096 elements keep
            32-bit moments) instead of torch AdamW. DeepSpeed hands it what it hands any client
            optimizer: per-parameter tensors at ZeRO 0, one flat fp32 partition per group at ZeRO 1-3.
    Returns:
        The DeepSpeed engine; `engine.lr_scheduler` is our LambdaLR, stepped by `engine.step()`.
    """
    if len(param_groups) != len(lr_lambdas):
        raise ValueError(f"{len(param_groups)} param groups but {len(lr_lambdas)} LR lambdas")
    if any(len(g["params"]) == 0 for g in param_groups):
        raise ValueError("empty parameter group: DeepSpeed would drop it and shift the per-group schedule")
    avoid_hidden_compiles()
    import deepspeed

    if eight_bit:
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(param_groups, betas=tuple(betas), eps=eps)
    else:
        # Fused AdamW (one kernel for all tensors) on CUDA; the multi-tensor foreach path elsewhere.
        on_cuda = all(p.is_cuda for g in param_groups for p in g["params"])
        kind = {"fused": True} if on_cuda else {"foreach": True}
        optimizer = torch.optim.AdamW(param_groups, betas=tuple(betas), eps=eps, **kind)

    def scheduler(opt):  # built on the optimizer DeepSpeed hands back, so the groups are the trained ones
        return torch.optim.lr_scheduler.LambdaLR(opt, list(lr_lambdas))

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False)
    if engine.dp_world_size == 1 and not engine.zero_optimization():
        # One data-parallel rank at ZeRO 0: DeepSpeed would still, every step, flatten all gradients into
        # one buffer, all-reduce it with itself and copy it back, and give each parameter without a
        # gradient (frozen by the gradient stop) a zero one for AdamW to step: ~10% of a CPU step.
        engine.enable_backward_allreduce = False
    return engine
