"""Model folders and check data a user can fix: one UserError naming the file."""
import json
import shutil

import pytest
import transformers as T

from domainft.errors import UserError
from domainft.export.checkdata import load_check_data
from domainft.export.pipeline import run_export
from domainft.export.source import load_classifier


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_classifier(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match=r"m/config\.json: not found"):
        load_classifier(tmp_path / "m")


def test_config_not_json(tiny_bert_dir, tmp_path):
    d = _copy(tiny_bert_dir, tmp_path / "m")
    (d / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json: not valid JSON"):
        load_classifier(d)


def test_base_model_without_head(tmp_path, minilm_path):
    """A base encoder (e.g. the pretrained MiniLM: architectures BertModel, no id2label) is no classifier."""
    with pytest.raises(UserError, match=r"config\.json: not a sequence-classification model.*BertModel"):
        load_classifier(minilm_path)
    T.BertModel(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(tmp_path / "base")
    with pytest.raises(UserError, match="not a sequence-classification model"):
        load_classifier(tmp_path / "base")


def test_classifier_config_without_labels(tiny_bert_dir, tmp_path):
    d = _copy(tiny_bert_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    del config["id2label"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config\.json: no id2label"):
        load_classifier(d)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(tiny_bert_dir, tmp_path, damage):
    d = _copy(tiny_bert_dir, tmp_path / "m")
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(UserError, match=r"model\.safetensors: not a valid safetensors file"):
        load_classifier(d)


def test_pickle_weights_are_refused(tiny_bert_dir, tmp_path):
    d = _copy(tiny_bert_dir, tmp_path / "m")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pytorch_model\.bin: only non-safetensors weights"):
        load_classifier(d)


def test_weights_of_another_architecture(tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    d = _copy(tiny_bert_dir, tmp_path / "m")
    shutil.copy(tiny_distilbert_dir / "model.safetensors", d / "model.safetensors")
    with pytest.raises(UserError, match=r"model\.safetensors: .*config\.json"):
        load_classifier(d)


def test_unknown_check_label_names_file_and_line(tmp_path):
    path = tmp_path / "check.jsonl"
    path.write_text('{"text": "fine", "label": "pos"}\n{"text": "odd", "label": "meh"}\n')
    with pytest.raises(UserError, match=r"check\.jsonl, line 2: label 'meh' is not one of the model's labels"):
        load_check_data(str(path), ["neg", "neu", "pos"])


def test_prepared_split_is_read_by_label_id(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data" / "eval").mkdir(parents=True)
    pq.write_table(pa.table({"input_ids": pa.array([[101, 102], [101, 102]], pa.list_(pa.int32())),
                             "label": pa.array([2, 0], pa.int64()), "text": ["good", "bad"]}),
                   tmp_path / "data" / "eval" / "part-0.parquet")
    data = load_check_data(str(tmp_path / "data" / "eval"), ["neg", "neu", "pos"])
    assert data.texts == ["good", "bad"] and data.labels.tolist() == [2, 0]
    (tmp_path / "data" / "label_map.json").write_text(json.dumps({"label_names": ["a", "b", "c"]}))
    with pytest.raises(UserError, match=r"label_map\.json: label names \['a', 'b', 'c'\] differ"):
        load_check_data(str(tmp_path / "data" / "eval"), ["neg", "neu", "pos"])


def test_bad_options(tiny_bert_dir, tmp_path):
    with pytest.raises(UserError, match="exceeds the model's 128 positions"):
        run_export(tiny_bert_dir, tmp_path / "o", max_length=4096)
    with pytest.raises(UserError, match="OUT_DIR must differ"):
        run_export(tiny_bert_dir, tiny_bert_dir)
