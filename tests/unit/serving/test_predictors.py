"""Predictors and the serving options: the torch predictor equals the model run by hand, folders are
checked before anything starts, and `domainft serve` rejects bad options with one message (no Ray)."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from domainft.cli import main as cli_main
from domainft.config import ConfigError
from domainft.config.serve import validate_serve
from domainft.errors import UserError
from domainft.serving.predictors import check_model_dir, load_predictor, weights_sha256


@pytest.fixture(scope="module")
def predictor(tiny_classifier_dir):
    return load_predictor(tiny_classifier_dir, "torch", batch_size=3, threads=1)


def test_probabilities_equal_the_model_run_by_hand_in_input_order(predictor, tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["short", "a much longer text about markets and shares " * 3, "mid length text here", "x " * 400]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    with torch.no_grad():  # one text at a time: no padding at all
        by_hand = np.stack([torch.softmax(model(**tok(t, truncation=True, max_length=128, return_tensors="pt"))
                                          .logits[0], -1).numpy() for t in texts])
    np.testing.assert_allclose(predictor.predict_proba(texts), by_hand, atol=1e-5)
    assert predictor.predict_proba([]).shape == (0, 3)


def test_truncation_to_max_length(predictor, tiny_classifier_dir):
    assert predictor.max_length == 128  # the tiny model's position table (its tokenizer allows 512)
    assert len(predictor.encode(["word " * 1000])[0]) == 128
    short = load_predictor(tiny_classifier_dir, "torch", max_length=16)
    assert short.max_length == 16 and len(short.encode(["word " * 1000])[0]) == 16
    with pytest.raises(UserError, match="--max-length 129 exceeds the model.s 128 positions"):
        load_predictor(tiny_classifier_dir, "torch", max_length=129)


def _with_record(src, dest, **record):
    """A copy of the folder whose config.json holds the training record `domainft train` writes."""
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    config["domainft"] = {"label_names": [config["id2label"][str(i)] for i in range(len(config["id2label"]))],
                          **record}
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_the_recorded_training_length_and_side_are_the_default(predictor, tiny_classifier_dir, tmp_path, caplog):
    from transformers import AutoTokenizer

    from domainft.export.runtime import warn_longer_than_trained

    assert (predictor.max_length, predictor.truncation_side, predictor.trained_max_length) == (128, "right", None)
    d = _with_record(tiny_classifier_dir, tmp_path / "best", max_length=16, truncation_side="left")
    served = load_predictor(d, "torch", threads=1)
    assert (served.max_length, served.truncation_side, served.trained_max_length) == (16, "left", 16)
    text = " ".join(f"w{i}" for i in range(60))
    left, right = (AutoTokenizer.from_pretrained(d, truncation_side=side)(text, truncation=True, max_length=16)
                   ["input_ids"] for side in ("left", "right"))
    assert served.encode([text]) == [left] and left != right  # the end of the text is kept

    warn_longer_than_trained.cache_clear()
    with caplog.at_level("WARNING", logger="domainft.export"):
        assert load_predictor(d, "torch", max_length=12).max_length == 12  # an explicit length still wins
        assert not caplog.records
        longer = load_predictor(d, "torch", max_length=64)
    assert longer.max_length == 64 and len(longer.encode([text])[0]) == 64
    assert "the model was trained at max_length 16" in caplog.text

    bad = _with_record(tiny_classifier_dir, tmp_path / "bad", max_length="long")
    with pytest.raises(UserError, match="domainft.max_length must be a whole number"):
        check_model_dir(bad)  # before anything starts


def test_weights_hash_is_the_files_sha256(predictor, tiny_classifier_dir, tmp_path):
    weights = tiny_classifier_dir / "model.safetensors"
    assert predictor.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    a, b = tmp_path / "model-00001.safetensors", tmp_path / "model-00002.safetensors"
    a.write_bytes(b"one"), b.write_bytes(b"two")
    lines = "".join(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in (a, b))
    assert weights_sha256([b, a]) == hashlib.sha256(lines.encode()).hexdigest()


def test_folders_are_checked_before_anything_starts(tiny_classifier_dir, tmp_path):
    assert check_model_dir(tiny_classifier_dir) == ["business", "sport", "tech"]
    with pytest.raises(UserError, match="no such folder"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(UserError, match="config.json: not found"):
        check_model_dir(tmp_path)
    d = tmp_path / "m"
    shutil.copytree(tiny_classifier_dir, d)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "id2label"}))
    with pytest.raises(UserError, match="no id2label"):
        check_model_dir(d)
    (d / "config.json").write_text(json.dumps(config))
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(UserError, match="only non-safetensors weights"):
        check_model_dir(d)
    with pytest.raises(UserError, match="needs --backend onnx"):
        check_model_dir(tiny_classifier_dir, "torch", "int8")


def test_serve_options_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        validate_serve({"model_dir": "m", "max_batch_size": 0, "max_queud": 3, "backend": "tf"})
    text = str(e.value)
    assert "3 problem(s)" in text and "max_batch_size: Input should be greater than or equal to 1" in text
    assert "max_queud: unknown key (did you mean 'max_queued'?)" in text and "backend: Input should be" in text
    cfg = validate_serve({"model_dir": "m", "max_batch_size": 16})
    assert cfg.ongoing == 32 and cfg.max_queued == 256 and cfg.intra_op_threads == 1


def test_cli_bad_model_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope: no such folder" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["serve", str(tmp_path), "--batch-wait-ms", "-1"]) == 2
    assert "batch_wait_ms: Input should be greater than or equal to 0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tiny_classifier_dir, tmp_path_factory):
    """The tiny classifier through `domainft export` (fp32 + int8)."""
    from domainft.export.pipeline import run_export

    out = tmp_path_factory.mktemp("tiny_onnx")
    run_export(tiny_classifier_dir, out, quantize="int8", threads=1)
    return out


def test_onnx_predictor_is_the_export_runner(exported, predictor):
    from domainft.export.runtime import OnnxClassifier

    texts = ["short", "a much longer text about markets and shares " * 3, "x " * 400]
    for variant in ("fp32", "int8"):
        onnx = load_predictor(exported, "onnx", variant, threads=1)
        assert (onnx.backend, onnx.variant, onnx.labels, onnx.max_length) == ("onnx", variant, predictor.labels, 128)
        runner = OnnxClassifier(exported, variant, threads=1)
        np.testing.assert_array_equal(onnx.predict_proba(texts), runner.predict_proba(texts))
        graph = exported / ("model.onnx" if variant == "fp32" else "model.int8.onnx")
        assert onnx.weights_sha256 == hashlib.sha256(graph.read_bytes()).hexdigest()
    fp32 = load_predictor(exported, "onnx", "fp32", threads=1)
    np.testing.assert_allclose(fp32.predict_proba(texts), predictor.predict_proba(texts), atol=1e-4)


def test_onnx_predictor_takes_the_record_the_export_carried(tiny_classifier_dir, tmp_path):
    """A folder exported from a recorded best/ (its config.json carried along, `domainft export`), served."""
    from domainft.export.pipeline import run_export

    src = _with_record(tiny_classifier_dir, tmp_path / "best", max_length=20, truncation_side="right")
    out = tmp_path / "onnx"
    run_export(src, out, threads=1)
    onnx = load_predictor(out, "onnx", threads=1)
    assert (onnx.max_length, onnx.truncation_side, onnx.trained_max_length) == (20, "right", 20)
    torch_side = load_predictor(src, "torch", threads=1)
    texts = ["word " * 300, "short"]
    assert onnx.classifier.encode(texts) == torch_side.encode(texts) and len(torch_side.encode(texts)[0]) == 20
    np.testing.assert_allclose(onnx.predict_proba(texts), torch_side.predict_proba(texts), atol=1e-4)


def test_onnx_folders_are_checked(exported, tiny_classifier_dir, tmp_path):
    with pytest.raises(UserError, match="no 'onnx_export' block"):
        check_model_dir(tiny_classifier_dir, "onnx")
    d = tmp_path / "onnx"
    shutil.copytree(exported, d)
    (d / "model.int8.onnx").unlink()
    assert check_model_dir(d, "onnx", "fp32") == ["business", "sport", "tech"]
    with pytest.raises(UserError, match=r"model.int8.onnx: not found \(export with --quantize int8\)"):
        check_model_dir(d, "onnx", "int8")
