"""Scoring a model outside the training loop (plain PyTorch, one process): probabilities and the
confusion matrix on tokenized rows, CPU latency, and the scores of continual retraining (the previous
run's eval split and the new one, before and after). Used to compare a teacher with its student, by
the audit's folds, after a continual run and by benchmarks."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from domainft.core.batching import pad_batch
from domainft.core.metrics import confusion_matrix, metrics_from_confusion
from domainft.core.model import build_tokenizer
from domainft.data.labels import model_label_names


@torch.no_grad()
def predict_proba(model: nn.Module, input_ids: Sequence[Sequence[int]], batch_size: int = 32,
                  pad_id: int = 0) -> np.ndarray:
    """(N, C) softmax probabilities (float32) of `model` on already tokenized rows, in row order."""
    model.eval()
    out = []
    for i in range(0, len(input_ids), batch_size):
        chunk = input_ids[i:i + batch_size]
        b = pad_batch({"input_ids": chunk, "label": np.zeros(len(chunk))}, pad_id)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        out.append(torch.softmax(logits.float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)


def confusion_of(model: nn.Module, input_ids: Sequence[Sequence[int]], labels: Sequence[int], num_classes: int,
                 batch_size: int = 32, pad_id: int = 0) -> np.ndarray:
    """(C, C) confusion matrix [true, pred] of `model` on already tokenized rows."""
    preds = predict_proba(model, input_ids, batch_size, pad_id).argmax(-1)
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


def split_metrics(probs: np.ndarray, labels: Sequence[int], label_names: Sequence[str],
                  classes: Optional[Sequence[str]] = None) -> dict:
    """Accuracy and macro-F1 of predictions (argmax of `probs`) on one split; macro-F1 over `classes`
    (default: the classes with rows in the split), so that labels a split never holds (new classes on
    the old eval split) do not count as zeros. Per-class scores as in `metrics_from_confusion`."""
    labels = np.asarray(labels, dtype=np.int64)
    cm = confusion_matrix(probs.argmax(-1) if len(probs) else np.zeros(0, np.int64), labels, len(label_names))
    m = metrics_from_confusion(cm, label_names)
    if classes is None:
        classes = [n for n, c in zip(label_names, cm.sum(axis=1)) if c > 0]
    f1 = [m["per_class"][n]["f1"] for n in classes]
    return {"rows": int(len(labels)), "accuracy": m["accuracy"], "macro_f1": float(np.mean(f1)) if f1 else 0.0,
            "macro_f1_over": list(classes), "per_class": m["per_class"]}


def _score(model_dir: str, input_ids: list, labels: np.ndarray, names: Sequence[str]) -> dict:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = build_tokenizer(model_dir).pad_token_id or 0
    if model.config.pad_token_id is None:  # a decoder pools its last non-pad token: the tokenizer's pad (or EOS)
        model.config.pad_token_id = pad
    return split_metrics(predict_proba(model, input_ids, pad_id=pad), labels, names)


def forgetting_metrics(previous_eval_dir: str, previous_names: Sequence[str], new_eval_dir: str,
                       names: Sequence[str], best_dir: str, start_model: Optional[str], max_length: int) -> dict:
    """Scores on the previous run's eval split and on the new one, after training (`best_dir`) and,
    when training continued from a domainft classifier (`start_model`), before it: forgetting is the
    drop of macro-F1 on the previous eval split.

    The previous split is tokenized again with best/'s tokenizer; its labels are mapped by name
    (rows whose label the new label set lacks are left out and counted). Macro-F1 runs over the
    classes each split holds (`split_metrics`).
    """
    index = {n: i for i, n in enumerate(names)}
    prev = pq.read_table(previous_eval_dir, columns=["text", "label"])
    prev_labels = [previous_names[i] for i in prev.column("label").to_pylist()]
    keep = [i for i, n in enumerate(prev_labels) if n in index]
    texts = prev.column("text").to_pylist()
    tok = build_tokenizer(best_dir)
    prev_ids = tok([texts[i] for i in keep], truncation=True, max_length=max_length)["input_ids"] if keep else []
    prev_y = np.array([index[prev_labels[i]] for i in keep], dtype=np.int64)
    new = pq.read_table(new_eval_dir, columns=["input_ids", "label"])
    new_ids, new_y = new.column("input_ids").to_pylist(), new.column("label").to_numpy()
    out = {"previous_eval_dir": previous_eval_dir, "previous_eval_rows_left_out": len(prev_labels) - len(keep),
           "new_eval_dir": new_eval_dir,
           "previous_eval": {"after": _score(best_dir, prev_ids, prev_y, names)},
           "new_eval": {"after": _score(best_dir, new_ids, new_y, names)}}
    start_labels = model_label_names(start_model) if start_model else None
    if start_labels and list(names[:len(start_labels)]) == start_labels:
        out["started_from"] = start_model
        out["previous_eval"]["before"] = _score(start_model, prev_ids, prev_y, names)
        out["new_eval"]["before"] = _score(start_model, new_ids, new_y, names)
        out["forgetting_macro_f1"] = round(out["previous_eval"]["before"]["macro_f1"]
                                           - out["previous_eval"]["after"]["macro_f1"], 4)
    return out
