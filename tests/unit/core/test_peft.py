"""PEFT regimes on tiny models of every family: what trains, the depth of adapter parameters, the
gradient stop over adapters, model checks, and exports whose logits equal the trained model's."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from domainft.core import GradientStop, build_layer_map
from domainft.core.export import export_peft
from domainft.core.peft import PeftSpec, apply_peft, peft_problems

FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2"]
PREFIX_OK = {"bert", "roberta", "xlm-roberta", "electra"}


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_encoder_parameter_has_a_kind(family, make_model):
    lm = build_layer_map(make_model(family))
    for name, kind in lm.kind.items():
        depth = lm.depth[name]
        if depth == 0:
            assert kind == "head", name
        elif depth <= lm.num_layers:
            assert kind in ("attention", "ffn", "norm"), f"{name}: {kind}"
        else:
            assert kind in ("embedding", "norm"), f"{name}: {kind}"
    assert lm.kind[[n for n in lm.depth if lm.depth[n] == 1 and "norm" in n.lower()][0]] == "norm"


SELECTIVE = {  # family -> a parameter of the top layer per kind ("bias": an attention bias)
    "bert": {"ffn": "bert.encoder.layer.3.intermediate.dense.weight", "attention": "bert.encoder.layer.3.attention.self.key.weight",
             "norm": "bert.encoder.layer.3.output.LayerNorm.weight", "bias": "bert.encoder.layer.3.attention.self.query.bias"},
    "distilbert": {"ffn": "distilbert.transformer.layer.3.ffn.lin2.weight",
                   "attention": "distilbert.transformer.layer.3.attention.out_lin.weight",
                   "norm": "distilbert.transformer.layer.3.sa_layer_norm.weight",
                   "bias": "distilbert.transformer.layer.3.attention.q_lin.bias"},
    "deberta-v2": {"ffn": "deberta.encoder.layer.3.output.dense.weight",
                   "attention": "deberta.encoder.layer.3.attention.output.dense.weight",
                   "norm": "deberta.encoder.layer.3.attention.output.LayerNorm.weight",
                   "bias": "deberta.encoder.layer.3.attention.self.query_proj.bias"},
}


@pytest.mark.parametrize("family", sorted(SELECTIVE))
@pytest.mark.parametrize("kinds", [("ffn",), ("attention",), ("norm",), ("bias",), ("ffn", "bias")])
def test_selective_trains_only_the_named_kinds_and_the_head(family, kinds, make_model):
    model = apply_peft(make_model(family), PeftSpec(method="selective", trainable=kinds))
    lm = build_layer_map(model)
    on = _trainable(model)
    assert {n for n in lm.depth if lm.depth[n] == 0} <= on  # the head always trains
    for kind, name in SELECTIVE[family].items():
        assert (name in on) == (kind in kinds or (kind == "bias" and "attention" in kinds)), f"{kinds}: {name}"
    for name in on - {n for n in lm.depth if lm.depth[n] == 0}:
        assert lm.kind[name] in kinds or ("bias" in kinds and name.endswith(".bias")), name
    assert not any("word_embeddings" in n for n in on)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_default_targets_train_and_adapters_take_their_layer_depth(family, make_model, make_batch):
    plain = make_model(family)
    plain_map = build_layer_map(plain)
    model = apply_peft(plain, PeftSpec(method="lora", r=4))
    lm = build_layer_map(model)
    on = _trainable(model)
    adapters = [n for n in on if ".lora_" in n]
    assert adapters and all(lm.depth[n] == 0 for n in on - set(adapters))  # adapters + the head, nothing else
    targets = plain_map.lora_targets
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == set(targets)
    for name in adapters:  # the depth of the module adapted, e.g. layer.3 -> depth 1
        module = name.split(".lora_")[0][len(lm.model_path) + 1:]
        assert lm.depth[name] == plain_map.depth[module + ".weight"] and lm.kind[name] == "attention"
    assert model(**make_batch()).loss.requires_grad


def test_gradient_stop_cuts_adapters_below_the_lowest_trainable_layer(make_model, make_batch):
    model = apply_peft(make_model("bert"), PeftSpec(method="lora", r=4, dropout=0.0))
    lm = build_layer_map(model)
    stop = GradientStop(model, lm)
    stop.set_lowest_trainable(1)  # head + top layer
    model(**make_batch()).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad and ".lora_A" in name:
            assert (p.grad is not None) == (lm.depth[name] <= 1), name
    stop.remove()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_virtual_tokens_sit_at_the_embeddings_depth_and_train(family, method, make_model, make_batch):
    spec = PeftSpec(method=method, num_virtual_tokens=4)
    plain = make_model(family)
    problems = peft_problems(plain, spec)
    if method == "prefix_tuning" and family not in PREFIX_OK:
        assert problems and "prefix_tuning does not work with" in problems[0]
        return
    assert problems == []
    model = apply_peft(plain, spec)
    lm = build_layer_map(model)
    prompt = [n for n in lm.kind if lm.kind[n] == "prompt"]
    assert prompt == ["prompt_encoder.default.embedding.weight"]
    assert lm.depth[prompt[0]] == lm.embeddings_depth
    assert _trainable(model) == set(prompt) | {n for n in lm.depth if lm.depth[n] == 0}
    model(**make_batch()).loss.backward()
    grad = dict(model.named_parameters())[prompt[0]].grad
    assert grad is not None and grad.abs().sum() > 0


def test_model_problems_name_the_key_and_what_the_model_has(make_model):
    model = make_model("bert")
    p = peft_problems(model, PeftSpec(method="lora", target_modules=("q_proj", "LayerNorm", "value")))
    assert len(p) == 2
    assert p[0].startswith("peft.target_modules: 'q_proj' is not a module of this bert model") and "'query'" in p[0]
    assert "'LayerNorm' names ['LayerNorm'] modules, which LoRA cannot adapt" in p[1]
    p = peft_problems(model, PeftSpec(method="prompt_tuning", num_virtual_tokens=20), max_length=500)
    assert p == ["peft.num_virtual_tokens: data.max_length 500 + 20 virtual tokens exceed the 512 positions of this "
                 "model; lower one of them"]
    p = peft_problems(model, PeftSpec(method="prompt_tuning"), prompt_thaw_step=None, total_steps=30)
    assert p and "never thaws in this run" in p[0]
    assert peft_problems(model, PeftSpec(method="lora", target_modules=("attention.self.query",))) == []


@pytest.fixture(scope="module")
def saved_bert(tmp_path_factory, minilm_path):
    from tiny_models import MINILM_VOCAB, save_tiny

    d = save_tiny(tmp_path_factory.mktemp("bert"), "bert", 2, 3, tokenizer=minilm_path, vocab_size=MINILM_VOCAB,
                  max_position_embeddings=512)
    return str(d)


def _trained(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning"])
def test_export_loads_with_peft_and_merged_lora_loads_without(method, saved_bert, tmp_path):
    from peft import PeftModel

    from domainft.core import build_model

    labels = ["a", "b", "c"]
    spec = PeftSpec(method=method, num_virtual_tokens=4)
    model = apply_peft(build_model(saved_bert, labels), spec).eval()
    trained = _trained(model)
    out = export_peft(trained, saved_bert, labels, spec, saved_bert, tmp_path / "best", tmp_path / "best_adapter",
                      required=list(trained))
    ids = torch.randint(1000, 2000, (3, 9))
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        base = AutoModelForSequenceClassification.from_pretrained(saved_bert, num_labels=3)
        adapter = PeftModel.from_pretrained(base, str(tmp_path / "best_adapter")).eval()
        got = adapter(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.allclose(got, want, atol=1e-6)
    assert "PeftModel.from_pretrained" in (tmp_path / "best_adapter" / "README.md").read_text()
    adapter_weights = load_file(str(tmp_path / "best_adapter" / "adapter_model.safetensors"))
    assert any("classifier" in k for k in adapter_weights)  # the trained head travels with the adapter
    assert out["merged"] == (method == "lora")
    if method != "lora":
        assert (tmp_path / "best" / "adapter_config.json").is_file()
        assert "cannot be" in (tmp_path / "best" / "README.md").read_text()
        with pytest.raises(ValueError, match="cannot be merged"):
            export_peft(trained, saved_bert, labels, spec, saved_bert, tmp_path / "m", tmp_path / "a", merge=True)
        return
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "best")).eval()
    with torch.no_grad():
        plain = merged(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert (plain - got).abs().max() <= 1e-4
    assert json.loads((tmp_path / "best" / "config.json").read_text())["id2label"] == {"0": "a", "1": "b", "2": "c"}
    weights, pretrained = load_file(str(tmp_path / "best" / "model.safetensors")), load_file(saved_bert + "/model.safetensors")
    assert not any("lora" in k for k in weights) and set(weights) == set(pretrained)
    key = "bert.encoder.layer.1.attention.self.key.weight"  # not a LoRA target: bit-identical
    assert torch.equal(weights[key], pretrained[key])
    query = "bert.encoder.layer.1.attention.self.query.weight"  # a target: base + B @ A * alpha / r
    assert not torch.equal(weights[query], pretrained[query])


def test_export_rejects_weights_of_another_adapter(saved_bert, tmp_path):
    from domainft.core import build_model

    spec = PeftSpec(method="lora", r=4)
    trained = _trained(apply_peft(build_model(saved_bert, ["a", "b", "c"]), spec))
    with pytest.raises(ValueError, match="wrong shapes"):
        export_peft(trained, saved_bert, ["a", "b", "c"], PeftSpec(method="lora", r=8), saved_bert, tmp_path / "b",
                    tmp_path / "a")
