"""Continual retraining without Ray: a domainft classifier's head is kept for the same labels and
widened for new ones (old classes keep their ids and logits); label order rules."""
import json

import numpy as np
import pytest
import torch

from domainft.core.continual import widen_head
from domainft.core.scoring import split_metrics
from domainft.core.export import export_hf
from domainft.core.model import build_model
from domainft.data.labels import (MODEL_MARKER, continual_label_names, label_order_problem,
                                  model_label_names)

OLD = ["business", "sport", "tech"]


@pytest.fixture(scope="module")
def previous_best(tmp_path_factory, make_model, minilm_path):
    """A 'previous run's best/': a tiny BERT classifier with 3 labels, exported as domainft does."""
    src = tmp_path_factory.mktemp("base")
    make_model("bert", num_layers=2, seed=3).save_pretrained(src)
    model = make_model("bert", num_layers=2, seed=1, num_labels=3)
    with torch.no_grad():
        model.classifier.weight.add_(0.7)  # distinct from any fresh initialisation
        model.classifier.bias.add_(0.3)
    trained = dict(model.named_parameters())
    return export_hf(trained, str(src), OLD, str(minilm_path), tmp_path_factory.mktemp("prev") / "best",
                     required=trained)


def _logits(model, batch):
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_export_marks_a_domainft_classifier(previous_best, tmp_path):
    config = json.loads((previous_best / "config.json").read_text())
    assert config[MODEL_MARKER] == {"label_names": OLD}
    assert model_label_names(str(previous_best)) == OLD
    assert model_label_names("bert-base-uncased") is None  # a hub name: no marker, no continual path
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "1": "b", "2": "c"}}))
    with pytest.raises(ValueError, match="disagree with its id2label"):
        model_label_names(str(edited))


def test_same_labels_keep_the_head_as_trained(previous_best, make_batch):
    old = build_model(str(previous_best), OLD)
    again = build_model(str(previous_best), OLD)
    batch = make_batch()
    assert torch.equal(_logits(old, batch), _logits(again, batch))
    assert float(old.classifier.bias[0].detach()) == pytest.approx(0.3, abs=0.2)  # trained bias, not a fresh zero


def test_new_labels_widen_the_head_keeping_old_rows_and_logits(previous_best, make_batch):
    batch = make_batch()
    old = build_model(str(previous_best), OLD)
    wide = build_model(str(previous_best), OLD + ["politics", "health"])
    assert wide.config.num_labels == 5 and wide.config.id2label[3] == "politics"
    assert wide.classifier.weight.shape == (5, 32)
    assert torch.equal(wide.classifier.weight[:3], old.classifier.weight)
    assert torch.equal(wide.classifier.bias[:3], old.classifier.bias)
    old_logits, new_logits = _logits(old, batch), _logits(wide, batch)
    assert torch.allclose(new_logits[:, :3], old_logits, atol=1e-6)  # old classes: same ids, same logits
    assert not torch.allclose(new_logits[:, 3:], torch.zeros_like(new_logits[:, 3:]))


def test_labels_out_of_the_old_order_are_an_error(previous_best):
    with pytest.raises(ValueError, match="those labels first"):
        build_model(str(previous_best), ["sport", "business", "tech", "politics"])


def test_widen_head_refuses_a_head_it_cannot_keep(previous_best, make_model):
    other = make_model("bert", num_layers=2, num_labels=5)
    with pytest.raises(ValueError, match="cannot widen"):
        widen_head(other, str(previous_best), n_old=4)  # the checkpoint has 3 rows, not 4


def test_label_sets_old_first_then_new_a_missing_old_label_stays():
    assert continual_label_names(None, None, ["b", "a"]) == ["a", "b"]
    assert continual_label_names(OLD, None, ["tech", "politics", "business"]) == OLD + ["politics"]
    assert continual_label_names(OLD, OLD + ["x", "a"], []) == OLD + ["x", "a"]
    assert label_order_problem(OLD, None) is None
    assert label_order_problem(OLD, OLD + ["new"]) is None
    assert "must start with" in label_order_problem(OLD, ["tech", "business", "sport"])


def test_split_metrics_average_over_the_classes_a_split_holds():
    names = ["a", "b", "c", "d"]
    probs = np.eye(4)[[0, 0, 1, 3]]  # the last row predicts a new class d: an error on the old split
    m = split_metrics(probs, [0, 0, 1, 1], names)
    assert m["macro_f1_over"] == ["a", "b"]
    assert m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
