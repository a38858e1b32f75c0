import pytest
import torch

from domainft.core.layers import build_layer_map
from domainft.core.model import build_model, build_model_from_config, build_tokenizer, label_maps

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


def test_build_model_loads_pretrained_encoder_and_new_head(minilm_path, minilm_model):
    model = build_model(str(minilm_path), LABELS)
    assert model.config.num_labels == 5
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {name: i for i, name in enumerate(LABELS)}
    assert model.classifier.out_features == 5
    # the encoder holds the checkpoint's weights (the session fixture loaded the same files)
    ref = dict(minilm_model.named_parameters())
    for name in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.5.output.dense.weight"):
        assert torch.equal(dict(model.named_parameters())[name], ref[name])
    assert next(model.parameters()).dtype == torch.float32


def test_build_model_dtype(minilm_path):
    model = build_model(str(minilm_path), LABELS[:2], torch_dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_build_model_from_config_is_meta(minilm_path):
    model = build_model_from_config(str(minilm_path), LABELS)
    assert all(p.device.type == "meta" for p in model.parameters())
    lm = build_layer_map(model)  # planning works without weights
    assert lm.num_layers == 6 and sum(lm.param_counts(model).values()) == 22_713_216 + 384 * 5 + 5
    real = build_model_from_config(str(minilm_path), LABELS, meta=False)
    assert next(real.parameters()).device.type == "cpu"


def test_build_tokenizer(minilm_path):
    tok = build_tokenizer(str(minilm_path))
    assert tok.is_fast
    ids = tok(["a domain corpus"], truncation=True, max_length=16)["input_ids"][0]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_label_maps():
    assert label_maps(["x", "y"]) == ({0: "x", 1: "y"}, {"x": 0, "y": 1})
    with pytest.raises(ValueError, match="duplicates"):
        label_maps(["x", "x"])
    with pytest.raises(ValueError, match="empty"):
        label_maps([])
