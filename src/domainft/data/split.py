"""Deterministic stratified train/eval split. NumPy only; no Ray."""
from __future__ import annotations

import numpy as np


def eval_count(n: int, fraction: float) -> int:
    """Held-out rows for a class of n rows: round(n * fraction), at least 1 and at most n - 1 when n >= 2
    (so every class with 2+ rows is seen in both splits), 0 for a single-row class (it trains)."""
    if n < 2:
        return 0
    return int(min(n - 1, max(1, round(n * fraction))))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: True = eval. Rows are taken in the given order (sort them by a stable key first).

    Each class is permuted by its own generator seeded with (seed, class id), so adding rows of one
    class never moves rows of another between splits.
    """
    labels = np.asarray(labels)
    is_eval = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = eval_count(len(idx), fraction)
        if k:
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(c)])
            is_eval[idx[rng.permutation(len(idx))[:k]]] = True
    return is_eval
