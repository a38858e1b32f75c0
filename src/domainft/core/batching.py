"""Dynamic padding: each batch is padded to its own longest row, not to max_length."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def pad_batch(batch: Mapping[str, np.ndarray], pad_id: int = 0, pad_to_multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Turn a Ray Data / Arrow batch (`input_ids` as ragged arrays, `label` ints) into model inputs.

    Args:
        batch: `input_ids` (object array of int arrays, a list of int lists, or a 2-D int array) and `label`.
        pad_id: the tokenizer's pad token id.
        pad_to_multiple_of: round the length up (tensor-core friendly on GPUs; harmless on CPU).
    Returns:
        input_ids, attention_mask (int64 [B, T]) and labels (int64 [B]).
    """
    rows = batch["input_ids"]
    dense = isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype != object  # equal-length rows
    lengths = (np.full(len(rows), rows.shape[1], dtype=np.int64) if dense
               else np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows)))
    longest = int(lengths.max()) if len(lengths) else 1
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    # Vectorised (one scatter, no Python loop over rows): this runs in Ray Data's collate thread every
    # step, holding the GIL that the training loop needs to launch its kernels.
    mask = np.arange(longest) < lengths[:, None]
    ids = np.full((len(lengths), longest), pad_id, dtype=np.int64)
    if dense:
        ids[:, : rows.shape[1]] = rows
    elif lengths.sum():
        ids[mask] = np.concatenate(rows)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        "labels": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),  # a copy: Arrow views are read-only
    }
