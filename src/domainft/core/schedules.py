"""LR multipliers as pure functions of the optimizer step (no torch state).

`step` is the number of optimizer steps already taken. torch's LambdaLR sets a group's LR to
`initial_lr * lambda(k)` before the (k+1)-th update, so `lambda(k)` is the multiplier of that
update. A group's multiplier = global schedule (warmup, decay) x its thaw ramp (unfreeze.py).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

SCHEDULES = ("linear", "cosine", "constant")


def resolve_warmup_steps(total_steps: int, warmup_ratio: float, warmup_steps: Optional[int] = None) -> int:
    """Number of warmup steps: `warmup_steps` if given, else ceil(warmup_ratio * total_steps).

    Args:
        total_steps: Optimizer steps in the whole run.
        warmup_ratio: Fraction of total_steps spent warming up.
        warmup_steps: Explicit count; overrides warmup_ratio.

    Returns:
        The warmup length, capped at total_steps (a short smoke run with a long configured
        warmup then simply never leaves warmup).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        steps = warmup_steps
    else:
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        steps = math.ceil(warmup_ratio * total_steps)
    return min(steps, total_steps)


def base_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str,
                    min_lr_ratio: float = 0.0) -> float:
    """Global LR multiplier of the update made after `step` optimizer steps.

    Warmup is (step + 1) / (warmup_steps + 1): never exactly 0, so the very first update already
    moves the weights, and it reaches 1 at step == warmup_steps. After warmup: linear or cosine
    decay from 1 to min_lr_ratio at step == total_steps, or constant 1.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def thaw_multiplier(step: int, thaw_step: Optional[int], thaw_warmup_steps: int) -> float:
    """Thaw ramp of a group that becomes trainable at `thaw_step`.

    0 before thaw_step (and always for None: never thaws); 1 when thaw_step == 0 (trainable from
    the start: the global warmup already covers it); otherwise (step - thaw_step + 1) /
    thaw_warmup_steps capped at 1: a freshly thawed group gets its own short warmup because its
    Adam moments are stale (zero, or accumulated from zero gradients under ZeRO).
    """
    if thaw_step is None or step < thaw_step:
        return 0.0
    if thaw_step == 0 or thaw_warmup_steps <= 0:
        return 1.0
    return min(1.0, (step - thaw_step + 1) / thaw_warmup_steps)


def group_multiplier(step: int, *, thaw_step: Optional[int], total_steps: int, warmup_steps: int,
                     schedule: str, min_lr_ratio: float, thaw_warmup_steps: int) -> float:
    """base_multiplier x thaw_multiplier: the LambdaLR lambda of one group (keyword-bound)."""
    thaw = thaw_multiplier(step, thaw_step, thaw_warmup_steps)
    if thaw == 0.0:
        return 0.0
    return thaw * base_multiplier(step, total_steps, warmup_steps, schedule, min_lr_ratio)


def group_lr_lambdas(thaw_steps: Sequence[Optional[int]], total_steps: int, warmup_steps: int,
                     schedule: str, min_lr_ratio: float = 0.0,
                     thaw_warmup_steps: int = 0) -> list[Callable[[int], float]]:
    """One LambdaLR lambda per optimizer group.

    Args:
        thaw_steps: Per group, in optimizer group order, the step at which it becomes trainable
            (0 = from the start, None = never), e.g. `[schedule[g["depth"]] for g in groups]`.
        total_steps: Optimizer steps in the run.
        warmup_steps: Global warmup (see resolve_warmup_steps).
        schedule: "linear", "cosine" or "constant".
        min_lr_ratio: Floor of the decay as a fraction of the peak.
        thaw_warmup_steps: Length of the ramp a group gets when it thaws after step 0.

    Returns:
        functools.partial objects over a module-level function: small and picklable (no closure
        over the model or the optimizer), so they survive checkpointing and Ray serialisation.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return [functools.partial(group_multiplier, thaw_step=t, total_steps=total_steps, warmup_steps=warmup_steps,
                              schedule=schedule, min_lr_ratio=min_lr_ratio, thaw_warmup_steps=thaw_warmup_steps)
            for t in thaw_steps]


def batch_lr_scale(global_batch: int, reference_batch: int, mode: str) -> float:
    """Factor on every peak LR for a global batch other than the one the LR was chosen for.

    "sqrt" (Adam-family rule of thumb: the gradient noise falls with sqrt(batch)) or "linear"
    (Goyal et al.); "none" = 1. Without it, 2 workers at the same per-worker batch take half the
    optimizer steps at the same LR, which on small corpora is the difference between learning the
    minority classes and predicting the majority one.
    """
    if mode == "none":
        return 1.0
    ratio = global_batch / reference_batch
    if mode == "sqrt":
        return math.sqrt(ratio)
    if mode == "linear":
        return ratio
    raise ValueError(f"lr scaling must be none, sqrt or linear, got {mode!r}")
