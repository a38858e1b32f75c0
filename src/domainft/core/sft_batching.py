"""Batches for generative SFT: padding, the loss labels, packed rows, and the token counts the loss is
divided by (core.loop.train_epoch's count_fn). Plain NumPy / PyTorch."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from domainft.data.tokenize import pad_rows

IGNORE_INDEX = -100  # a label the loss skips (prompt, padding): Hugging Face's convention


def pad_sft_batch(batch: Mapping[str, Any], pad_id: int = 0, pad_to_multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Prepared SFT rows (`input_ids`, `labels`, `position_ids`: ragged) -> model inputs, right-padded.

    A batch holding packed rows (a position id restarts at 0 inside a row) gets `position_ids` and no
    attention mask: transformers then builds a block-diagonal causal mask from the position ids (a flash /
    varlen kernel on GPU), so no token attends across a conversation's boundary; padding positions are 0,
    each pad its own block. Unpacked rows get the usual attention mask.
    """
    ids, mask = pad_rows(batch["input_ids"], pad_id, pad_to_multiple_of)
    labels, _ = pad_rows(batch["labels"], IGNORE_INDEX, pad_to_multiple_of)
    out = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
    if is_packed(batch["position_ids"]):
        positions, _ = pad_rows(batch["position_ids"], 0, pad_to_multiple_of)
        out["position_ids"] = torch.from_numpy(positions)
    else:
        out["attention_mask"] = torch.from_numpy(mask)
    return out


def is_packed(position_rows: Any) -> bool:
    """Whether any row holds more than one sequence (its position ids restart at 0 after the first token)."""
    rows = list(position_rows)
    if not rows:
        return False
    starts = sum(int(np.count_nonzero(np.asarray(r) == 0)) for r in rows)
    return starts > len(rows)


def count_label_tokens(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The tokens a causal LM's loss covers in a batch: labels other than IGNORE_INDEX after the one-token
    shift (the first position predicts nothing)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


class TokenLossEval:
    """A rank's eval sums for SFT: the summed token loss, the tokens and the rows (float64, all-reduced)."""

    def __init__(self, device: torch.device):
        self.stats = torch.zeros(3, dtype=torch.float64, device=device)

    def update(self, output: Any, batch: Mapping[str, torch.Tensor]) -> int:
        n = count_label_tokens(batch)
        # The model's loss is the mean over the batch's label tokens: times their count it is their sum
        # (a batch without any label token contributes nothing, not 0/0).
        summed = torch.where(n > 0, output.loss.double() * n, torch.zeros((), dtype=torch.float64, device=n.device))
        self.stats += torch.stack([summed, n.double(), torch.tensor(float(batch["input_ids"].shape[0]),
                                                                    dtype=torch.float64, device=n.device)])
        return int(batch["input_ids"].shape[0])

    def sums(self) -> list[torch.Tensor]:
        return [self.stats]

    def result(self) -> dict:
        loss_sum, tokens, rows = (float(x) for x in self.stats.cpu())
        loss = loss_sum / tokens if tokens else float("nan")
        return {"eval_loss": loss, "perplexity": float(np.exp(min(loss, 50.0))) if tokens else float("nan"),
                "eval_tokens": int(tokens), "eval_rows": int(rows)}
