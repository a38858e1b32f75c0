"""Training losses (plain PyTorch): class-weighted cross-entropy.

The loop calls `loss_fn(output, batch)`; without one it uses the model's own (unweighted) loss.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """N / (C * n_c) per class (sklearn's "balanced"); a class with no rows gets weight 0.

    Raises:
        ValueError: No class has any row.
    """
    total, classes = sum(counts), len(counts)
    if total <= 0:
        raise ValueError(f"class counts are all zero: {list(counts)}")
    return [total / (classes * n) if n > 0 else 0.0 for n in counts]


def weighted_cross_entropy(weights: Sequence[float]) -> Callable[[object, Mapping[str, torch.Tensor]], torch.Tensor]:
    """A loss_fn for `core.loop.train_epoch`: cross-entropy of the logits with per-class weights."""
    w = torch.tensor(list(weights), dtype=torch.float32)

    def loss_fn(output, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = output.logits
        return F.cross_entropy(logits.float(), batch["labels"], weight=w.to(logits.device))

    return loss_fn
