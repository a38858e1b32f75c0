"""The one home for DeepSpeed optimizer internals: where each group's fp32 master weights and AdamW
state live at each ZeRO stage, how to reset a group's state, and how to read full fp32 weights.

Layout in DeepSpeed 0.19 (our torch AdamW is always the inner optimizer, one group per domainft group):
- ZeRO 0, fp32: the engine's optimizer is our AdamW over the model's own parameters.
- ZeRO 0, bf16: `FP16_UnfusedOptimizer`; `fp32_groups[g]` are per-parameter fp32 masters and our
  AdamW's `param_groups[g]["params"]` is that list. It steps AdamW once with zero gradients at
  construction (step count 1, and weight decay at the peak LR on every master).
- ZeRO 1/2 (fp32 or bf16): `DeepSpeedZeroOptimizer`; `param_groups[g]["params"]` is this rank's one
  flat fp32 partition of group g.
- ZeRO 3: `DeepSpeedZeroOptimizer_Stage3`; a group is split into sub-groups, each a flat fp32
  partition (`fp32_partitioned_groups_flat[s]`, group `sub_group_to_group_id[s]`); the AdamW
  state is keyed by those tensors (param_groups are emptied between steps).

The inner optimizer is torch AdamW or bitsandbytes AdamW8bit (`optim.eight_bit`), whose state per
tensor is `step`, `state1`/`state2` (the moments: uint8 codes, or fp32 under 4096 elements) with
`absmax1`/`absmax2` (per-block scales) and `qmap1`/`qmap2` (the quantization maps, shared by every
tensor of the optimizer).
"""
from __future__ import annotations

from typing import Iterable

import torch

from domainft.core.unfreeze import GradientStop, lowest_trainable_depth, thaw_events

_ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _inner(engine) -> torch.optim.Optimizer:
    opt = engine.optimizer
    return opt if isinstance(opt, torch.optim.Optimizer) else opt.optimizer


def group_state_tensors(engine, group: int) -> list[torch.Tensor]:
    """The tensors (this rank's fp32 masters or partitions) that key group `group`'s AdamW state."""
    opt = engine.optimizer
    if hasattr(opt, "sub_group_to_group_id"):  # ZeRO 3
        return [opt.fp32_partitioned_groups_flat[s] for s, g in sorted(opt.sub_group_to_group_id.items())
                if g == group]
    return list(_inner(engine).param_groups[group]["params"])


def _is_bnb(optimizer) -> bool:
    return type(optimizer).__module__.startswith("bitsandbytes.")


def _bnb_fresh_state(inner, group: int, tensor: torch.Tensor) -> None:
    """bitsandbytes' own fresh state for `tensor` (its `init_state`), in the same state dict.

    Not zero_() on every state tensor: the quantization maps are shared by all tensors, and what a
    fresh state is (which buffers, which dtype for which size) is bitsandbytes' to say.
    """
    g = inner.param_groups[group]
    params = g["params"]
    index = next((i for i, p in enumerate(params) if p is tensor), None)
    if index is None:  # ZeRO 3 empties param_groups between steps; init_state looks the tensor up there
        g["params"], index = [tensor], 0
    try:
        inner.state[tensor].clear()
        inner.init_state(g, tensor, group, index)
    finally:
        g["params"] = params


def reset_optimizer_state(engine, groups: Iterable[int]) -> int:
    """Give each group in `groups` the state of a fresh AdamW (or AdamW8bit): step 0, zero moments.

    Why: while a group is frozen (LR factor 0) DeepSpeed still steps AdamW for it with zero
    gradients, so its step counter advances while its moments stay 0. At thaw the bias correction
    is then gone and the first updates are several times a fresh Adam's. Resetting in place (not
    deleting the state) keeps the layout DeepSpeed saves and restores in checkpoints.

    Returns:
        The number of state tensors reset on this rank (0 where a partition holds none).
    """
    inner = _inner(engine)
    n = 0
    for g in groups:
        for t in group_state_tensors(engine, g):
            state = inner.state.get(t)
            if not state:
                continue
            if _is_bnb(inner):
                _bnb_fresh_state(inner, g, t)
                n += 1
                continue
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                step.zero_()
            elif step is not None:
                state["step"] = 0
            for key in _ADAM_STATE:
                if isinstance(state.get(key), torch.Tensor):
                    state[key].zero_()
            n += 1
    return n


def fresh_start(engine) -> None:
    """Undo the state DeepSpeed creates at `initialize`, so that every group starts as a fresh AdamW.

    bf16 at ZeRO 0 steps AdamW once with zero gradients while building its fp32 masters: the step
    counter starts at 1 and weight decay shrinks every master (frozen groups too). Copy the masters
    back from the model's weights (they were made from them) and reset every group's state.
    """
    opt = engine.optimizer
    if hasattr(opt, "fp32_groups") and hasattr(opt, "fp16_groups"):
        with torch.no_grad():
            for masters, params in zip(opt.fp32_groups, opt.fp16_groups):
                for master, param in zip(masters, params):
                    master.copy_(param.detach().float())
    reset_optimizer_state(engine, range(len(_inner(engine).param_groups)))


def full_fp32_params(engine, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Full (unpartitioned) fp32 master weights of the named trained parameters, on CPU.

    Collective at ZeRO 3 and for partitioned optimizers: every rank must call it with the same names.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    params = dict(engine.module.named_parameters())
    opt = engine.optimizer
    masters: dict[int, torch.Tensor] = {}
    if hasattr(opt, "fp32_groups") and hasattr(opt, "fp16_groups"):  # bf16 at ZeRO 0
        masters = {id(p): m for ms, ps in zip(opt.fp32_groups, opt.fp16_groups) for m, p in zip(ms, ps)}
    out = {}
    for name in names:
        p = params[name]
        if id(p) in masters:
            value = masters[id(p)]
        elif isinstance(opt, torch.optim.Optimizer):  # fp32 at ZeRO 0: the weights are the masters
            value = p
        else:
            value = safe_get_full_fp32_param(p)
        out[name] = value.detach().float().cpu().clone()
    return out


def apply_thaws(engine, stop: GradientStop, schedule: dict, groups: list[dict], step: int) -> list[int]:
    """After optimizer step `step`: the depths due to thaw now become trainable for the next update.

    The gradient stop moves down to the new lowest trainable depth, and each thawed depth's groups
    get a fresh AdamW state (see `reset_optimizer_state`); their LR ramp is in the LR lambdas.

    Returns:
        The depths thawed (usually none).
    """
    depths = thaw_events(schedule, step - 1, step)
    if depths:
        stop.set_lowest_trainable(lowest_trainable_depth(schedule, step))
        reset_optimizer_state(engine, [i for i, g in enumerate(groups) if g["depth"] in depths])
    return depths
