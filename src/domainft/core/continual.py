"""Continual retraining from a previous domainft classifier: widening its head for new labels (the
forgetting metrics are scored in core/scoring.py). Plain PyTorch, no Ray."""
from __future__ import annotations

import contextlib
import json
import os

import torch
from safetensors import safe_open
from torch import nn


def _checkpoint_files(model_dir: str) -> dict[str, str]:
    """Tensor name -> safetensors file of a Hugging Face folder (one file, or sharded with an index)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            return {k: os.path.join(model_dir, v) for k, v in json.load(f)["weight_map"].items()}
    path = os.path.join(model_dir, "model.safetensors")
    with safe_open(path, framework="pt") as f:
        return {k: path for k in f.keys()}


@torch.no_grad()
def widen_head(model: nn.Module, model_dir: str, n_old: int) -> list[str]:
    """Copy the trained rows of the old, narrower head into `model` (loaded from `model_dir` with a
    head of more labels, whose mismatched tensors transformers initialised afresh).

    Every parameter whose checkpoint tensor has `n_old` rows where the model has more (same other
    dimensions) gets its first `n_old` rows from the checkpoint: old classes keep their ids and, for
    the same input, their logits; the new rows keep their fresh initialisation.

    Returns:
        The names of the widened parameters.

    Raises:
        ValueError: a parameter differs from the checkpoint in another way (then the old head
            cannot be kept), or no parameter was widened.
    """
    files = _checkpoint_files(model_dir)
    params = dict(model.named_parameters())
    widened, bad = [], []
    with contextlib.ExitStack() as stack:
        opened = {path: stack.enter_context(safe_open(path, framework="pt")) for path in set(files.values())}
        for name, path in files.items():
            p = params.get(name)
            if p is None:
                continue
            shape = tuple(opened[path].get_slice(name).get_shape())
            if shape == tuple(p.shape):
                continue
            if shape[0] == n_old and p.shape[0] > n_old and shape[1:] == tuple(p.shape[1:]):
                p[:n_old].copy_(opened[path].get_tensor(name).to(p.dtype))
                widened.append(name)
            else:
                bad.append(f"{name} {shape} -> {tuple(p.shape)}")
    if bad or not widened:
        raise ValueError(f"{model_dir}: cannot widen the classification head from {n_old} labels: "
                         + (f"parameters change shape otherwise ({'; '.join(bad[:5])})" if bad
                            else "no parameter has one row per label"))
    return sorted(widened)
