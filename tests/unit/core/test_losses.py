import math

import pytest
import torch
import torch.nn.functional as F

from domainft.core.losses import balanced_class_weights, weighted_cross_entropy
from domainft.core.metrics import prediction_warnings
from domainft.core.schedules import batch_lr_scale


def test_balanced_weights_match_sklearn_rule():
    assert balanced_class_weights([385, 161, 54]) == pytest.approx([600 / (3 * 385), 600 / (3 * 161), 600 / (3 * 54)])
    assert balanced_class_weights([10, 0, 10]) == pytest.approx([2 / 3, 0.0, 2 / 3])
    with pytest.raises(ValueError):
        balanced_class_weights([0, 0])


def test_weighted_cross_entropy_weighs_minority_rows_up():
    class Out:
        logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])

    batch = {"labels": torch.tensor([0, 1])}
    plain = F.cross_entropy(Out.logits, batch["labels"])
    weighted = weighted_cross_entropy([1.0, 1.0])(Out, batch)
    assert torch.allclose(weighted, plain)
    # the misclassified minority row (label 1) counts 4x: the loss moves towards its term
    heavy = weighted_cross_entropy([1.0, 4.0])(Out, batch)
    assert heavy > plain


def test_batch_lr_scale():
    assert batch_lr_scale(32, 16, "none") == 1.0
    assert batch_lr_scale(32, 16, "sqrt") == pytest.approx(math.sqrt(2))
    assert batch_lr_scale(64, 16, "linear") == 4.0
    with pytest.raises(ValueError):
        batch_lr_scale(32, 16, "cubic")


def test_collapse_onto_the_majority_class_is_reported():
    cm = [[385, 0, 0], [160, 1, 0], [54, 0, 0]]  # everything predicted as class 0 but one row
    w = prediction_warnings(cm, ["business", "sport", "tech"])
    assert len(w) == 1 and "collapse" in w[0] and "'business' for 100%" in w[0] and "64%" in w[0]
    assert prediction_warnings([[50, 0], [0, 50]], ["a", "b"]) == []
    assert prediction_warnings([[50, 0, 0], [0, 50, 0], [5, 0, 0]], ["a", "b", "c"]) == [
        "never predicted: 'c' (they have eval rows)"]
    assert prediction_warnings([[95, 0], [5, 0]], ["a", "b"]) == ["never predicted: 'b' (they have eval rows)"]
