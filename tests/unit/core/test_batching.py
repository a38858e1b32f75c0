"""Dynamic padding (pad_batch): every input shape Ray Data and the tests hand it, one result."""
import numpy as np
import pytest

from domainft.core.batching import pad_batch


def _ragged(*rows):
    out = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        out[i] = np.asarray(r, dtype=np.int32)
    return out


@pytest.mark.parametrize("as_lists", [False, True])
def test_ragged_rows_are_padded_to_the_longest_rounded_up(as_lists):
    rows = _ragged([5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15, 16, 17])
    b = pad_batch({"input_ids": [list(r) for r in rows] if as_lists else rows, "label": np.array([0, 2, 1])},
                  pad_id=3)
    assert b["input_ids"].shape == (3, 16) and b["input_ids"].dtype == b["attention_mask"].dtype
    assert b["input_ids"][0].tolist() == [5, 6, 7] + [3] * 13
    assert b["input_ids"][1].tolist() == [8] + [3] * 15
    assert b["input_ids"][2, :9].tolist() == list(range(9, 18))
    assert b["attention_mask"].sum(1).tolist() == [3, 1, 9]
    assert b["attention_mask"][1].tolist() == [1] + [0] * 15
    assert b["labels"].tolist() == [0, 2, 1]


def test_equal_length_rows_as_one_2d_array():
    ids = np.arange(30, dtype=np.int32).reshape(3, 10)
    b = pad_batch({"input_ids": ids, "label": np.zeros(3, dtype=np.int64)}, pad_id=0, pad_to_multiple_of=8)
    assert b["input_ids"].shape == (3, 16)
    assert (b["input_ids"][:, :10].numpy() == ids).all() and (b["input_ids"][:, 10:] == 0).all()
    assert b["attention_mask"].sum().item() == 30
    exact = pad_batch({"input_ids": ids, "label": np.zeros(3)}, pad_to_multiple_of=1)
    assert exact["input_ids"].shape == (3, 10) and bool(exact["attention_mask"].all())


def test_labels_are_a_writable_copy():
    labels = np.array([1, 0])
    labels.setflags(write=False)  # Arrow hands read-only views
    b = pad_batch({"input_ids": _ragged([4], [5, 6]), "label": labels})
    b["labels"][0] = 7
    assert labels[0] == 1
