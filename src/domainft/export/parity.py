"""Parity checks of an export against the PyTorch model it came from.

fp32: max |logit difference| at batch 1 and 8 and several sequence lengths, with padded rows and a
second segment (so a graph that fixed a dim, or swapped the mask and the segment ids, fails).
int8: argmax agreement with PyTorch and the accuracy drop, on labelled check texts when given,
else agreement on random token batches (accuracy then unchecked).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from domainft.data.tokenize import pad_rows
from domainft.export.runtime import Runner

FP32_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
BATCHES = (1, 8)


def parity_lengths(max_length: int) -> list[int]:
    """Sequence lengths to check: short, odd, and the longest the export serves."""
    return sorted({min(n, max_length) for n in (1, 8, 37, max_length)})


def random_feed(input_names: Sequence[str], batch: int, seq: int, vocab_size: int, pad_id: int,
                type_vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random token rows [batch, seq]: row 0 full length, the others padded to shorter lengths, and
    (when the model has segment embeddings) a second segment in every row's second half."""
    rng = np.random.default_rng(seed)
    lengths = [seq] + [int(rng.integers(1, seq + 1)) for _ in range(batch - 1)]
    rows = [rng.integers(min(5, vocab_size - 1), vocab_size, n) for n in lengths]
    ids, mask = pad_rows(rows, pad_id)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        types = np.zeros_like(ids)
        if type_vocab_size >= 2:
            for i, n in enumerate(lengths):
                types[i, n // 2:n] = 1
        feed["token_type_ids"] = types
    return {k: v for k, v in feed.items() if k in input_names}


def torch_runner(model: torch.nn.Module) -> Runner:
    """feed by name -> logits with the PyTorch model (fp32, no autograd)."""
    def run(feed: dict) -> np.ndarray:
        with torch.no_grad():
            return model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in feed.items()}
                         ).logits.float().numpy()
    return run


def fp32_parity(reference: Runner, candidate: Runner, input_names: Sequence[str], max_length: int,
                vocab_size: int, pad_id: int, type_vocab_size: int) -> list[dict]:
    """Max |logit difference| per (batch, sequence length).

    Returns:
        [{"batch", "seq", "max_abs_diff", "argmax_agree"}] for batch 1 and 8 at `parity_lengths`.
    """
    out = []
    for b in BATCHES:
        for s in parity_lengths(max_length):
            feed = random_feed(input_names, b, s, vocab_size, pad_id, type_vocab_size, seed=b * 1000 + s)
            ref, got = reference(feed), candidate(feed)
            out.append({"batch": b, "seq": s, "max_abs_diff": float(np.abs(ref - got).max()),
                        "argmax_agree": bool((ref.argmax(-1) == got.argmax(-1)).all())})
    return out


def random_rows(n: int, max_length: int, vocab_size: int, seed: int = 0) -> list[np.ndarray]:
    """Random token rows of random lengths (up to max_length): check inputs when no texts are given."""
    rng = np.random.default_rng(seed)
    return [rng.integers(min(5, vocab_size - 1), vocab_size, int(rng.integers(2, max_length + 1))) for _ in range(n)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose argmax is the same."""
    return float((a.argmax(-1) == b.argmax(-1)).mean()) if len(a) else 1.0


def accuracy(logits: np.ndarray, labels: Optional[np.ndarray]) -> Optional[float]:
    return None if labels is None or not len(labels) else float((logits.argmax(-1) == labels).mean())


def compare(reference: np.ndarray, candidate: np.ndarray, labels: Optional[np.ndarray]) -> dict:
    """Agreement with the reference, accuracies and the drop, max |logit difference|."""
    ref_acc, acc = accuracy(reference, labels), accuracy(candidate, labels)
    return {"rows": int(len(reference)), "argmax_agreement": agreement(reference, candidate),
            "accuracy_torch": ref_acc, "accuracy": acc,
            "accuracy_drop": None if acc is None else ref_acc - acc,
            "max_abs_diff": float(np.abs(reference - candidate).max()) if len(reference) else 0.0}


def int8_failures(result: dict) -> list[str]:
    """What an int8 comparison misses of the goals (empty when it meets them)."""
    problems = []
    if result["argmax_agreement"] < MIN_AGREEMENT:
        problems.append(f"int8 argmax agreement {result['argmax_agreement']:.4f} < {MIN_AGREEMENT}")
    if result["accuracy_drop"] is not None and result["accuracy_drop"] > MAX_ACCURACY_DROP:
        problems.append(f"int8 accuracy drop {result['accuracy_drop']:.4f} > {MAX_ACCURACY_DROP} "
                        f"({result['accuracy_torch']:.4f} -> {result['accuracy']:.4f})")
    return problems
