import pytest
import torch

from domainft.core.layers import build_layer_map
from domainft.core.param_groups import build_param_groups, describe_groups, peak_lrs

L = 4


@pytest.fixture
def bert(make_model):
    model = make_model("bert", num_layers=L)
    return model, build_layer_map(model)


def test_llrd_peaks_and_group_layout(bert):
    model, lm = bert
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.5, head_lr_mult=10.0, weight_decay=0.01)
    assert [(g["depth"], g["decay"]) for g in groups] == [(d, dec) for d in range(L + 2) for dec in (True, False)]
    for g in groups:
        expected = 1e-2 if g["depth"] == 0 else 1e-3 * 0.5 ** g["depth"]
        assert g["lr"] == pytest.approx(expected) and g["initial_lr"] == g["lr"]
        assert g["name"] == lm.depth_label(g["depth"])
        assert g["weight_decay"] == (0.01 if g["decay"] else 0.0)
        assert len(g["params"]) == len(g["param_names"]) > 0
        assert all(lm.depth[n] == g["depth"] for n in g["param_names"])
    # every trainable parameter is in exactly one group
    all_names = [n for g in groups for n in g["param_names"]]
    assert sorted(all_names) == sorted(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    assert all(p is params[n] for g in groups for n, p in zip(g["param_names"], g["params"]))


def test_no_decay_on_biases_and_norms(bert):
    model, lm = bert
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.9, weight_decay=0.1)
    no_decay = {n for g in groups if not g["decay"] for n in g["param_names"]}
    decay = {n for g in groups if g["decay"] for n in g["param_names"]}
    assert "bert.embeddings.LayerNorm.weight" in no_decay
    assert "bert.encoder.layer.1.attention.output.LayerNorm.weight" in no_decay
    assert "bert.encoder.layer.1.attention.self.query.bias" in no_decay
    assert "classifier.bias" in no_decay
    assert "bert.encoder.layer.1.attention.self.query.weight" in decay
    assert "bert.embeddings.word_embeddings.weight" in decay
    params = dict(model.named_parameters())
    assert all(params[n].ndim >= 2 for n in decay)


def test_distilbert_norm_names(make_model):
    model = make_model("distilbert", num_layers=2)
    groups = build_param_groups(model, build_layer_map(model), lr=1e-3, layer_decay=0.9, weight_decay=0.1)
    no_decay = {n for g in groups if not g["decay"] for n in g["param_names"]}
    assert "distilbert.transformer.layer.0.sa_layer_norm.weight" in no_decay
    assert "distilbert.transformer.layer.0.output_layer_norm.weight" in no_decay


def test_explicit_layer_lrs(bert):
    model, lm = bert
    layer_lrs = [5e-4, 4e-4, 3e-4, 2e-4, 1e-4]  # depth 1..4, then embeddings
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.5, layer_lrs=layer_lrs)
    by_depth = {g["depth"]: g["lr"] for g in groups}
    assert by_depth == {0: 1e-3, 1: 5e-4, 2: 4e-4, 3: 3e-4, 4: 2e-4, 5: 1e-4}
    with pytest.raises(ValueError, match="expected 5"):
        build_param_groups(model, lm, lr=1e-3, layer_decay=0.5, layer_lrs=layer_lrs[:4])
    assert peak_lrs(lm, 1.0, 0.5)[5] == 0.5 ** 5


def test_frozen_params_skipped_and_no_empty_group(bert):
    model, lm = bert
    for name in lm.params_at(5) + lm.params_at(4):
        dict(model.named_parameters())[name].requires_grad_(False)
    # a depth with only decay-able params: freeze the biases/norms of layer_3 (depth 1)
    for name, p in model.named_parameters():
        if lm.depth[name] == 1 and p.ndim < 2:
            p.requires_grad_(False)
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    assert all(g["params"] for g in groups)
    keys = [(g["depth"], g["decay"]) for g in groups]
    assert (1, True) in keys and (1, False) not in keys
    assert all(g["depth"] not in (4, 5) for g in groups)
    # and torch accepts them as they are
    opt = torch.optim.AdamW(groups)
    assert len(opt.param_groups) == len(groups)


def test_describe_groups(bert):
    model, lm = bert
    rows = describe_groups(build_param_groups(model, lm, lr=1e-3, layer_decay=0.5, weight_decay=0.01))
    assert rows[0] == {"name": "head", "depth": 0, "decay": True, "num_tensors": 2,
                       "num_params": 32 * 32 + 3 * 32, "peak_lr": 1e-3, "weight_decay": 0.01}
    assert sum(r["num_params"] for r in rows) == sum(p.numel() for p in model.parameters())
