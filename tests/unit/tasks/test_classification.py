"""The classification task behind the seam: what it trains on, its eval sums across ranks, what serves it."""
import json
import typing

import pyarrow as pa
import pytest
import torch

from domainft.config.schema import Config
from domainft.core.loop import evaluate
from domainft.errors import UserError
from domainft.tasks import get_task, task_names, task_of_model_dir
from domainft.tasks.classification import ClassificationEval


def test_the_config_offers_exactly_the_tasks_there_are():
    assert typing.get_args(Config.model_fields["task"].annotation) == task_names() == ("classification", "sft")
    assert Config.model_fields["task"].default == "classification"


def test_a_record_becomes_token_ids_and_a_label_and_a_batch_is_padded():
    task = get_task("classification")
    records = pa.table({"text": ["a b", "c"], "label": [1, 0], "source_id": ["s:1", "s:2"], "aug_op": ["", ""],
                        "is_augmented": [False, False]})
    examples = task.examples(lambda texts: [[101] + [len(t)] * len(t.split()) + [102] for t in texts], records)
    assert examples.column("input_ids").to_pylist() == [[101, 3, 3, 102], [101, 1, 102]]
    assert set(task.example_columns) <= set(examples.column_names)
    batch = task.collate({"input_ids": examples.column("input_ids").to_pylist(),
                          "label": examples.column("label").to_numpy()}, pad_id=0)
    assert batch["labels"].tolist() == [1, 0] and batch["attention_mask"][1].tolist()[:4] == [1, 1, 1, 0]


class _Out:
    def __init__(self, logits, loss):
        self.logits, self.loss = logits, loss


class _Engine:
    """Logits that predict class 0 for every row, and a fixed mean loss."""

    def __call__(self, **batch):
        n = batch["input_ids"].shape[0]
        return _Out(torch.tensor([[2.0, 0.0, 0.0]]).repeat(n, 1), torch.tensor(0.5))


def test_eval_sums_a_confusion_matrix_and_the_loss_of_every_row():
    labels = torch.tensor([0, 1, 2, 0, 0])
    batches = [{"input_ids": torch.zeros((3, 4), dtype=torch.long), "labels": labels[:3]},
               {"input_ids": torch.zeros((2, 4), dtype=torch.long), "labels": labels[3:]}]
    ev = evaluate(_Engine(), batches, ClassificationEval(3, torch.device("cpu")), torch.device("cpu"))
    cm, loss, rows = ev.result()
    assert cm.tolist() == [[3, 0, 0], [1, 0, 0], [1, 0, 0]] and loss == 0.5 and rows == 5
    assert [t.data_ptr() for t in ev.sums()] == [ev.cm.data_ptr(), ev.stats.data_ptr()]  # what is all-reduced


def test_the_task_of_a_model_folder_comes_from_its_architecture(tmp_path, tiny_classifier_dir):
    assert task_of_model_dir(tiny_classifier_dir).name == "classification"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert task_of_model_dir(tmp_path).name == "classification"  # none matches: the default, whose checks explain
    assert task_of_model_dir(tmp_path / "missing").name == "classification"
    from domainft.config.serve import ServeConfig

    clf = get_task("classification")
    assert clf.check_model_dir(ServeConfig(model_dir=str(tiny_classifier_dir))) == ["business", "sport", "tech"]
    for options, words in (({"backend": "transformers"}, "serves causal LMs"),
                           ({"adapters": {"a": "x"}, "max_tokens": 9}, "adapters, max_tokens apply to causal LMs")):
        with pytest.raises(UserError, match=words):
            clf.check_model_dir(ServeConfig(model_dir=str(tiny_classifier_dir), **options))
