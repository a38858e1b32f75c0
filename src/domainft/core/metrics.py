"""Classification metrics from a confusion matrix (which is what ranks all-reduce: a sum)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """Counts of (true label, predicted label) pairs.

    Args:
        preds: Predicted class ids (array-like of ints: list, numpy array, CPU tensor).
        labels: True class ids, same length.
        num_classes: Number of classes C.

    Returns:
        int64 array of shape (C, C); rows are true labels, columns predictions (sklearn's layout).
        Per-rank matrices can simply be summed.
    """
    preds = np.asarray(preds, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"preds and labels differ in length: {preds.size} vs {labels.size}")
    for what, arr in (("preds", preds), ("labels", labels)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{what} hold ids outside 0..{num_classes - 1}: min {arr.min()}, max {arr.max()}")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # Undefined ratios (no predictions of a class, or no support) count as 0, never NaN.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_confusion(cm: np.ndarray, label_names: Sequence[str]) -> dict:
    """Accuracy, macro precision/recall/F1 and per-class scores.

    Args:
        cm: (C, C) confusion matrix, rows = true labels.
        label_names: C names, in id order.

    Returns:
        {"accuracy", "macro_f1", "macro_precision", "macro_recall", "num_samples",
         "per_class": {name: {"precision", "recall", "f1", "support"}}} as plain Python numbers.
        Macro averages run over all C classes (sklearn with labels=range(C), zero_division=0).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(label_names):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(label_names)} label names")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted.astype(np.float64))
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "num_samples": total,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
    }


def prediction_warnings(cm: np.ndarray, label_names: Sequence[str], collapse_share: float = 0.9) -> list[str]:
    """Plain-language warnings about the predictions behind a confusion matrix.

    - collapse: one class takes at least `collapse_share` of all predictions while it is clearly
      less common in the truth (a classifier that predicts the majority class for everything can
      still show a respectable accuracy);
    - classes with eval rows that are never predicted.
    """
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    if total == 0 or cm.shape[0] < 2:
        return []
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    out = []
    top = int(predicted.argmax())
    share, truth = predicted[top] / total, support[top] / total
    if share >= collapse_share and truth < share - 0.05:
        out.append(f"collapse: the model predicts {label_names[top]!r} for {share:.0%} of the eval rows (its true "
                   f"share is {truth:.0%})")
    never = [label_names[i] for i in range(len(label_names)) if support[i] > 0 and predicted[i] == 0]
    if never and not out:
        out.append(f"never predicted: {', '.join(repr(n) for n in never)} (they have eval rows)")
    return out
