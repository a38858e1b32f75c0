"""The hot loop, identical for DeepSpeed's engine and a plain-PyTorch engine (the benchmark baseline).

The Engine protocol is the subset of DeepSpeed's engine we use: call (forward), `backward`, `step`
and `global_steps`. Nothing here knows about Ray or DeepSpeed.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Protocol

import torch
import torch.distributed as dist


class Engine(Protocol):
    global_steps: int

    def __call__(self, **batch: torch.Tensor) -> Any: ...

    def backward(self, loss: torch.Tensor) -> Any: ...

    def step(self) -> Any: ...


class TorchEngine:
    """Plain PyTorch with DeepSpeed's engine interface: accumulation, clipping, optimizer + scheduler step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                 grad_accum: int = 1, max_grad_norm: float = 0.0, autocast_dtype: Optional[torch.dtype] = None):
        self.module, self.optimizer, self.lr_scheduler = model, optimizer, lr_scheduler
        self.grad_accum, self.max_grad_norm, self.autocast_dtype = grad_accum, max_grad_norm, autocast_dtype
        self.micro_steps = 0
        self.global_steps = 0

    def __call__(self, **batch: torch.Tensor) -> Any:
        if self.autocast_dtype is None:
            return self.module(**batch)
        device_type = next(self.module.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=self.autocast_dtype):
            return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()
        self.micro_steps += 1

    def step(self) -> None:
        if self.micro_steps % self.grad_accum:
            return
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_steps += 1

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()


def train_epoch(
    engine: Engine,
    batches: Iterable[dict[str, torch.Tensor]],
    num_micro_batches: int,
    device: torch.device,
    on_step: Callable[[int, torch.Tensor], None] = lambda step, loss: None,
    loss_fn: Optional[Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]] = None,
    forward_kwargs: Optional[dict[str, Any]] = None,
    count_fn: Optional[Callable[[dict[str, torch.Tensor]], torch.Tensor]] = None,
    grad_accum: int = 1,
    world: int = 1,
) -> dict[str, float]:
    """Run exactly `num_micro_batches` micro batches (every rank the same count, or collectives hang).

    `on_step(global_step, loss)` runs after each optimizer step: unfreezing, LR logging, progress. It
    receives the loss as a device tensor; it should only call `.item()` every N steps (host sync).
    `loss_fn(output, batch)` replaces the model's own loss (e.g. core.losses.weighted_cross_entropy);
    `forward_kwargs` go to every forward (e.g. output_hidden_states for distillation).

    `count_fn(batch)`: the loss terms in a micro batch (SFT: the tokens with a label). Given, the loss is
    exact per term: the `grad_accum` micro batches of an optimizer step are read first, their counts
    summed over all ranks (one all-reduce per step), and every forward gets `num_items_in_batch` so that
    the model's loss is its summed loss / (that total / (world x grad_accum)); the engine's 1/grad_accum and
    the gradient all-reduce's 1/world then leave sum over the step / total terms, whatever the micro
    batches hold (Hugging Face's loss fix of late 2024). Without it, each micro batch's mean counts alike.
    """
    loss_sum = torch.zeros((), device=device)  # the loss summed over micro batches (per term with count_fn)
    terms = torch.zeros((), device=device)
    seen = 0
    for group in _step_groups(batches, num_micro_batches, grad_accum if count_fn is not None else 1):
        group = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in group]
        kwargs = dict(forward_kwargs or {})
        if count_fn is not None:
            counts = torch.stack([count_fn(b) for b in group]).to(device=device, dtype=torch.float32)
            total = counts.sum()
            if world > 1 and dist.is_available() and dist.is_initialized():
                dist.all_reduce(total)
            per_share = total.clamp(min=1) / (world * grad_accum)
            kwargs["num_items_in_batch"] = per_share
        for i, batch in enumerate(group):
            # -- forward / backward / step: DeepSpeed scales by 1/grad_accum and steps only at the boundary
            out = engine(**batch, **kwargs)
            loss = out.loss if loss_fn is None else loss_fn(out, batch)
            engine.backward(loss)
            before = engine.global_steps
            engine.step()
            # -- bookkeeping stays on the device: no host sync per step
            if count_fn is not None:
                loss_sum += loss.detach().float() * per_share  # back to this micro batch's summed loss
                terms += counts[i]
            else:
                loss_sum += loss.detach().float()
                terms += 1
            seen += 1
            if engine.global_steps != before:
                shown = loss.detach() if count_fn is None else (loss_sum / terms.clamp(min=1)).detach()
                on_step(engine.global_steps, shown)
    if seen < num_micro_batches:
        raise RuntimeError(f"data shard ran out after {seen} of {num_micro_batches} micro batches")
    return {"train_loss": (loss_sum / terms.clamp(min=1)).item(), "micro_batches": float(seen)}  # one sync per epoch


def _step_groups(batches: Iterable[dict], limit: int, size: int) -> Iterable[list[dict]]:
    """The first `limit` batches in lists of `size` (an optimizer step's micro batches; the last may be short)."""
    group: list[dict] = []
    for n, batch in enumerate(batches):
        if n >= limit:
            break
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class Evaluator(Protocol):
    """What a task accumulates over eval batches (domainft.tasks): per-rank sums that are all-reduced."""

    def update(self, output: Any, batch: dict[str, torch.Tensor]) -> int:
        """Score one batch; returns the rows it held (for progress)."""

    def sums(self) -> list[torch.Tensor]:
        """The accumulated tensors; `evaluate` sums each across ranks in place (all_reduce)."""


def _dummy_batch(device: torch.device) -> dict[str, torch.Tensor]:
    ids = torch.zeros((1, 8), dtype=torch.int64, device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}  # no labels: the output is discarded


def _any_rank_has(has: bool, device: torch.device) -> bool:
    flag = torch.tensor([1 if has else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())  # host sync: once per eval round


@torch.no_grad()
def evaluate(engine: Any, batches: Iterable[dict[str, torch.Tensor]], evaluator: Evaluator, device: torch.device,
             world: int = 1, on_batch: Callable[[int], None] = lambda rows: None) -> Evaluator:
    """Distributed eval over this rank's own shard of the eval split (every row on exactly one rank).

    Shards may differ in size (the eval split is not cut to equal lengths, so no row is dropped),
    yet ranks step in lockstep: each round every rank runs one forward, a rank whose shard is done
    repeats its last batch (or a 1-row dummy) and scores nothing, until no rank has a batch left.
    ZeRO-3 gathers parameters collectively inside forward, so an unequal number of forwards hangs.
    `on_batch(rows)` runs after each scored batch of this rank (progress).

    Returns:
        `evaluator`, its sums added up over all ranks (what it scores is the task's: domainft.tasks).
    """
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    it, last = iter(batches), None
    while True:
        batch = next(it, None)
        if batch is not None:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if not (_any_rank_has(batch is not None, device) if distributed else batch is not None):
            break
        if batch is None:  # this rank is done: a forward whose output is dropped keeps ZeRO-3's gathers matched
            engine(**(last if last is not None else _dummy_batch(device)))
            continue
        last = batch
        on_batch(evaluator.update(engine(**batch), batch))
    if distributed:
        for t in evaluator.sums():
            dist.all_reduce(t)
    return evaluator
