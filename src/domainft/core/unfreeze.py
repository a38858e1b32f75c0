"""Gradual unfreezing designed for ZeRO: freezing is a schedule, not `requires_grad` flips.

Every group is in the optimizer from the start (ZeRO never trains a parameter whose
requires_grad flips to True after `deepspeed.initialize`). While a depth is frozen:
- its LR factor is 0 (schedules.thaw_multiplier), so even a zero-filled gradient cannot move it;
- its gradients are never computed: GradientStop detaches the output of the frozen blocks, so the
  backward pass ends at the lowest trainable layer and frozen layers cost no backward compute.
When it thaws it gets a short warmup of its own (its Adam moments are stale).
Depths that never thaw (train_top_fraction) are instead removed from the optimizer up front by
`freeze_never_trained`, which saves their optimizer memory.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import nn

from domainft.core.layers import LayerMap


def thaw_schedule(num_layers: int, initial_layers: int, steps_per_epoch: int, every_epochs: float = 0.0,
                  every_steps: Optional[int] = None, train_top_fraction: Optional[float] = None,
                  param_counts: Optional[Mapping[int, int]] = None) -> dict[int, Optional[int]]:
    """The optimizer step at which each depth becomes trainable.

    Args:
        num_layers: L, encoder layers.
        initial_layers: Top encoder layers trainable (with the head) from step 0. Values >= L + 1
            make the embeddings trainable from the start too.
        steps_per_epoch: Optimizer steps per epoch (to turn every_epochs into steps).
        every_epochs: Thaw one more depth every N epochs, top-down (embeddings last); 0 = off.
        every_steps: Thaw one more depth every N optimizer steps; overrides every_epochs.
        train_top_fraction: If given, overrides the gradual settings: the smallest set of top
            depths (the head always included) holding >= this fraction of all parameters is
            trainable from step 0, the rest never.
        param_counts: Parameter count per depth (LayerMap.param_counts); needed for
            train_top_fraction.

    Returns:
        {depth: step} for depths 0..L+1; 0 = trainable from the start, None = never.
    """
    depths = range(num_layers + 2)
    if train_top_fraction is not None:
        if not 0.0 < train_top_fraction <= 1.0:
            raise ValueError(f"train_top_fraction must be in (0, 1], got {train_top_fraction}")
        if param_counts is None:
            raise ValueError("train_top_fraction needs param_counts (LayerMap.param_counts(model))")
        missing = [d for d in depths if d not in param_counts]
        if missing:
            raise ValueError(f"param_counts lacks depths {missing}")
        total = sum(param_counts[d] for d in depths)
        schedule: dict[int, Optional[int]] = {}
        covered = 0
        for d in depths:
            # Head always in; then add depths top-down until the fraction is reached.
            schedule[d] = 0 if d == 0 or covered < train_top_fraction * total else None
            if schedule[d] == 0:
                covered += param_counts[d]
        return schedule

    if every_steps is not None:
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        interval = every_steps
    elif every_epochs > 0:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        interval = max(1, round(every_epochs * steps_per_epoch))
    elif every_epochs == 0:
        return {d: 0 for d in depths}
    else:
        raise ValueError(f"every_epochs must be >= 0, got {every_epochs}")
    if initial_layers < 0:
        raise ValueError(f"initial_layers must be >= 0, got {initial_layers}")
    return {d: 0 if d <= initial_layers else (d - initial_layers) * interval for d in depths}


def lowest_trainable_depth(schedule: Mapping[int, Optional[int]], step: int) -> int:
    """Largest depth that is trainable at `step` (0 = only the head; L+1 = everything)."""
    trainable = [d for d, t in schedule.items() if t is not None and t <= step]
    if not trainable:
        raise ValueError(f"nothing is trainable at step {step} in schedule {dict(schedule)}")
    return max(trainable)


def thaw_events(schedule: Mapping[int, Optional[int]], prev_step: int, step: int) -> list[int]:
    """Depths that become trainable in (prev_step, step], sorted (thaw_events(s, -1, 0): the start)."""
    return sorted(d for d, t in schedule.items() if t is not None and prev_step < t <= step)


def within_run(schedule: Mapping[int, Optional[int]], total_steps: int) -> dict[int, Optional[int]]:
    """The schedule of one run of `total_steps` optimizer steps: a depth due to thaw at or after its last
    step never trains in it (None), so it gets no optimizer state and no backward at all."""
    return {d: (s if s is not None and s < total_steps else None) for d, s in schedule.items()}


def freeze_never_trained(model: nn.Module, layer_map: LayerMap, schedule: Mapping[int, Optional[int]]) -> list[str]:
    """Set requires_grad=False on every parameter whose depth never thaws (schedule value None).

    Call before building the param groups: those parameters then get no optimizer state at all,
    which is the point of "train only the top X%". Never use this for depths that thaw later
    (ZeRO ignores a requires_grad flipped back to True after initialisation).

    Returns:
        The names of the parameters frozen.
    """
    frozen = []
    for name, param in model.named_parameters():
        if schedule[layer_map.depth[name]] is None:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def _detach(obj: Any) -> Any:
    """Detach every tensor in a block output: a tensor, a tuple/list, or a dict-like ModelOutput."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (tuple, list)):
        items = [_detach(x) for x in obj]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return type(obj)(items)
    if isinstance(obj, Mapping):
        # A ModelOutput is an OrderedDict whose fields are also attributes; rebuilding it through its
        # constructor keeps both views in sync (setting keys on the returned object would too, but
        # we do not mutate what the block returned).
        return type(obj)(**{k: _detach(v) for k, v in obj.items()})
    return obj


class GradientStop:
    """Stops the backward pass below the lowest trainable depth.

    Frozen blocks (LayerMap.boundary_module_names) run with autograd off and their outputs are
    detached, and forward pre-hooks on the encoder layers detach keyword inputs made from frozen
    parameters (DeBERTa's shared rel_embeddings). Since a frozen block's output no longer requires
    grad, autograd never runs backward through it or anything below it: frozen parameters keep
    grad None and cost no backward compute. With lowest trainable depth d < L+1 this cuts at the
    block at depth d+1 (the highest frozen block); with d == L+1 it does nothing.

    Call `set_lowest_trainable(lowest_trainable_depth(schedule, step))` before the forward passes
    of each optimizer step. Hooks act in eval too (harmless: nothing needs grad there).
    """

    def __init__(self, model: nn.Module, layer_map: LayerMap):
        self.layer_map = layer_map
        self.lowest_trainable = layer_map.embeddings_depth
        modules = dict(model.named_modules())
        self._handles = []
        self._grad_modes: list[bool] = []
        for depth, names in layer_map.boundary_module_names.items():
            for name in names:
                pre = functools.partial(self._no_grad_hook, depth=depth)
                self._handles.append(modules[name].register_forward_pre_hook(pre))
                hook = functools.partial(self._output_hook, depth=depth)
                # always_call: the hook also runs when the block raises, so grad mode is restored.
                self._handles.append(modules[name].register_forward_hook(hook, always_call=True))
        if layer_map.layer_input_kwargs:
            for depth in range(1, layer_map.num_layers + 1):
                module = modules[layer_map.block_module_names[depth]]
                self._handles.append(module.register_forward_pre_hook(self._input_hook, with_kwargs=True))

    def set_lowest_trainable(self, depth: int) -> None:
        """Depths > `depth` are frozen from now on (0 = head only, L+1 = nothing frozen)."""
        if not 0 <= depth <= self.layer_map.embeddings_depth:
            raise ValueError(f"depth must be in 0..{self.layer_map.embeddings_depth}, got {depth}")
        self.lowest_trainable = depth

    def _no_grad_hook(self, module: nn.Module, args: Any, *, depth: int) -> None:
        # A frozen block runs without recording autograd state: no saved activations, less work.
        if depth > self.lowest_trainable:
            self._grad_modes.append(torch.is_grad_enabled())
            torch.set_grad_enabled(False)

    def _output_hook(self, module: nn.Module, args: Any, output: Any, *, depth: int) -> Any:
        # Detaching every frozen block (not only the highest) is equally cheap and keeps the rule
        # simple for blocks that feed more than the next one (DeBERTa's conv reads the embeddings).
        if depth > self.lowest_trainable:
            if self._grad_modes:
                torch.set_grad_enabled(self._grad_modes.pop())
            return None if output is None else _detach(output)
        return None

    def _input_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
        frozen = [k for k, d in self.layer_map.layer_input_kwargs.items()
                  if d > self.lowest_trainable and isinstance(kwargs.get(k), torch.Tensor)]
        if not frozen:
            return None
        return args, {**kwargs, **{k: kwargs[k].detach() for k in frozen}}

    def remove(self) -> None:
        """Unregister all hooks (the model then back-propagates through everything again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "GradientStop":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
