"""The hot loop with the plain-PyTorch engine: train_epoch and evaluate (2 ranks: tests/integration/test_zero_matrix.py)."""
import numpy as np
import pytest
import torch

from domainft.core.batching import pad_batch
from domainft.core.loop import TorchEngine, evaluate, train_epoch
from domainft.core.metrics import confusion_matrix
from domainft.tasks.classification import ClassificationEval

ROWS = 37  # not a multiple of any batch size below


def _rows(seed=0, n=ROWS):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    ids = [np.concatenate([[1], rng.integers(5, 90, rng.integers(3, 10)), [2]]) for _ in range(n)]
    return ids, labels


def _batches(ids, labels, size):
    for i in range(0, len(ids), size):
        yield pad_batch({"input_ids": ids[i:i + size], "label": labels[i:i + size]})


def _engine(make_model, lr=1e-3, grad_accum=1):
    model = make_model("bert", num_layers=2, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return TorchEngine(model, opt, grad_accum=grad_accum, max_grad_norm=1.0)


def test_train_epoch_runs_exactly_the_micro_batches_and_steps(make_model):
    ids, labels = _rows()
    engine = _engine(make_model, grad_accum=2)
    steps = []
    stats = train_epoch(engine, _batches(ids, labels, 4), 8, torch.device("cpu"), lambda s, loss: steps.append(s))
    assert stats["micro_batches"] == 8 and engine.global_steps == 4 and steps == [1, 2, 3, 4]
    assert np.isfinite(stats["train_loss"])
    with pytest.raises(RuntimeError, match="ran out after 10 of 11"):
        train_epoch(engine, _batches(ids, labels, 4), 11, torch.device("cpu"))


def test_training_lowers_the_loss(make_model):
    ids, labels = _rows()
    engine = _engine(make_model, lr=3e-3)
    first = train_epoch(engine, _batches(ids, labels, 4), 9, torch.device("cpu"))["train_loss"]
    for _ in range(6):
        last = train_epoch(engine, _batches(ids, labels, 4), 9, torch.device("cpu"))["train_loss"]
    assert last < first


def _direct(model, ids, labels):
    with torch.no_grad():
        b = pad_batch({"input_ids": ids, "label": labels})
        preds = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
    return confusion_matrix(preds.numpy(), labels, 3)


def test_evaluate_scores_every_row_once_on_one_rank(make_model):
    ids, labels = _rows()
    engine = _engine(make_model)
    engine.eval()
    cm, loss, rows = evaluate(engine, _batches(ids, labels, 5), ClassificationEval(3, torch.device("cpu")),
                              torch.device("cpu")).result()
    assert rows == ROWS and np.array_equal(cm.numpy(), _direct(engine.module, ids, labels)) and loss > 0
