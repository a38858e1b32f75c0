import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from domainft.core.export import export_hf

LABELS = ["neg", "neu", "pos"]


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory, make_model):
    """A tiny pretrained BERT on disk (safetensors): the model a run starts from."""
    path = tmp_path_factory.mktemp("tiny_src")
    make_model("bert", num_layers=2, seed=3).save_pretrained(path)
    return path


def _trained(make_model):
    model = make_model("bert", num_layers=2, seed=1)
    with torch.no_grad():  # make the head distinct from any fresh initialisation
        model.classifier.weight.add_(0.5)
    return model.eval()


def test_export_roundtrip(tmp_path, source_dir, minilm_path, make_model):
    model = _trained(make_model)
    trained = dict(model.named_parameters())
    out = export_hf(trained, str(source_dir), LABELS, str(minilm_path), tmp_path / "best", required=trained)
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


def test_untrained_parameters_are_the_pretrained_weights(tmp_path, source_dir, minilm_path, make_model):
    """A run that froze the embeddings and the bottom layer exports those exactly as pretrained."""
    model = _trained(make_model)
    trained = {n: p for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler",
                                                                           "bert.encoder.layer.1."))}
    out = export_hf(trained, str(source_dir), LABELS, str(minilm_path), tmp_path / "best", required=trained)
    pretrained, exported = load_file(source_dir / "model.safetensors"), load_file(out / "model.safetensors")
    for name, value in exported.items():
        expected = trained[name] if name in trained else pretrained[name]
        assert torch.equal(value, expected.detach()), name


def test_export_accepts_module_prefix(tmp_path, source_dir, minilm_path, make_model):
    model = _trained(make_model)
    wrapped = {f"module.{k}": v for k, v in model.named_parameters()}
    out = export_hf(wrapped, str(source_dir), LABELS, str(minilm_path), tmp_path / "best")
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)


def test_export_is_strict(tmp_path, source_dir, minilm_path, make_model):
    trained = dict(_trained(make_model).named_parameters())
    partial = {k: v for k, v in trained.items() if k != "classifier.weight"}
    with pytest.raises(ValueError, match="missing parameters \\['classifier.weight'\\]"):
        export_hf(partial, str(source_dir), LABELS, str(minilm_path), tmp_path / "a", required=trained)
    with pytest.raises(ValueError, match="extra.weight"):
        export_hf({**trained, "extra.weight": torch.zeros(1)}, str(source_dir), LABELS, str(minilm_path),
                  tmp_path / "b")
    with pytest.raises(ValueError, match="wrong shapes \\['classifier.bias'\\]"):
        export_hf({**trained, "classifier.bias": torch.zeros(7)}, str(source_dir), LABELS, str(minilm_path),
                  tmp_path / "c")


def test_export_keeps_fp32_when_the_source_is_bf16(tmp_path, minilm_path, make_model):
    src = tmp_path / "bf16_src"
    make_model("bert", num_layers=2, seed=3).to(torch.bfloat16).save_pretrained(src)
    model = _trained(make_model)
    trained = dict(model.named_parameters())
    out = export_hf(trained, str(src), LABELS, str(minilm_path), tmp_path / "best")
    loaded = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    assert torch.equal(loaded.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)


def test_pickled_weights_are_never_loaded(tmp_path, minilm_path, make_model):
    """A model folder with only pytorch_model.bin (a pickle) is refused: no code runs from it."""
    src = tmp_path / "pickled"
    model = make_model("bert", num_layers=2, seed=3)
    model.save_pretrained(src)
    (src / "model.safetensors").unlink()
    torch.save(model.state_dict(), src / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        export_hf(dict(model.named_parameters()), str(src), LABELS, str(minilm_path), tmp_path / "best")


def test_export_records_the_training_length_and_side(tmp_path, source_dir, minilm_path, make_model):
    """best/ says how training cut its texts (serving and `domainft export` default to it); its tokenizer still
    says 512, the pretrained limit, which is what a server used before."""
    trained = dict(_trained(make_model).named_parameters())
    out = export_hf(trained, str(source_dir), LABELS, str(minilm_path), tmp_path / "best", max_length=24)
    config = json.loads((out / "config.json").read_text())
    assert config["domainft"] == {"label_names": LABELS, "max_length": 24, "truncation_side": "right"}
    assert AutoTokenizer.from_pretrained(out).model_max_length == 512
    plain = export_hf(trained, str(source_dir), LABELS, str(minilm_path), tmp_path / "plain")  # no length given
    assert json.loads((plain / "config.json").read_text())["domainft"] == {"label_names": LABELS}


def test_recorded_side_is_the_side_prepare_cuts(tmp_path, minilm_path):
    """prepare's encoder rebuilds a fast tokenizer with `tokenizers` and cuts on the right, whatever the
    tokenizer's own truncation_side says: that is the side recorded."""
    from domainft.core.export import truncation_side
    from domainft.data.tokenize import build_encoder, encoder_spec

    tok = AutoTokenizer.from_pretrained(minilm_path, truncation_side="left")
    text = " ".join(f"w{i}" for i in range(40))
    right = AutoTokenizer.from_pretrained(minilm_path)(text, truncation=True, max_length=10)["input_ids"]
    assert build_encoder(encoder_spec(tok, str(minilm_path)), 10)([text]) == [right]
    assert truncation_side(tok) == "right"
