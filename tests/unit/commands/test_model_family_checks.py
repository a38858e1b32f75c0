"""A model domainft cannot train is a user error before any work: `validate` says so from config.json (no
torch), and `train` stops there too, before Ray starts or the data is prepared."""
import json
import subprocess
import sys

import pytest

from domainft.cli import main

FAMILIES = ("bert, roberta, xlm-roberta, electra, distilbert, deberta-v2, llama, mistral, mixtral, qwen2, qwen3, "
            "qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3, gemma, gemma2, gemma3_text, phi3")


@pytest.fixture
def gpt2_config(tmp_path):
    model = tmp_path / "tiny-gpt2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                   "n_embd": 64, "n_layer": 2}))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path}/out\ndata: {{train: {corpus}}}\nmodel: {{name_or_path: {model}}}\n")
    return cfg, model


def test_validate_names_the_architecture_and_the_supported_families_without_torch(gpt2_config):
    cfg, model = gpt2_config
    code = ("import sys; from domainft.cli import main; rc = main(['validate', sys.argv[1]]);"
            "print(rc, [m for m in ('torch', 'transformers', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "2 []", out.stdout + out.stderr
    assert (f"model.name_or_path: {model} is a 'gpt2' model (GPT2LMHeadModel); domainft fine-tunes the model "
            f"types {FAMILIES}") in out.stderr


def test_train_refuses_it_before_ray_or_prepare(gpt2_config, capsys):
    import ray

    cfg, _ = gpt2_config
    assert main(["train", str(cfg)]) == 2
    assert "is a 'gpt2' model" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (cfg.parent / "out" / "data").exists()


def test_a_folder_without_model_type_is_not_a_model_config(tmp_path, gpt2_config, capsys):
    cfg, model = gpt2_config
    (model / "config.json").write_text("{}")
    assert main(["validate", str(cfg)]) == 2
    assert "config.json has no model_type" in capsys.readouterr().err
