"""data.replay without Ray: seeded, stratified samples of a previous train split's originals, never a
text the new data holds; labels mapped by name; where the previous run is."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainft.data.clean import text_hash
from domainft.data.continual import final_labels, resolve_label_sources
from domainft.data.replay import REPLAY_OP, previous_output_dir, previous_run, read_split, sample_replay, with_label_ids
from domainft.errors import UserError

OLD = ["business", "sport", "tech"]


@pytest.fixture
def previous(tmp_path):
    """A previous run's output_dir: prepared train (60 originals + copies) and eval splits."""
    out = tmp_path / "prev"
    rows = {"text": [f"old text {i}" for i in range(60)] + ["old text 0"] * 5,
            "label": [i % 3 for i in range(60)] + [0] * 5, "source_id": [f"a.jsonl:{i + 1}" for i in range(65)],
            "aug_op": [""] * 60 + ["oversample"] * 3 + ["eda:swap", REPLAY_OP],
            "is_augmented": [False] * 63 + [True, False]}
    for split, table in (("train", pa.table(rows)), ("eval", pa.table({k: v[:6] for k, v in rows.items()}))):
        (out / "data" / split).mkdir(parents=True)
        pq.write_table(table, out / "data" / split / "part-0.parquet")
    (out / "data" / "data_report.json").write_text(json.dumps({
        "label_names": OLD, "train_dir": str(out / "data" / "train"), "eval_dir": str(out / "data" / "eval"),
        "fingerprint": "abc"}))
    return out


def test_sample_is_stratified_seeded_and_skips_texts_of_the_new_data(previous):
    run = previous_run(str(previous))
    originals = read_split(run.train_dir, originals_only=True)
    assert originals.num_rows == 60
    new_hashes = np.array([text_hash("old text 3"), text_hash("unrelated")], dtype=np.uint64)
    rows, counts = sample_replay(originals, OLD, 0.5, seed=1, exclude_hashes=new_hashes)
    again, _ = sample_replay(originals, OLD, 0.5, seed=1, exclude_hashes=new_hashes)
    assert rows.equals(again)
    assert counts["by_class"] == {"business": 10, "sport": 10, "tech": 10} and counts["rows_added"] == 30
    assert counts["previous_originals"] == 60 and counts["skipped_in_new_data"] == 1
    assert "old text 3" not in rows.column("text").to_pylist()
    assert set(rows.column("aug_op").to_pylist()) == {REPLAY_OP}
    other, _ = sample_replay(originals, OLD, 0.5, seed=2, exclude_hashes=new_hashes)
    assert other.column("text").to_pylist() != rows.column("text").to_pylist()
    table = with_label_ids(rows, ["politics"] + OLD)  # ids follow the new label set, by name
    assert table.column("label").to_pylist() == [1 + OLD.index(n) for n in rows.column("previous_label").to_pylist()]
    with pytest.raises(UserError, match=r"labels \['business'\] that the new label set"):
        with_label_ids(rows, ["sport", "tech"])


def test_final_labels_put_the_model_labels_first_and_add_replayed_ones(previous, tmp_path):
    src = resolve_label_sources("bert-base-uncased", None, str(previous), 0.2, None, [])
    names = ["politics", "tech"]  # the new data's own labels
    arrays = {"keys": np.arange(4), "src": np.zeros(4, np.int8), "labels": np.array([0, 1, 1, 0], np.int32),
              "empty": np.zeros(4, bool), "hashes": np.arange(4, dtype=np.uint64)}
    final, arrays2, extras = final_labels(src, names, arrays, {}, seed=0)
    assert final == ["business", "politics", "sport", "tech"]  # no continued model: inferred (sorted), with replay's
    assert arrays2["labels"].tolist() == [1, 3, 3, 1]
    assert extras["replay"]["rows_added"] == 12 and extras["replay_table"].num_rows == 12
    with pytest.raises(UserError, match="data.labels lacks"):
        resolve_label_sources("bert-base-uncased", ["politics", "tech"], str(previous), 0.2, None, [])
    with pytest.raises(UserError, match="holds no readable prepared data"):
        previous_run(str(tmp_path / "nothing"))


def test_the_previous_run_is_replay_from_else_the_parent_of_a_domainft_best(previous, tmp_path):
    assert previous_output_dir(str(previous), "models/minilm") == str(previous)
    best = previous / "best"
    best.mkdir()
    (best / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}, "domainft": {"label_names": ["a", "b"]}}))
    assert previous_output_dir(None, str(best)) == str(previous)
    assert previous_output_dir(None, str(best), output_dir=str(previous)) is None  # this run itself
    plain = tmp_path / "plain" / "best"
    plain.mkdir(parents=True)
    (plain / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    assert previous_output_dir(None, str(plain)) is None
