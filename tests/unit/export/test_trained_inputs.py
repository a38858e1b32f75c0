"""`domainft export` and the ONNX runner cut texts as training did: a best/ folder's config.json records the
run's data.max_length and truncation side (core/export.py), the export defaults to them and carries the record
into OUT_DIR, and OnnxClassifier truncates there unless told otherwise."""
from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer

from domainft.errors import UserError
from domainft.export.pipeline import resolve_max_length, run_export
from domainft.export.runtime import OnnxClassifier, warn_longer_than_trained
from domainft.export.source import load_classifier

LONG = " ".join(f"w{i}" for i in range(200))


def _record(folder, **record):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["domainft"] = {"label_names": [config["id2label"][str(i)] for i in range(len(config["id2label"]))],
                          **record}
    path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def recorded(tiny_bert_dir, tmp_path_factory):
    """tiny_bert_dir (128 positions, a tokenizer that says 512) as `domainft train` writes it at max_length 24."""
    d = tmp_path_factory.mktemp("recorded") / "best"
    shutil.copytree(tiny_bert_dir, d)
    return _record(d, max_length=24, truncation_side="right")


@pytest.fixture(scope="module")
def exported(recorded, tmp_path_factory):
    out = tmp_path_factory.mktemp("recorded_onnx")
    return out, run_export(recorded, out, threads=1)


def test_export_defaults_to_the_training_length(recorded, tiny_bert_dir, caplog):
    assert resolve_max_length(load_classifier(tiny_bert_dir), None) == 128  # no record: the model's limit, as before
    clf = load_classifier(recorded)
    warn_longer_than_trained.cache_clear()
    with caplog.at_level("WARNING", logger="domainft.export"):
        assert resolve_max_length(clf, None) == 24
        assert resolve_max_length(clf, 16) == 16
        assert not caplog.records
        assert resolve_max_length(clf, 100) == 100  # explicit wins, with a warning
    assert "max_length 100: the model was trained at max_length 24" in caplog.text


def test_the_export_folder_carries_the_record(exported, recorded):
    out, report = exported
    config = json.loads((out / "config.json").read_text())
    assert config["domainft"] == json.loads((recorded / "config.json").read_text())["domainft"]
    assert config["onnx_export"]["max_length"] == 24
    assert report["max_length"] == 24 and report["trained_max_length"] == 24 and report["passed"], report["failures"]
    clf = OnnxClassifier(out, threads=1)
    assert (clf.max_length, clf.truncation_side, clf.trained.max_length) == (24, "right", 24)
    right = AutoTokenizer.from_pretrained(recorded)(LONG, truncation=True, max_length=24)["input_ids"]
    assert clf.encode([LONG]) == [right]


def test_onnx_runner_defaults_to_the_training_length_within_the_export(exported, tmp_path, caplog):
    """Exported longer than it was trained (--max-length past data.max_length): the runner still cuts at the
    training length unless asked, and then warns; a recorded left side keeps the end of a text."""
    out, _ = exported
    d = tmp_path / "onnx"
    shutil.copytree(out, d)
    config = json.loads((d / "config.json").read_text())
    config["onnx_export"]["max_length"] = 64  # what `domainft export --max-length 64` writes (dynamic axes)
    config["domainft"]["truncation_side"] = "left"
    (d / "config.json").write_text(json.dumps(config))
    warn_longer_than_trained.cache_clear()
    with caplog.at_level("WARNING", logger="domainft.export"):
        clf = OnnxClassifier(d, threads=1)
        assert not caplog.records
        assert OnnxClassifier(d, max_length=48, threads=1).max_length == 48
    assert "max_length 48: the model was trained at max_length 24" in caplog.text
    left = AutoTokenizer.from_pretrained(d, truncation_side="left")(LONG, truncation=True, max_length=24)["input_ids"]
    assert (clf.max_length, clf.truncation_side) == (24, "left") and clf.encode([LONG]) == [left]
    with pytest.raises(UserError, match="max_length 65 exceeds the exported model's 64"):
        OnnxClassifier(d, max_length=65, threads=1)


@pytest.mark.parametrize("record,words", [({"max_length": 1}, "domainft.max_length must be a whole number"),
                                          ({"max_length": 24.0}, "domainft.max_length must be a whole number"),
                                          ({"truncation_side": "middle"}, "domainft.truncation_side must be one of")])
def test_an_edited_record_is_a_user_error_naming_the_file(tiny_bert_dir, tmp_path, record, words):
    d = tmp_path / "best"
    shutil.copytree(tiny_bert_dir, d)
    _record(d, **record)
    with pytest.raises(UserError, match=words) as e:
        run_export(d, tmp_path / "out")
    assert str(d / "config.json") in str(e.value)
