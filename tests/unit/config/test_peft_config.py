"""The peft section, optim.eight_bit and model.load_in_8bit: every bad value reported together, before
Ray; checks that need the model (target modules, virtual tokens, prefix support) from config.json."""
import glob
import os
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig

from domainft.config import ConfigError, apply_overrides, load_config, to_dict, validate_dict
from domainft.planning import check_model, format_plan, make_plan, model_problems
from problems import problems  # tests/unit/config/problems.py




def test_defaults_are_full_fine_tuning_and_round_trip(base):
    cfg = validate_dict(apply_overrides(base, ["peft.method=lora"]))
    assert (cfg.peft.r, cfg.peft.alpha, cfg.peft.target_modules, cfg.peft.export) == (8, 16.0, None, "auto")
    assert validate_dict(to_dict(cfg)) == cfg  # the Ray boundary round-trips with every key set
    assert validate_dict(base).peft.method == "none" and not validate_dict(base).optim.eight_bit


def test_bad_peft_values_are_reported_together(base):
    p = problems(apply_overrides(base, ["peft.method=adapters", "peft.r=0", "peft.dropout=1.5",
                                        "peft.trainable=[ffn, mlp]", "peft.num_virtual_tokens=0", "peft.rank=4"]))
    assert any(x.startswith("peft.method: Input should be 'none', 'lora', 'prompt_tuning'") for x in p)
    assert any(x.startswith("peft.r: Input should be greater than or equal to 1") for x in p)
    assert any(x.startswith("peft.dropout: Input should be less than 1") for x in p)
    assert any(x.startswith("peft.trainable.1: Input should be 'ffn', 'attention', 'bias', 'norm', 'experts', "
                            "'shared_experts' or 'router'") for x in p)
    assert any(x.startswith("peft.num_virtual_tokens: Input should be greater than or equal to 1") for x in p)
    assert any(x.startswith("peft.rank: unknown key") for x in p)
    assert len(p) == 6


@pytest.mark.parametrize("overrides,expected", [
    (["peft.r=16"], "peft.r: only used with peft.method lora, but peft.method is none (full fine-tuning)"),
    (["peft.method=selective", "peft.num_virtual_tokens=4"],
     "peft.num_virtual_tokens: only used with peft.method prompt_tuning or prefix_tuning, but peft.method is selective"),
    (["peft.method=prompt_tuning", "peft.export=merged"], "peft.export: merged is impossible for prompt_tuning"),
    (["peft.method=prefix_tuning", "peft.export=merged"], "peft.export: merged is impossible for prefix_tuning"),
    (["peft.method=selective", "peft.trainable=[]"], "peft.trainable: name at least one of"),
    (["peft.method=selective", "peft.trainable=[ffn, ffn]"], "peft.trainable: duplicate kinds"),
    (["peft.method=lora", "peft.target_modules=[]"], "peft.target_modules: give module names"),
    (["model.load_in_8bit=true"], "model.load_in_8bit: the int8 base weights are frozen, so an adapter must train"),
    (["model.load_in_8bit=true", "peft.method=lora", "deepspeed.zero_stage=3"],
     "model.load_in_8bit: ZeRO-3 does not partition LLM.int8 weights"),
    (["model.load_in_4bit=true"], "model.load_in_4bit: the 4-bit NF4 base weights are frozen, so an adapter must train"),
    (["model.load_in_4bit=true", "peft.method=lora", "deepspeed.zero_stage=3"],
     "model.load_in_4bit: ZeRO-3 does not partition 4-bit NF4 weights"),
    (["model.load_in_4bit=true", "model.load_in_8bit=true", "peft.method=lora"],
     "model.load_in_4bit: set one of model.load_in_8bit and model.load_in_4bit, not both"),
])
def test_cross_field_peft_problems(base, overrides, expected):
    p = problems(apply_overrides(base, overrides))
    assert any(x.startswith(expected) for x in p), p


def test_qlora_is_valid_on_a_cpu_cluster_with_this_bitsandbytes(base):
    """bitsandbytes 0.50 (pinned) quantizes to NF4 on CPU: the check that would refuse an older build passes."""
    cfg = validate_dict(apply_overrides(base, ["model.load_in_4bit=true", "peft.method=lora", "deepspeed.zero_stage=2",
                                               "scaling.use_gpu=false"]))
    assert cfg.model.load_in_4bit  # validate_dict raises ConfigError on any problem, the 4-bit probe's included


def test_eight_bit_and_int8_base_are_valid_on_a_cpu_cluster(base):
    cfg = validate_dict(apply_overrides(base, ["optim.eight_bit=true", "model.load_in_8bit=true", "peft.method=lora",
                                               "deepspeed.zero_stage=2", "scaling.use_gpu=false"]))
    assert cfg.optim.eight_bit and cfg.model.load_in_8bit


@pytest.fixture
def model_dirs(tmp_path, minilm_path):
    """A 2-layer BERT (max 64 positions) and a 2-layer DistilBERT folder: config.json is all the checks read."""
    out = {}
    for name, config in (("bert", BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)),
                         ("distilbert", DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                                         hidden_dim=64))):
        d = tmp_path / name
        BertForSequenceClassification(config).save_pretrained(d) if name == "bert" else config.save_pretrained(d)
        AutoTokenizer.from_pretrained(minilm_path).save_pretrained(d)
        out[name] = str(d)
    return out


def test_model_checks_list_the_modules_the_model_has(base, model_dirs):
    base["model"]["name_or_path"] = model_dirs["bert"]
    cfg = validate_dict(apply_overrides(base, ["data.max_length=100"]))
    assert model_problems(cfg) == [f"data.max_length: 100 exceeds the 64 token positions of {model_dirs['bert']} "
                                   "(max_position_embeddings in its config.json); use at most 64"]
    cfg = validate_dict(apply_overrides(base, ["peft.method=lora", "peft.target_modules=[q_proj, value]",
                                               "data.max_length=64"]))
    with pytest.raises(ConfigError) as e:
        check_model(cfg)
    assert e.value.problems == ["peft.target_modules: 'q_proj' is not a module of this bert model; its modules LoRA "
                                "can adapt are ['dense', 'key', 'position_embeddings', 'query', 'token_type_embeddings', "
                                "'value', 'word_embeddings']"]
    cfg = validate_dict(apply_overrides(base, ["peft.method=prompt_tuning", "peft.num_virtual_tokens=20",
                                               "data.max_length=60", "unfreeze.initial_layers=0"]))
    p = model_problems(cfg)
    assert len(p) == 2 and "exceed the 64 positions" in p[0]
    assert "never thaws in this run" in p[1]  # 1 depth per epoch from the head: the embeddings at epoch 4 of 3
    cfg = validate_dict(apply_overrides(base, ["peft.method=prompt_tuning", "unfreeze.every_epochs=0",
                                               "data.max_length=40"]))
    assert model_problems(cfg) == []
    base["model"]["name_or_path"] = model_dirs["distilbert"]
    cfg = validate_dict(apply_overrides(base, ["peft.method=prefix_tuning", "unfreeze.every_epochs=0",
                                               "data.max_length=40"]))
    assert model_problems(cfg) == ["peft.method: prefix_tuning does not work with distilbert models (their attention "
                                   "takes no past keys and values of another length); use prompt_tuning or lora"]


def test_validate_command_runs_the_model_checks(base, model_dirs, tmp_path, capsys):
    from domainft import cli

    base["model"]["name_or_path"] = model_dirs["bert"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(base, ["peft.method=lora", "peft.target_modules=[qkv]"])))
    assert cli.main(["validate", str(path)]) == 2
    assert "'qkv' is not a module of this bert model" in capsys.readouterr().err


def test_plan_shows_trainable_parameters_per_group_and_each_regime(base, model_dirs):
    base["model"]["name_or_path"] = model_dirs["bert"]
    cfg = validate_dict(apply_overrides(base, ["peft.method=lora", "peft.r=4", "unfreeze.every_epochs=0",
                                               "optim.eight_bit=true", "data.max_length=64"]))
    p = make_plan(cfg)
    by_name = {g["name"]: g for g in p["groups"]}
    lora_per_layer = 2 * 2 * 4 * 32
    assert by_name["layer_1"]["trainable_params"] == lora_per_layer and by_name["embeddings"]["trainable_params"] == 0
    assert by_name["head"]["trainable_params"] == by_name["head"]["params"]
    assert p["trainable_params"] == sum(g["trainable_params"] for g in p["groups"])
    methods = {m["method"]: m for m in p["methods"]}
    assert set(methods) == {"none", "lora", "prompt_tuning", "prefix_tuning", "selective"} and methods["lora"]["configured"]
    assert methods["lora"]["trainable_params"] == p["trainable_params"]
    assert methods["none"]["trainable_params"] == methods["none"]["total_params"]
    full = methods["none"]
    assert full["model_states_adamw8bit"] < full["model_states_adamw"]  # 8-bit moments: ~2 bytes instead of 8
    text = format_plan(p)
    assert "peft lora, 8-bit AdamW" in text and "never (nothing trainable at this depth)" in text
    assert "prefix_tuning" in text and "<- configured" in text


ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "configs" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_every_shipped_config_passes_the_model_checks(path, monkeypatch, tmp_path):
    """Against the model each names (`make resources` lays them out): target modules, virtual tokens, thawing.
    SmolLM2 comes from the optional `make smollm2`: where it is absent, a tiny Llama with tied embeddings (its
    family and shape of model) stands in."""
    from tiny_models import save_tiny_decoder

    monkeypatch.chdir(ROOT)
    cfg = load_config(path, check_paths=False)
    if cfg.model.name_or_path.endswith("models/smollm2-135m-instruct") and not os.path.isdir(cfg.model.name_or_path):
        stand_in = save_tiny_decoder(tmp_path / "smollm2", "llama", 4, tie_word_embeddings=True)
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name_or_path": str(stand_in)})})
    assert model_problems(cfg) == []
    if cfg.peft.method != "none":
        plan = make_plan(cfg)
        assert plan["trainable_params"] < 0.5 * plan["total_params"]


def test_peft_keys_change_the_run_identity_except_the_export_form(base):
    from domainft.config.identity import run_identity

    def identity(*overrides):
        return run_identity(validate_dict(apply_overrides(base, ["peft.method=lora", *overrides])), "fp")

    lora = identity()
    assert identity("peft.export=adapter") == lora  # changes what is written, not what is trained
    for override in ("peft.r=4", "peft.alpha=8", "peft.target_modules=[query]", "optim.eight_bit=true",
                     "model.load_in_8bit=true"):
        assert identity(override) != lora, override
    assert run_identity(validate_dict(base), "fp") != lora
