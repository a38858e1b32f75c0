import pytest
import torch
import transformers as T
from torch import nn

from domainft.core.layers import SUPPORTED_MODEL_TYPES, UnsupportedArchitectureError, build_layer_map

L = 4

# A few parameters per family with the depth they must get (L = 4: head 0, layer.3 -> 1, layer.0 -> 4,
# embeddings 5).
SPOT_CHECKS = {
    "bert": {"classifier.weight": 0, "bert.pooler.dense.weight": 0, "bert.encoder.layer.3.output.dense.weight": 1,
             "bert.encoder.layer.0.attention.self.query.bias": 4, "bert.embeddings.word_embeddings.weight": 5,
             "bert.embeddings.LayerNorm.bias": 5},
    "roberta": {"classifier.out_proj.weight": 0, "classifier.dense.bias": 0,
                "roberta.encoder.layer.2.intermediate.dense.weight": 2, "roberta.embeddings.position_embeddings.weight": 5},
    "xlm-roberta": {"classifier.out_proj.bias": 0, "roberta.encoder.layer.1.output.LayerNorm.weight": 3,
                    "roberta.embeddings.word_embeddings.weight": 5},
    "electra": {"classifier.out_proj.weight": 0, "electra.encoder.layer.3.attention.self.key.weight": 1,
                "electra.embeddings_project.weight": 5, "electra.embeddings.word_embeddings.weight": 5},
    "distilbert": {"pre_classifier.weight": 0, "classifier.bias": 0, "distilbert.transformer.layer.3.ffn.lin1.weight": 1,
                   "distilbert.transformer.layer.0.sa_layer_norm.weight": 4, "distilbert.embeddings.word_embeddings.weight": 5},
    "deberta-v2": {"pooler.dense.weight": 0, "classifier.weight": 0, "deberta.encoder.layer.3.attention.self.query_proj.weight": 1,
                   "deberta.encoder.rel_embeddings.weight": 5, "deberta.encoder.LayerNorm.weight": 5,
                   "deberta.embeddings.word_embeddings.weight": 5},
    "deberta-v2-conv": {"deberta.encoder.conv.conv.weight": 4, "deberta.encoder.conv.LayerNorm.bias": 4,
                        "deberta.encoder.rel_embeddings.weight": 5, "deberta.encoder.layer.0.output.dense.weight": 4},
}


def test_every_family_maps_every_parameter(family, make_model):
    model = make_model(family, num_layers=L)
    lm = build_layer_map(model)
    names = [n for n, _ in model.named_parameters()]
    assert list(lm.depth) == names
    assert lm.num_layers == L and lm.num_depths == L + 2
    assert lm.family == model.config.model_type
    assert set(lm.depth.values()) == set(range(L + 2))  # every depth is populated
    for name, depth in SPOT_CHECKS[family].items():
        assert lm.depth[name] == depth, name
    modules = dict(model.named_modules())
    layers_path = "transformer.layer" if family == "distilbert" else "encoder.layer"
    for depth in range(1, L + 1):
        block = lm.block_module_names[depth]
        assert block.endswith(f"{layers_path}.{L - depth}")
        # every parameter of that encoder layer module is at this depth, and nothing else inside it
        block_params = {f"{block}.{n}" for n, _ in modules[block].named_parameters()}
        assert block_params and all(lm.depth[n] == depth for n in block_params)
    assert lm.block_module_names[L + 1].endswith("embeddings")
    assert set(lm.block_module_names) == set(range(1, L + 2))
    for names_ in lm.boundary_module_names.values():
        assert all(n in modules for n in names_)


def test_helpers(make_model):
    model = make_model("bert", num_layers=L)
    lm = build_layer_map(model)
    assert lm.params_at(0) == ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]
    assert all(n.startswith("bert.encoder.layer.3.") for n in lm.params_at(1))
    assert [lm.depth_label(d) for d in range(L + 2)] == ["head", "layer_3", "layer_2", "layer_1", "layer_0", "embeddings"]
    counts = lm.param_counts(model)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts[0] == 32 * 32 + 32 + 3 * 32 + 3
    assert counts[1] == counts[4]  # identical layers
    with pytest.raises(ValueError, match="out of range"):
        lm.depth_label(L + 2)


def test_minilm_real_checkpoint(minilm_model):
    lm = build_layer_map(minilm_model)
    assert (lm.family, lm.num_layers, lm.num_depths) == ("bert", 6, 8)
    assert lm.depth["classifier.weight"] == 0
    assert lm.depth["bert.pooler.dense.weight"] == 0
    assert lm.depth["bert.encoder.layer.5.output.dense.weight"] == 1
    assert lm.depth["bert.encoder.layer.0.attention.self.query.weight"] == 6
    assert lm.depth["bert.embeddings.word_embeddings.weight"] == 7
    assert lm.block_module_names[7] == "bert.embeddings" and lm.block_module_names[1] == "bert.encoder.layer.5"
    assert lm.depth_label(1) == "layer_5"
    counts = lm.param_counts(minilm_model)
    assert counts[7] == 30522 * 384 + 512 * 384 + 2 * 384 + 2 * 384
    assert sum(counts.values()) == sum(p.numel() for p in minilm_model.parameters())


def test_base_model_without_head(make_config):
    base = T.AutoModel.from_config(make_config("bert", num_layers=2))
    lm = build_layer_map(base)
    assert lm.block_module_names[3] == "embeddings"
    assert lm.depth["encoder.layer.1.output.dense.weight"] == 1
    assert lm.depth["pooler.dense.weight"] == 0


def test_unknown_architecture_is_named():
    model = T.AutoModelForSequenceClassification.from_config(
        T.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32, pad_token_id=0))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2") as err:
        build_layer_map(model)
    assert isinstance(err.value, ValueError)
    for supported in SUPPORTED_MODEL_TYPES:
        assert supported in str(err.value)


def test_unknown_parameter_raises(make_model):
    model = make_model("bert", num_layers=2)
    model.bert.encoder.register_parameter("mystery", nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match="bert.encoder.mystery"):
        build_layer_map(model)


def test_structure_mismatch_raises(make_model):
    model = make_model("bert", num_layers=2)
    model.bert.encoder.layer = nn.Sequential(*model.bert.encoder.layer)  # not a ModuleList any more
    with pytest.raises(UnsupportedArchitectureError, match="encoder.layer"):
        build_layer_map(model)
