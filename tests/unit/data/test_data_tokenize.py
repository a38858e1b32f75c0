"""Tokenization with the real MiniLM fast tokenizer: worker-side ids equal transformers' ids."""
import pyarrow as pa
import pytest

from domainft.data.tokenize import build_encoder, encoder_spec, ids_to_arrow, load_tokenizer, tokenize_table
from domainft.errors import UserError

TEXTS = ["hello world", "word " * 100, "", "内存有点小 ok", "Tom & Jerry's café"]


@pytest.fixture(scope="module")
def tok(minilm_path):
    return load_tokenizer(str(minilm_path))


def test_worker_encoder_matches_transformers(tok, minilm_path):
    spec = encoder_spec(tok, str(minilm_path))
    assert tok.is_fast and set(spec) == {"tokenizer_json"}
    expected = tok(TEXTS, truncation=True, max_length=16)["input_ids"]
    assert build_encoder(spec, 16)(TEXTS) == expected
    assert [len(x) for x in expected][:3] == [4, 16, 2]
    slow_path = build_encoder({"name_or_path": str(minilm_path), "revision": None, "trust_remote_code": False}, 16)
    assert slow_path(TEXTS) == expected


def test_table_columns_and_types(tok):
    t = pa.table({"text": ["a b", "c"], "label": pa.array([1, 0], pa.int64()), "source_id": ["f:1", "f:2"],
                  "aug_op": ["", ""], "is_augmented": [False, False]})
    out = tokenize_table(build_encoder(encoder_spec(tok, ""), 8), t)
    assert out.column_names == ["input_ids", "label", "text", "source_id", "aug_op", "is_augmented"]
    assert out.schema.field("input_ids").type == pa.list_(pa.int32())
    assert out.column("input_ids").to_pylist()[0][0] == tok.cls_token_id


def test_ids_to_arrow_handles_empty():
    assert ids_to_arrow([]).to_pylist() == [] and ids_to_arrow([[1, 2], []]).to_pylist() == [[1, 2], []]


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load a tokenizer"):
        load_tokenizer(str(tmp_path / "nope"))


def test_a_hub_name_that_cannot_be_loaded_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # offline (tests/conftest.py) with an empty cache
    with pytest.raises(UserError) as e:
        load_tokenizer("no-such-org/bert-typo")
    assert str(e.value).startswith("model.name_or_path: cannot load a tokenizer from 'no-such-org/bert-typo': ")
    assert str(e.value).endswith("HF_HUB_OFFLINE=1 is set: give a local model folder, or set HF_HUB_OFFLINE=0 to "
                                 "download") and "\n" not in str(e.value)
