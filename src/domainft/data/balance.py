"""Class balance of the train split: ratio, and per-row repeat counts that bring max/min under a limit.

NumPy only; no Ray. The eval split is never rebalanced.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def class_ratio(counts) -> Optional[float]:
    """max/min over classes that have rows; None when fewer than one class has rows."""
    present = [int(c) for c in np.asarray(counts).ravel() if c > 0]
    if not present:
        return None
    return max(present) / min(present)


def target_counts(counts, max_ratio: float, method: str) -> np.ndarray:
    """Rows per class after balancing. Classes with no rows stay at 0 (nothing to copy from).

    oversample: every class is raised to at least ceil(max / max_ratio);
    undersample: every class is cut to at most floor(min * max_ratio); none: unchanged.
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = counts[counts > 0]
    if method == "none" or len(present) == 0 or present.max() <= present.min() * max_ratio:
        return counts.copy()
    if method == "oversample":
        floor = math.ceil(present.max() / max_ratio - 1e-9)
        return np.where(counts > 0, np.maximum(counts, floor), 0)
    if method == "undersample":
        cap = math.floor(present.min() * max_ratio + 1e-9)
        return np.minimum(counts, cap)
    raise ValueError(f"unknown balance method {method!r}")


def balance_repeats(labels: np.ndarray, n_classes: int, max_ratio: float, method: str, seed: int) -> np.ndarray:
    """How many times each row appears in the balanced train split (0 = dropped, 2+ = oversampled).

    Oversampling repeats every row of a class `target // n` times and adds one more copy of
    `target % n` rows drawn without replacement; undersampling keeps a random `target` rows.
    Deterministic for a given row order and seed.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes) if len(labels) else np.zeros(n_classes, dtype=np.int64)
    targets = target_counts(counts, max_ratio, method)
    repeats = np.ones(len(labels), dtype=np.int32)
    for c in np.flatnonzero(targets != counts):
        idx = np.flatnonzero(labels == c)
        n, target = len(idx), int(targets[c])
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(c), 7])
        if target > n:
            repeats[idx] = target // n
            repeats[idx[rng.choice(n, size=target % n, replace=False)]] += 1
        else:
            repeats[idx] = 0
            repeats[idx[rng.choice(n, size=target, replace=False)]] = 1
    return repeats
