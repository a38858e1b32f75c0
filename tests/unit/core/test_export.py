import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from domainft.core.export import export_hf

LABELS = ["neg", "neu", "pos"]


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory, make_config):
    """A tiny BERT 'checkpoint' on disk: its config is the architecture export_hf rebuilds."""
    path = tmp_path_factory.mktemp("tiny_src")
    make_config("bert", num_layers=2).save_pretrained(path)
    return path


def _trained_state(make_model):
    model = make_model("bert", num_layers=2, seed=1)
    with torch.no_grad():  # make the head distinct from any fresh initialisation
        model.classifier.weight.add_(0.5)
    return model


def test_export_roundtrip(tmp_path, source_dir, minilm_path, make_model):
    model = _trained_state(make_model).eval()
    out = export_hf(model.state_dict(), str(source_dir), LABELS, str(minilm_path), tmp_path / "best")
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert config["label2id"] == {"neg": 0, "neu": 1, "pos": 2}

    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    ids = torch.randint(3, 100, (4, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert AutoTokenizer.from_pretrained(out).is_fast


def test_export_accepts_module_prefix(tmp_path, source_dir, minilm_path, make_model):
    model = _trained_state(make_model).eval()
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    out = export_hf(wrapped, str(source_dir), LABELS, str(minilm_path), tmp_path / "best")
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)


def test_export_is_strict(tmp_path, source_dir, minilm_path, make_model):
    state = _trained_state(make_model).state_dict()
    missing = {k: v for k, v in state.items() if k != "classifier.weight"}
    with pytest.raises(ValueError, match="classifier.weight"):
        export_hf(missing, str(source_dir), LABELS, str(minilm_path), tmp_path / "a")
    with pytest.raises(ValueError, match="extra.weight"):
        export_hf({**state, "extra.weight": torch.zeros(1)}, str(source_dir), LABELS, str(minilm_path), tmp_path / "b")


def test_export_keeps_fp32_when_source_config_is_bf16(tmp_path, make_config, minilm_path, make_model):
    src = tmp_path / "bf16_src"
    config = make_config("bert", num_layers=2)
    config.dtype = torch.bfloat16
    config.save_pretrained(src)
    model = _trained_state(make_model)
    out = export_hf(model.state_dict(), str(src), LABELS, str(minilm_path), tmp_path / "best")
    loaded = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    assert torch.equal(loaded.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)
