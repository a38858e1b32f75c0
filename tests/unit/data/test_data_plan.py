"""The driver's global plan (dedupe, split, overlap, balance) and applying it to a batch."""
import numpy as np
import pyarrow as pa

from domainft.data.dedupe import first_occurrence, overlap
from domainft.data.plan import EVAL, TRAIN, make_plan, select_rows
from domainft.data.readers import SCHEMA, key_of


def test_first_occurrence_keeps_first_by_hash_and_label():
    h = np.array([5, 7, 5, 5, 9], dtype=np.uint64)
    lab = np.array([0, 0, 0, 1, 0])
    assert first_occurrence(h, lab).tolist() == [True, True, False, True, True]
    assert first_occurrence(h).tolist() == [True, True, False, False, True]


def test_overlap():
    assert overlap(np.array([1, 2, 3], dtype=np.uint64), np.array([3, 4], dtype=np.uint64)).tolist() == [False, False, True]


def _plan(n_per_class=(40, 10), eval_rows=None, **kw):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    n = len(labels)
    src = np.zeros(n, dtype=np.int8)
    hashes = np.arange(1, n + 1, dtype=np.uint64)
    empty = np.zeros(n, dtype=bool)
    if eval_rows is not None:
        src[eval_rows] = EVAL
    args = dict(dedupe=True, has_eval_source=eval_rows is not None, eval_fraction=0.25, seed=42, max_ratio=2.0,
                balance="oversample")
    args.update(kw)
    keys = np.array([key_of(0, i + 1) for i in range(n)])
    return keys, labels, hashes, empty, src, args


def test_counts_add_up_with_duplicates_empty_and_balance():
    keys, labels, hashes, empty, src, args = _plan()
    hashes[5] = hashes[4]  # exact duplicate (same label)
    hashes[45] = hashes[44]
    empty[7] = True
    p = make_plan(keys, src, labels, empty, hashes, 2, **args)
    c = p.counts
    assert c["duplicates_removed"] == 2 and c["empty_removed"] == 1
    assert c["rows_kept"] == 50 - 3
    assert sum(c["train_before"]) + sum(c["eval"]) == c["rows_kept"]
    assert c["eval"] == [10, 2]  # stratified 0.25 of 39 and 9 (rounded)
    assert c["ratio_after"] <= 2.0 < c["ratio_before"]
    assert sum(c["train_after"]) == sum(c["train_before"]) + c["rows_added"]
    assert p.repeat[p.split == EVAL].tolist() == [1] * 12  # eval never rebalanced


def test_same_text_with_different_labels_never_straddles_the_split():
    keys, labels, hashes, empty, src, args = _plan((20, 20))
    hashes[20:] = hashes[:20]  # every class-1 text also occurs with label 0: not exact duplicates
    p = make_plan(keys, src, labels, empty, hashes, 2, **dict(args, max_ratio=100.0))
    assert p.counts["duplicates_removed"] == p.counts["eval_overlap_removed"] > 0
    pos = np.searchsorted(keys, p.keys)
    train_h, eval_h = set(hashes[pos[p.split == TRAIN]]), set(hashes[pos[p.split == EVAL]])
    assert not train_h & eval_h


def test_given_eval_source_removes_overlap_from_train():
    keys, labels, hashes, empty, src, args = _plan((20, 20), eval_rows=[38, 39])
    hashes[0] = hashes[38]  # a train text that is also in eval
    p = make_plan(keys, src, labels, empty, hashes, 2, **args)
    assert p.counts["eval_overlap_removed"] == 1 and p.counts["duplicates_removed"] == 1
    assert p.counts["eval"] == [0, 2]
    assert key_of(0, 1) not in set(p.keys.tolist())


def test_undersample_and_determinism():
    keys, labels, hashes, empty, src, args = _plan((60, 10), balance="undersample", max_ratio=1.0)
    a = make_plan(keys, src, labels, empty, hashes, 2, **args)
    b = make_plan(keys[::-1], src, labels[::-1], empty, hashes[::-1], 2, **args)  # input order does not matter
    np.testing.assert_array_equal(a.keys, b.keys)
    assert a.counts["train_after"] == [8, 8] and a.counts["rows_removed"] == 37


def test_select_rows_filters_repeats_and_marks_copies():
    table = pa.table({"key": [key_of(0, 1), key_of(0, 2), key_of(0, 3), key_of(1, 1)], "split": [0] * 4,
                      "text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"],
                      "source_id": ["f:1", "f:2", "f:3", "g:1"], "h": [1, 2, 3, 4], "empty": [False] * 4,
                      "reason": [None] * 4, "detail": [None] * 4, "raw": [None] * 4}, schema=SCHEMA)
    keys = np.array([key_of(0, 1), key_of(0, 3), key_of(1, 1)])
    split = np.array([TRAIN, TRAIN, EVAL], dtype=np.int8)
    out = select_rows(table, keys, split, np.array([1, 3, 1], dtype=np.int32), np.array([0, 0, 1], dtype=np.int32),
                      TRAIN)
    assert out.column("text").to_pylist() == ["a", "c", "c", "c"]
    assert out.column("aug_op").to_pylist() == ["", "", "oversample", "oversample"]
    assert out.column("source_id").to_pylist() == ["f:1", "f:3", "f:3", "f:3"]
    assert out.column("is_augmented").to_pylist() == [False] * 4
    assert out.schema.field("label").type == pa.int64()
    ev = select_rows(table, keys, split, np.ones(3, dtype=np.int32), np.array([0, 0, 1], dtype=np.int32), EVAL)
    assert ev.column("text").to_pylist() == ["d"] and ev.column("label").to_pylist() == [1]
