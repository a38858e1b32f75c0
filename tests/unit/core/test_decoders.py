"""Decoder LLM families (Llama, Mistral, Mixtral, Qwen2/3, their MoE variants, DeepSeek-V2/V3 with MLA, Gemma,
Phi-3) in the engine: the layer map, kinds for mixture-of-experts parameters, tied embeddings, the gradient
cut, LoRA targets, last-token pooling with either padding side, gradient checkpointing, the pad token, and
an exported LoRA adapter that peft's auto class loads. Tiny random models, plain PyTorch, no Ray."""
import json

import pytest
import torch
import transformers as T

from domainft.core import GradientStop, build_layer_map, build_param_groups
from domainft.core.peft import ALL_LINEAR, PeftSpec, apply_peft, peft_problems
from tiny_models import DECODER_FAMILIES, decoder_tokenizer, save_tiny_decoder

L = 3
MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"}


@pytest.fixture(params=DECODER_FAMILIES)
def decoder(request):
    return request.param


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_every_parameter_once_embeddings_deepest_norm_and_score_at_the_head(decoder, make_model):
    model = make_model(decoder, num_layers=L)
    lm = build_layer_map(model)
    assert list(lm.depth) == [n for n, _ in model.named_parameters()]
    assert lm.num_layers == L and lm.decoder and set(lm.depth.values()) == set(range(L + 2))
    assert lm.depth["model.embed_tokens.weight"] == L + 1 and lm.kind["model.embed_tokens.weight"] == "embedding"
    assert lm.depth["model.norm.weight"] == lm.depth["score.weight"] == 0
    for name, depth in lm.depth.items():
        if ".layers." in name:
            assert depth == L - int(name.split(".layers.")[1].split(".")[0]), name
    assert lm.block_module_names[L + 1] == "model.embed_tokens" and lm.block_module_names[1] == f"model.layers.{L - 1}"
    kinds = {lm.kind[n] for n in lm.depth if 1 <= lm.depth[n] <= L}
    assert {"attention", "norm"} <= kinds and kinds <= {"attention", "ffn", "norm", "experts", "shared_experts", "router"}
    assert ("experts" in kinds and "router" in kinds) == (decoder in MOE)


def test_moe_and_mla_parameters_have_their_own_kinds_at_their_layers_depth(make_model):
    lm = build_layer_map(make_model("deepseek_v3", num_layers=L))
    top = f"model.layers.{L - 1}."
    expected = {"mlp.experts.gate_up_proj": "experts", "mlp.experts.down_proj": "experts",
                "mlp.shared_experts.up_proj.weight": "shared_experts", "mlp.gate.weight": "router",
                "self_attn.q_a_proj.weight": "attention", "self_attn.q_b_proj.weight": "attention",
                "self_attn.kv_a_proj_with_mqa.weight": "attention", "self_attn.kv_b_proj.weight": "attention",
                "self_attn.q_a_layernorm.weight": "norm", "self_attn.kv_a_layernorm.weight": "norm"}
    for inner, kind in expected.items():
        assert (lm.kind[top + inner], lm.depth[top + inner]) == (kind, 1), inner
    assert lm.kind["model.layers.0.mlp.up_proj.weight"] == "ffn"  # first_k_dense_replace: layer 0 is dense
    qwen = build_layer_map(make_model("qwen2_moe", num_layers=L))
    assert qwen.kind[f"{top}mlp.shared_expert_gate.weight"] == "router"
    assert qwen.kind[f"{top}mlp.shared_expert.down_proj.weight"] == "shared_experts"


def test_tied_embeddings_are_one_tensor_at_the_embeddings_depth_with_one_lr():
    config = T.AutoConfig.for_model("llama", hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=64, vocab_size=100, num_hidden_layers=L, tie_word_embeddings=True)
    model = T.AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    lm = build_layer_map(model)
    assert lm.tied == {"lm_head.weight": "model.embed_tokens.weight"} and "lm_head.weight" not in lm.depth
    assert lm.depth["model.embed_tokens.weight"] == L + 1
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.5, head_lr_mult=10.0)
    holding = [g for g in groups if any(p is model.lm_head.weight for p in g["params"])]
    assert len(holding) == 1 and holding[0]["depth"] == L + 1 and holding[0]["lr"] == pytest.approx(1e-3 * 0.5 ** (L + 1))
    untied = build_layer_map(T.AutoModelForCausalLM.from_config(T.AutoConfig.for_model(
        "llama", hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100, num_hidden_layers=L)))
    assert untied.tied == {} and untied.depth["lm_head.weight"] == 0


@pytest.mark.parametrize("family", ["llama", "qwen2", "deepseek_v3", "qwen3_moe"])
def test_the_cut_leaves_exactly_the_frozen_depths_without_gradients(family, make_model, make_batch):
    model = make_model(family, num_layers=L)
    lm = build_layer_map(model)
    batch = make_batch()
    with GradientStop(model, lm) as gs:
        for lowest in (0, 2, L + 1):
            gs.set_lowest_trainable(lowest)
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for name, p in model.named_parameters():
                assert (p.grad is not None) == (lm.depth[name] <= lowest), (lowest, name)


def test_the_cut_holds_under_gradient_checkpointing_with_the_same_gradients(make_model, make_batch):
    batch = make_batch()
    grads = []
    for checkpointing in (False, True):
        model = make_model("deepseek_v3", num_layers=L)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm = build_layer_map(model)
        recomputed = {i: 0 for i in range(L)}
        for i, layer in enumerate(model.model.layers):  # inside the layer's forward, which is what is checkpointed
            layer.self_attn.register_forward_hook(lambda m, a, o, i=i: recomputed.__setitem__(i, recomputed[i] + 1))
        with GradientStop(model, lm) as gs:
            gs.set_lowest_trainable(1)  # head + top layer
            model(**batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        # the top layer ran twice under checkpointing (forward, then recomputed in backward); frozen ones once
        assert recomputed == {0: 1, 1: 1, 2: 2 if checkpointing else 1}
    plain, ckpt = grads
    for name, g in plain.items():
        assert (g is None) == (ckpt[name] is None) == (lm.depth[name] > 1), name
        if g is not None:
            assert torch.allclose(g, ckpt[name], atol=1e-6), name


@pytest.mark.parametrize("family,targets", [
    ("llama", {"q_proj", "k_proj", "v_proj", "o_proj"}),
    ("deepseek_v3", {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}),
    ("deepseek_v2", {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}),  # V2-Lite: no low-rank query
    ("phi3", {"qkv_proj", "o_proj"}),
])
def test_lora_defaults_to_the_attention_projections_the_family_has(family, targets, make_model, make_batch):
    plain = make_model(family, num_layers=L)
    assert peft_problems(plain, PeftSpec(method="lora")) == []
    model = apply_peft(plain, PeftSpec(method="lora", r=4))
    lm = build_layer_map(model)
    adapters = [n for n in _trainable(model) if ".lora_" in n]
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == targets
    assert all(lm.kind[n] == "attention" and 1 <= lm.depth[n] <= L for n in adapters)
    assert _trainable(model) - set(adapters) == {n for n in lm.depth if lm.depth[n] == 0}  # + the head
    model(**make_batch()).loss.backward()
    assert all(dict(model.named_parameters())[n].grad is not None for n in adapters if "lora_B" in n)


def test_all_linear_reaches_attention_mlp_and_routed_experts_but_not_the_router_or_head(make_model, make_batch):
    """On MoE model types peft maps MLP projection names to the routed experts (its transformers v5
    conversion), so there the shared experts and dense layers are not adapted: stated in docs/peft.md."""
    dense = apply_peft(make_model("llama", num_layers=L), PeftSpec(method="lora", target_modules=(ALL_LINEAR,)))
    lm = build_layer_map(dense)
    assert {lm.kind[n] for n in _trainable(dense) if ".lora_" in n} == {"attention", "ffn"}
    every = PeftSpec(method="lora", r=4, target_modules=(ALL_LINEAR,))
    assert peft_problems(make_model("deepseek_v3", num_layers=L), every) == [
        "peft.dropout: all-linear on this deepseek_v3 model adapts its routed experts, whose LoRA (peft's "
        "target_parameters) takes no dropout; set peft.dropout: 0"]
    assert peft_problems(make_model("llama", num_layers=L), every) == []  # no experts: dropout is fine
    model = apply_peft(make_model("deepseek_v3", num_layers=L), PeftSpec(method="lora", r=4, dropout=0.0,
                                                                        target_modules=(ALL_LINEAR,)))
    lm = build_layer_map(model)
    adapted = {lm.kind[n] for n in _trainable(model) if ".lora_" in n}
    assert adapted == {"attention", "experts"}
    assert not any(".lora_" in n and ("score" in n or "mlp.gate." in n) for n in lm.depth)
    model(**make_batch()).loss.backward()
    expert = [p for n, p in model.named_parameters() if ".lora_B" in n and lm.kind[n] == "experts"]
    assert expert and all(p.grad is not None for p in expert)
    assert peft_problems(make_model("llama"), PeftSpec(method="lora", target_modules=(ALL_LINEAR, "q_proj"))) == [
        "peft.target_modules: all-linear selects every linear layer by itself; give it alone ([all-linear]) or "
        "name modules"]


def test_selective_trains_the_router_without_the_experts(make_model):
    model = apply_peft(make_model("deepseek_v3", num_layers=L), PeftSpec(method="selective", trainable=("router",)))
    lm = build_layer_map(model)
    assert {lm.kind[n] for n in _trainable(model)} == {"router", "head"}


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_virtual_tokens_are_refused_for_decoders(method, make_model):
    problems = peft_problems(make_model("qwen2", num_layers=L), PeftSpec(method=method))
    assert len(problems) == 1 and problems[0].startswith(f"peft.method: {method} does not work with qwen2 models")


@pytest.mark.parametrize("family", ["llama", "deepseek_v3"])
def test_left_and_right_padding_pool_the_same_last_real_token(family, make_model):
    model = make_model(family, num_layers=L, pad_token_id=1).eval()
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    right = torch.tensor([r + [1] * (6 - len(r)) for r in rows])
    left = torch.tensor([[1] * (6 - len(r)) + r for r in rows])
    with torch.no_grad():
        logits = {side: model(input_ids=ids, attention_mask=(ids != 1).long()).logits
                  for side, ids in (("right", right), ("left", left))}
        alone = model(input_ids=torch.tensor([rows[1]])).logits[0]
    assert torch.allclose(logits["right"], logits["left"], atol=1e-5)
    assert torch.allclose(logits["right"][1], alone, atol=1e-5)  # padding changes nothing


def test_a_tokenizer_without_a_pad_token_pads_with_eos_and_the_model_pools_by_it(tmp_path):
    from domainft.core.model import build_model
    from domainft.data.tokenize import load_tokenizer

    folder = save_tiny_decoder(tmp_path / "m", "llama", L)
    assert json.loads((folder / "config.json").read_text()).get("pad_token_id") is None
    notes = []
    tok = load_tokenizer(str(folder), notes=notes)
    assert tok.pad_token == "<eos>" and notes == [
        f"the tokenizer of {folder} has no pad token: padding with its EOS token '<eos>' (id {tok.eos_token_id})"]
    assert build_model(str(folder), ["a", "b", "c"]).config.pad_token_id == tok.eos_token_id


def test_a_tokenizer_with_neither_pad_nor_eos_is_a_user_error(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from domainft.data.tokenize import load_tokenizer
    from domainft.errors import UserError

    inner = decoder_tokenizer().backend_tokenizer
    PreTrainedTokenizerFast(tokenizer_object=inner).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="has neither a pad token nor an EOS token"):
        load_tokenizer(str(tmp_path))


@pytest.mark.parametrize("family", ["deepseek_v3", "bert"])
def test_an_exported_lora_adapter_loads_with_peft_auto_class(family, tmp_path, minilm_path):
    """Before: the adapter was saved as FEATURE_EXTRACTION, and AutoPeftModelForSequenceClassification refused
    it ("Expected target PEFT class: PeftModelForFeatureExtraction")."""
    from peft import AutoPeftModelForSequenceClassification

    from domainft.core.export import export_peft
    from tiny_models import MINILM_VOCAB, save_tiny

    labels = ["a", "b", "c"]
    if family == "bert":
        base = save_tiny(tmp_path / "base", "bert", 2, tokenizer=minilm_path, vocab_size=MINILM_VOCAB)
    else:
        base = save_tiny_decoder(tmp_path / "base", family, 2)
    spec = PeftSpec(method="lora", r=4)
    from domainft.core.model import build_model

    trained = apply_peft(build_model(str(base), labels), spec)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained adapter and head: random, not the initial zeros
        for name, p in trained.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    weights = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    out = export_peft(weights, str(base), labels, spec, str(base), tmp_path / "best", tmp_path / "best_adapter")
    assert json.loads((tmp_path / "best_adapter" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    tokenizer = T.AutoTokenizer.from_pretrained(out["adapter"])
    # a padded batch: a decoder whose base config.json has no pad id (the run padded with EOS) needs it given
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(
        out["adapter"], num_labels=3, pad_token_id=tokenizer.pad_token_id).eval()
    readme = (tmp_path / "best_adapter" / "README.md").read_text()
    assert 'pad_token_id=tokenizer.pad_token_id' in readme and "AutoPeftModelForSequenceClassification" in readme
    snippet = {}  # the README's own recipe, run as a user would
    exec(readme.split("```python\n")[1].split("```")[0].replace("<this folder>", str(out["adapter"])), snippet)
    merged = T.AutoModelForSequenceClassification.from_pretrained(out["best"]).eval()
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, pad, pad]])
    mask = (torch.arange(5) < torch.tensor([[5], [3]])).long()
    with torch.no_grad():
        expected = trained.eval()(input_ids=ids, attention_mask=mask).logits
        for model in (loaded, snippet["model"]):
            assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)
        assert torch.allclose(merged(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4)


def test_a_decoder_classifier_folder_without_pad_id_loads_for_export_and_serving(tmp_path):
    """Before: `domainft export` of such a folder was an internal error ("Cannot handle batch sizes > 1 if no
    padding token is defined")."""
    from domainft.export.source import load_classifier

    clf = load_classifier(save_tiny_decoder(tmp_path / "m", "llama", L))
    assert clf.model.config.pad_token_id == clf.tokenizer.eos_token_id
    batch = clf.tokenizer(["the court ruled", "the bank said its profit rose"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert clf.model(**batch).logits.shape == (2, 3)


@pytest.mark.parametrize("family", ["llama", "deepseek_v3"])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_bases_train_evaluate_and_train_again(family, bits, tmp_path):
    """QLoRA (NF4) and LLM.int8 bases on CPU through a train / eval / train cycle, as every epoch does. Before:
    DeepSeek's MLA fed LLM.int8 a 4-D input in eval ("The size of tensor a (7) must match ..."), and after one
    eval forward bitsandbytes had repacked the 4-bit weights for its inference kernel, so no gradient reached
    the adapters below them any more (or the repack failed on widths not divisible by 32)."""
    from domainft.core.model import build_model

    folder = save_tiny_decoder(tmp_path / "m", family, L)
    model = apply_peft(build_model(str(folder), ["a", "b", "c"], **{f"load_in_{bits}bit": True}),
                       PeftSpec(method="lora", r=4, dropout=0.0))
    quantized = [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    assert quantized and all(not p.requires_grad for m in quantized for p in m.parameters(recurse=False))
    ids = torch.randint(3, 300, (2, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2])}
    bottom = [p for n, p in model.named_parameters() if ".layers.0." in n and "lora_B" in n]  # A: 0 grad at B = 0
    for phase in ("train", "eval", "train"):
        model.train(phase == "train")
        model.zero_grad(set_to_none=True)
        if phase == "eval":
            with torch.no_grad():
                assert model(**batch).logits.shape == (2, 3)
        else:
            model(**batch).loss.backward()
            assert bottom and all(p.grad is not None and p.grad.abs().sum() > 0 for p in bottom), phase
