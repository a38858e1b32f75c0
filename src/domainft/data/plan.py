"""The driver's global decisions on small columns, and applying them to batches.

The driver sees only (key, source split, label id, empty flag, text hash) per row: 8+1+4+1+8 bytes,
so millions of rows fit. It decides dedupe, the stratified split, eval-overlap removal and
train balancing, and ships back a sorted key array that each batch is filtered against.
No Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from domainft.data.balance import balance_repeats, class_ratio
from domainft.data.dedupe import first_occurrence, overlap
from domainft.data.split import stratified_split

TRAIN, EVAL = 0, 1
OVERSAMPLE_OP = "oversample"  # aug_op of the extra copies that balancing adds (is_augmented stays False)
OUTPUT_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64()), ("source_id", pa.string()),
                           ("aug_op", pa.string()), ("is_augmented", pa.bool_())])


@dataclass
class Plan:
    keys: np.ndarray  # sorted int64 keys of the rows that are used
    split: np.ndarray  # int8 TRAIN / EVAL per key
    repeat: np.ndarray  # int32 copies in the output (train balancing; 1 for eval)
    label: np.ndarray  # int32 label id per key
    counts: dict = field(default_factory=dict)


def make_plan(keys, src, labels, empty, hashes, n_labels: int, *, dedupe: bool, has_eval_source: bool,
              eval_fraction: float, seed: int, max_ratio: float, balance: str) -> Plan:
    """Decide every row's fate. Inputs are per-row arrays of the non-rejected records (any order).

    Order of decisions: drop empty texts; dedupe exact (text, label) within each source; split
    (stratified, seeded) unless data.eval is given; drop train rows whose text is in eval (no
    leakage, counted as duplicates); balance the train split only.
    """
    order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
    keys, src = np.asarray(keys, dtype=np.int64)[order], np.asarray(src, dtype=np.int8)[order]
    labels, empty = np.asarray(labels, dtype=np.int32)[order], np.asarray(empty, dtype=bool)[order]
    hashes = np.asarray(hashes, dtype=np.uint64)[order]
    use = ~empty
    dup = 0
    if dedupe:
        for s in (TRAIN, EVAL):
            idx = np.flatnonzero(use & (src == s))
            first = first_occurrence(hashes[idx], labels[idx])
            use[idx[~first]] = False
            dup += int((~first).sum())
    split = src.copy()
    if not has_eval_source:
        idx = np.flatnonzero(use)
        split[idx[stratified_split(labels[idx], eval_fraction, seed)]] = EVAL
    train, ev = use & (split == TRAIN), use & (split == EVAL)
    leaked = train & overlap(hashes, hashes[ev])
    use &= ~leaked
    train &= ~leaked
    n_leaked = int(leaked.sum())
    repeat = np.ones(len(keys), dtype=np.int32)
    t_idx = np.flatnonzero(train)
    repeat[t_idx] = balance_repeats(labels[t_idx], n_labels, max_ratio, balance, seed)
    before = np.bincount(labels[train], minlength=n_labels)
    after = np.bincount(labels[t_idx], weights=repeat[t_idx], minlength=n_labels).astype(np.int64)
    keep = use & (repeat > 0)
    counts = {
        "empty_removed": int(empty.sum()), "duplicates_removed": dup + n_leaked, "eval_overlap_removed": n_leaked,
        "rows_kept": int(use.sum()), "train_before": before.tolist(), "train_after": after.tolist(),
        "eval": np.bincount(labels[ev], minlength=n_labels).tolist(),
        "ratio_before": class_ratio(before), "ratio_after": class_ratio(after),
        "rows_added": int(np.maximum(repeat[t_idx] - 1, 0).sum()), "rows_removed": int((repeat[t_idx] == 0).sum()),
    }
    return Plan(keys[keep], split[keep], repeat[keep], labels[keep], counts)


def select_rows(table: pa.Table, keys: np.ndarray, split: np.ndarray, repeat: np.ndarray, label: np.ndarray,
                want: int) -> pa.Table:
    """The rows of `table` (parsed records) that the plan puts in split `want`, each repeated as planned,
    as `OUTPUT_SCHEMA` columns. Extra copies get aug_op "oversample"."""
    if len(keys) == 0:
        return OUTPUT_SCHEMA.empty_table()
    k = table.column("key").to_numpy()
    pos = np.searchsorted(keys, k).clip(0, len(keys) - 1)
    rows = np.flatnonzero((keys[pos] == k) & (split[pos] == want))
    reps = repeat[pos[rows]]
    take = np.repeat(rows, reps)
    first = np.ones(len(take), dtype=bool)
    first[1:] = take[1:] != take[:-1]
    return pa.table({
        "text": table.column("text").take(take),
        "label": pa.array(label[pos[take]].astype(np.int64)),
        "source_id": table.column("source_id").take(take),
        "aug_op": pa.array(np.where(first, "", OVERSAMPLE_OP).tolist(), pa.string()),
        "is_augmented": pa.array(np.zeros(len(take), dtype=bool)),
    }, schema=OUTPUT_SCHEMA)
