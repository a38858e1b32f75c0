"""Exact-duplicate and train/eval-overlap detection on small columns (hash, label). NumPy only; no Ray."""
from __future__ import annotations

from typing import Optional

import numpy as np


def first_occurrence(hashes: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Boolean mask keeping the first row (in the given order) of each distinct (hash, label).

    With labels=None, rows are duplicates when their hashes match. Same text with different labels
    is not an exact duplicate and is kept.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    pos = np.arange(n)
    labs = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    order = np.lexsort((pos, labs, hashes))  # by hash, then label, then position
    h, lab = hashes[order], labs[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (h[1:] != h[:-1]) | (lab[1:] != lab[:-1])
    keep = np.zeros(n, dtype=bool)
    keep[order[starts]] = True
    return keep


def overlap(hashes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose text hash also occurs in `other` (e.g. train rows found in eval)."""
    return np.isin(np.asarray(hashes, dtype=np.uint64), np.asarray(other, dtype=np.uint64))
