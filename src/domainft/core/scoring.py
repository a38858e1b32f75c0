"""Scoring a model outside the training loop (plain PyTorch, one process): the confusion matrix on
tokenized rows, and CPU latency. Used to compare a teacher with its student and by benchmarks."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from domainft.core.batching import pad_batch
from domainft.core.metrics import confusion_matrix


@torch.no_grad()
def confusion_of(model: nn.Module, input_ids: Sequence[Sequence[int]], labels: Sequence[int], num_classes: int,
                 batch_size: int = 32, pad_id: int = 0) -> np.ndarray:
    """(C, C) confusion matrix [true, pred] of `model` on already tokenized rows."""
    model.eval()
    preds: list[int] = []
    for i in range(0, len(input_ids), batch_size):
        b = pad_batch({"input_ids": input_ids[i:i + batch_size], "label": np.zeros(len(input_ids[i:i + batch_size]))},
                      pad_id)
        preds += model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1).tolist()
    return confusion_matrix(preds, labels, num_classes)


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, seq_len: int = 128, batch: int = 1, repeats: int = 20, vocab: int = 1000) -> float:
    """Median wall time of one forward on CPU, in milliseconds (after 3 warm-up runs)."""
    model = model.eval().to("cpu")
    ids = torch.randint(5, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
