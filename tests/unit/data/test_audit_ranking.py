"""The audit's pure part without Ray: audited rows, folds that never leak a held-out row, cleanlab on
out-of-fold probabilities, the CSV (a valid fix file once reviewed) and the report."""
import csv

import numpy as np
import pyarrow as pa
import pytest

from domainft.data.audit import (ISSUE_COLUMNS, ROW, assign_folds, build_audit_report, find_issues, fold_tables,
                                 format_audit, issue_rows, original_mask, write_issues_csv)
from domainft.data.label_fixes import read_label_fixes
from domainft.data.sources import collect_sources
from domainft.errors import UserError

NAMES = ["business", "sport", "tech"]


def _split():
    """A prepared train split: 30 originals, a balancing copy, an augmentation and a replayed row."""
    sids = [f"news.jsonl:{i + 1}" for i in range(30)]
    labels = [i % 3 for i in range(30)]
    rows = {"source_id": sids + ["news.jsonl:1", "news.jsonl:2", "news.jsonl:3"],
            "label": labels + [0, 1, 2], "text": [f"t{i}" for i in range(33)],
            "aug_op": [""] * 30 + ["oversample", "eda:swap", "replay"],
            "is_augmented": [False] * 30 + [False, True, False]}
    return pa.table(rows)


def test_only_originals_are_audited():
    original, excluded = original_mask(_split())
    assert original.sum() == 30 and not original[30:].any()
    assert excluded == {"oversample": 1, "replay": 1, "augmented": 1, "other": 0}


def test_folds_are_stratified_seeded_and_never_leak_a_held_out_row():
    table = _split()
    original, _ = original_mask(table)
    labels = table.column("label").to_numpy()[original]
    fold = assign_folds(labels, 3, seed=1)
    assert np.array_equal(fold, assign_folds(labels, 3, seed=1))
    assert all(set(np.bincount(labels[fold == k], minlength=3).tolist()) <= {3, 4} for k in range(3))  # 10 per label
    for k in range(3):
        train, held = fold_tables(table, original, fold, k)
        held_ids = set(held.column("source_id").to_pylist())
        assert held.num_rows == 10 and sorted(held.column(ROW).to_pylist()) == np.flatnonzero(fold == k).tolist()
        for sid, op in zip(train.column("source_id").to_pylist(), train.column("aug_op").to_pylist()):
            assert sid not in held_ids or op == "replay"  # no copy nor augmentation of a held-out row
        assert train.num_rows + held.num_rows + sum(
            sid in held_ids and op in ("oversample", "eda:swap") for sid, op in
            zip(table.column("source_id").to_pylist(), table.column("aug_op").to_pylist())) == table.num_rows
    with pytest.raises(UserError, match="at least 2 folds"):
        assign_folds(labels, 1, 0)


def test_cleanlab_finds_planted_flips_and_the_csv_is_a_fix_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    true = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), true] = 0.9
    probs += rng.uniform(0, 0.03, probs.shape)
    given = true.copy()
    flips = rng.choice(n, 15, replace=False)
    given[flips] = (true[flips] + 1) % 3
    found = find_issues(given, probs)
    assert set(found["ranked"].tolist()) == set(flips.tolist())
    assert np.array_equal(found["suggested"][flips], true[flips])
    assert (found["given_probability"][found["ranked"]] <= 0.1).all()

    corpus = tmp_path / "news.jsonl"
    corpus.write_text("".join(f'{{"text": "t{i}", "label": "{NAMES[g]}"}}\n' for i, g in enumerate(given)))
    files = collect_sources(str(corpus), None, "auto")
    sids = [f"news.jsonl:{i + 1}" for i in range(n)]
    rows = issue_rows(found, given, sids, [f"t{i}" for i in range(n)], NAMES, {"news.jsonl": str(corpus)})
    assert [r["rank"] for r in rows] == list(range(1, 16))
    assert rows[0]["source"] == str(corpus) and rows[0]["line"] == rows[0]["row_id"].split(":")[1]
    path = tmp_path / "label_issues.csv"
    write_issues_csv(str(path), rows)
    with open(path, newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ISSUE_COLUMNS and all(r["fix"] == "" for r in written)
    assert read_label_fixes(str(path), files, NAMES).fixes == []  # nothing reviewed yet: nothing to apply
    # the reviewer accepts the suggestion of the top 3 rows and drops the 4th
    for r in written[:3]:
        r["fix"] = r["suggested_label"]
    written[3]["fix"] = "drop"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ISSUE_COLUMNS)
        w.writeheader()
        w.writerows(written)
    fixes = read_label_fixes(str(path), files, NAMES).fixes
    assert [(x.source_id, x.label) for x in fixes] == [(r["row_id"], r["suggested_label"]) for r in written[:3]] + [
        (written[3]["row_id"], None)]

    report = build_audit_report(given, found, NAMES, 5, {"oversample": 2, "replay": 0, "augmented": 0, "other": 0},
                                out_of_fold={"accuracy": 0.95, "macro_f1": 0.95}, label_issues_csv=str(path),
                                seconds=1.0)
    assert report["rows_audited"] == n and report["issues_found"] == 15
    assert sum(report["issues_by_class"].values()) == 15
    assert sum(sum(v.values()) for v in report["confusion_given_vs_suggested"].values()) == 15
    text = format_audit(report, rows)
    assert "15 likely label issues" in text and "not audited: 2 oversample rows" in text
    assert rows[0]["row_id"] in text
