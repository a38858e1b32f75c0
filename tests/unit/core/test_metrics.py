import numpy as np
import pytest
import torch

from domainft.core.metrics import confusion_matrix, metrics_from_confusion

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
PREDS = [0, 1, 0, 1, 1, 2, 0, 2, 1, 0]
NAMES = ["a", "b", "c", "d"]


def test_confusion_matrix_layout():
    cm = confusion_matrix(PREDS, LABELS, 4)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[2, 1, 0, 0],
                           [0, 2, 0, 0],
                           [1, 1, 2, 0],
                           [1, 0, 0, 0]]
    assert confusion_matrix(torch.tensor(PREDS), np.array(LABELS), 4).tolist() == cm.tolist()
    assert confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0], [0, 1], 4)


def test_metrics_by_hand():
    m = metrics_from_confusion(confusion_matrix(PREDS, LABELS, 4), NAMES)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["num_samples"] == 10
    # a: tp 2, predicted 4, support 3; b: tp 2, predicted 4, support 2; c: tp 2, predicted 2, support 4;
    # d: tp 0, predicted 0, support 1 (precision undefined -> 0)
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3),
                                     "support": 3})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4})
    assert pc["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_precision"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 1.0 + 0.5 + 0.0) / 4)
    assert m["macro_f1"] == pytest.approx((4 / 7 + 2 / 3 + 2 / 3 + 0.0) / 4)


def test_matches_sklearn():
    from sklearn import metrics as sk

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    preds = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, 200))
    preds[preds == 4] = 3  # class 4 is never predicted: undefined precision must be 0, not NaN
    m = metrics_from_confusion(confusion_matrix(preds, labels, 5), list("vwxyz"))
    kw = dict(labels=list(range(5)), average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(labels, preds, **kw))
    assert m["macro_precision"] == pytest.approx(sk.precision_score(labels, preds, **kw))
    assert m["macro_recall"] == pytest.approx(sk.recall_score(labels, preds, **kw))
    assert confusion_matrix(preds, labels, 5).tolist() == sk.confusion_matrix(labels, preds, labels=range(5)).tolist()
    assert m["per_class"]["z"]["precision"] == 0.0


def test_empty_is_zero_not_nan():
    m = metrics_from_confusion(np.zeros((2, 2), dtype=np.int64), ["x", "y"])
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert not any(np.isnan(v) for row in m["per_class"].values() for v in row.values())
    with pytest.raises(ValueError, match="label names"):
        metrics_from_confusion(np.zeros((2, 2)), ["x"])
