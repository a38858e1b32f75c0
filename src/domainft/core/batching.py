"""Dynamic padding: each batch is padded to its own longest row, not to max_length."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from domainft.data.tokenize import pad_rows


def pad_batch(batch: Mapping[str, np.ndarray], pad_id: int = 0, pad_to_multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Turn a Ray Data / Arrow batch (`input_ids` as ragged arrays, `label` ints) into model inputs.

    Args:
        batch: `input_ids` (object array of int arrays, or a 2-D int array) and `label`.
        pad_id: the tokenizer's pad token id.
        pad_to_multiple_of: round the length up (tensor-core friendly on GPUs; harmless on CPU).
    Returns:
        input_ids, attention_mask (int64 [B, T]) and labels (int64 [B]).
    """
    ids, mask = pad_rows(batch["input_ids"], pad_id, pad_to_multiple_of)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),  # a copy: Arrow views are read-only
    }

