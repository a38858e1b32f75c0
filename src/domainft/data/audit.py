"""The label audit's pure part: which rows are audited, the K folds, cleanlab on out-of-fold
probabilities, and the outputs (label_issues.csv, audit_report.json, the console table). No Ray:
`commands/audit.py` trains the folds.

Only original rows are audited (aug_op "" and not is_augmented): balancing copies, augmented rows
and replayed rows are not records a reviewer can fix. A fold's model never sees a held-out row nor
any copy or augmentation of it (they share its source_id).
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from domainft.data.label_fixes import FIX_COLUMN, ID_COLUMN, LINE_COLUMN, SOURCE_COLUMN, split_source_id
from domainft.data.replay import REPLAY_OP
from domainft.errors import UserError

ISSUE_COLUMNS = [ID_COLUMN, SOURCE_COLUMN, LINE_COLUMN, "text", "given_label", "suggested_label", "confidence",
                 "given_label_probability", "rank", FIX_COLUMN]
ROW = "audit_row"  # a held-out row's position among the audited rows


@dataclass(frozen=True)
class AuditLayout:
    """`<output_dir>/audit/`: label_issues.csv, audit_report.json, ray/ (the Tune experiment) and
    folds/<k>/ (train/ and heldout/ Parquet, the fold's Ray Train run, best/, oof.parquet)."""

    output_dir: str

    @property
    def root(self) -> str:
        return os.path.join(self.output_dir, "audit")

    @property
    def issues_csv(self) -> str:
        return os.path.join(self.root, "label_issues.csv")

    @property
    def report(self) -> str:
        return os.path.join(self.root, "audit_report.json")

    @property
    def folds(self) -> str:
        return os.path.join(self.root, "folds")

    def fold(self, k: int) -> str:
        return os.path.join(self.folds, str(k))


def original_mask(table: pa.Table) -> tuple[np.ndarray, dict]:
    """(True for the original rows of a prepared split, counts of the other rows by kind)."""
    op = table.column("aug_op").to_numpy(zero_copy_only=False).astype(str)
    aug = table.column("is_augmented").to_numpy(zero_copy_only=False).astype(bool)
    original = (op == "") & ~aug
    excluded = {"oversample": int(((op == "oversample") & ~aug).sum()), "replay": int(((op == REPLAY_OP) & ~aug).sum()),
                "augmented": int(aug.sum())}
    excluded["other"] = int((~original).sum()) - sum(excluded.values())
    return original, excluded


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every audited row: stratified by label, shuffled with `seed`."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if k < 2:
        raise UserError(f"--folds {k}: an audit needs at least 2 folds")
    if len(labels) < k:
        raise UserError(f"--folds {k}: only {len(labels)} original train rows to audit")
    fold = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():  # "the least populated class has only n members": such rows still get a fold
        warnings.simplefilter("ignore", UserWarning)
        try:
            splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
            for i, (_, held) in enumerate(splits):
                fold[held] = i
        except ValueError as e:
            raise UserError(f"--folds {k}: {e}") from None
    return fold


def fold_tables(table: pa.Table, original: np.ndarray, fold: np.ndarray, k: int) -> tuple[pa.Table, pa.Table]:
    """(train, held-out) of fold `k`: held-out = the audited rows of fold k (with their `audit_row`);
    train = every other row of the split, except copies and augmentations of held-out rows."""
    orig_idx = np.flatnonzero(original)
    held_idx = orig_idx[fold == k]
    held = table.take(pa.array(held_idx)).append_column(ROW, pa.array(np.flatnonzero(fold == k)))
    held_ids = pa.array(sorted(set(held.column("source_id").to_pylist())), pa.string())
    derived = pc.is_in(table.column("source_id"), value_set=held_ids)
    replay = pc.equal(table.column("aug_op"), REPLAY_OP)  # another run's rows: their source_ids are its own
    train = table.filter(pc.or_(pc.invert(derived), replay))
    return train, held


def find_issues(labels: np.ndarray, probs: np.ndarray) -> dict:
    """cleanlab's label issues in out-of-fold probabilities, most likely wrong first.

    Returns:
        {"ranked": row indices of the issues (lowest self-confidence first), "suggested": the most
         probable other label per row, "confidence": its probability, "given_probability": the
         probability of the given label (cleanlab's self-confidence)} (arrays over all rows).
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    # n_jobs=1: cleanlab's multiprocessing pool would fight the training workers for CPUs
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0
    suggested = others.argmax(axis=1)
    return {"ranked": np.asarray(ranked, dtype=np.int64), "suggested": suggested,
            "confidence": probs[np.arange(len(labels)), suggested], "given_probability": probs[np.arange(len(labels)), labels]}


def issue_rows(found: dict, labels: np.ndarray, source_ids: Sequence[str], texts: Sequence[str],
               names: Sequence[str], file_of: Optional[dict] = None) -> list[dict]:
    """The CSV rows (ISSUE_COLUMNS), rank 1 = most likely wrong; `file_of`: display name -> path or URI."""
    out = []
    for rank, i in enumerate(found["ranked"], 1):
        name, line = split_source_id(source_ids[i])
        out.append({ID_COLUMN: source_ids[i], SOURCE_COLUMN: (file_of or {}).get(name, name), LINE_COLUMN: line,
                    "text": texts[i], "given_label": names[labels[i]], "suggested_label": names[found["suggested"][i]],
                    "confidence": round(float(found["confidence"][i]), 4),
                    "given_label_probability": round(float(found["given_probability"][i]), 4),
                    "rank": rank, FIX_COLUMN: ""})
    return out


def write_issues_csv(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ISSUE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def build_audit_report(labels: np.ndarray, found: dict, names: Sequence[str], folds: int, excluded: dict,
                       **extra) -> dict:
    """audit_report.json: rows audited and excluded, issues per given label, given vs suggested among
    the issues; `extra` (out-of-fold scores, paths, seconds, concurrency) is added as given."""
    labels = np.asarray(labels, dtype=np.int64)
    ranked = found["ranked"]
    n = len(names)
    rows = np.bincount(labels, minlength=n)
    issues = np.bincount(labels[ranked], minlength=n)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels[ranked], found["suggested"][ranked]), 1)
    return {
        "rows_audited": int(len(labels)), "rows_excluded": excluded, "folds": folds,
        "issues_found": int(len(ranked)), "issue_rate": round(len(ranked) / max(1, len(labels)), 4),
        "rows_by_class": {names[c]: int(rows[c]) for c in range(n)},
        "issues_by_class": {names[c]: int(issues[c]) for c in range(n)},
        "confusion_given_vs_suggested": {names[g]: {names[s]: int(confusion[g, s]) for s in range(n) if confusion[g, s]}
                                         for g in range(n)},
        **extra,
    }


def format_audit(report: dict, rows: list[dict], top: int = 10) -> str:
    """The audit as a readable summary: issues per given label, the most likely wrong rows, what next."""
    oof = report.get("out_of_fold") or {}
    lines = [f"label audit: {report['rows_audited']} original train rows, {report['folds']} folds, "
             f"{report['issues_found']} likely label issues ({report['issue_rate']:.1%})"
             + (f"  ({report['seconds']:.0f} s)" if "seconds" in report else "")]
    ex = {k: v for k, v in report["rows_excluded"].items() if v}
    if ex:
        lines.append("  not audited: " + ", ".join(f"{v} {k}" for k, v in ex.items()) + " rows")
    if oof:
        lines.append(f"  out-of-fold accuracy {oof['accuracy']:.4f}, macro-F1 {oof['macro_f1']:.4f} (every row scored "
                     f"by the fold model that never saw it)")
    width = max([11] + [len(n) for n in report["rows_by_class"]])
    lines.append(f"  {'given label':<{width}} {'rows':>7} {'issues':>7}   suggested instead")
    for name, n in report["rows_by_class"].items():
        conf = sorted(report["confusion_given_vs_suggested"].get(name, {}).items(), key=lambda kv: -kv[1])
        lines.append(f"  {name:<{width}} {n:>7} {report['issues_by_class'][name]:>7}   "
                     + ", ".join(f"{s} {c}" for s, c in conf[:4]))
    if rows:
        lines.append(f"  {'rank':>5}  {'row_id':<28} {'given -> suggested':<30} {'conf':>5}  text")
        for r in rows[:top]:
            change = f"{r['given_label']} -> {r['suggested_label']}"
            text = r["text"][:50] + ("..." if len(r["text"]) > 50 else "")
            lines.append(f"  {r['rank']:>5}  {r[ID_COLUMN][-28:]:<28} {change[:30]:<30} {r['confidence']:>5.2f}  {text}")
        if len(rows) > top:
            lines.append(f"  ... {len(rows) - top} more")
    lines += [f"  issues: {report.get('label_issues_csv', '')}",
              "  next: review the rows, write a label (or `drop`) in the `fix` column of those that are wrong, set "
              "data.label_fixes to that file and run prepare or train again"]
    return "\n".join(lines)
