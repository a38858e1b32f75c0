"""What decides prepare's labels beyond the corpus: the classifier training continues from (its labels
keep their ids), `data.replay` (rows of a previous train split) and `data.label_fixes` (a reviewer's
corrections). Resolved and checked before Ray starts, applied on the driver's small columns. No Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from domainft.data.label_fixes import LabelFixes, apply_label_fixes, file_digest, read_label_fixes
from domainft.data.labels import build_label_names, continual_label_names, label_order_problem, model_label_names
from domainft.data.replay import PreviousRun, previous_run, read_split, sample_replay, with_label_ids
from domainft.data.sources import SourceFile
from domainft.errors import UserError


@dataclass
class LabelSources:
    previous: Optional[list[str]]  # labels of the domainft classifier training continues from
    replay: Optional[PreviousRun]  # data.replay.from (with fraction > 0)
    fraction: float
    fixes: Optional[LabelFixes]  # data.label_fixes
    explicit: Optional[list[str]]  # data.labels as parsed (None: inferred)

    def fingerprint(self) -> dict:
        return {"previous_labels": self.previous, "replay": self.replay.fingerprint if self.replay else None,
                "label_fixes": file_digest(self.fixes.path) if self.fixes else None}


def resolve_label_sources(model: str, labels: Optional[list[str]], replay_from: Optional[str], fraction: float,
                          label_fixes: Optional[str], files: Sequence[SourceFile]) -> LabelSources:
    """Read and check, before any data is read: the model's label map, the replay run, the fix file.

    Raises:
        UserError: data.labels that do not start with the model's labels; a replay run without
            prepared data, or with labels data.labels lacks; any problem of the fix file.
    """
    try:
        previous = model_label_names(model)
    except ValueError as e:
        raise UserError(f"model.name_or_path: {e}") from None
    explicit = build_label_names(labels, []) if labels is not None else None
    if previous and (problem := label_order_problem(previous, explicit)):
        raise UserError(f"{problem} (model.name_or_path {model} is a domainft classifier)")
    replay = previous_run(replay_from) if replay_from and fraction > 0 else None
    if replay and explicit is not None and (missing := [n for n in replay.label_names if n not in explicit]):
        raise UserError(f"data.replay.from: its train split has labels {missing} that data.labels lacks")
    known = continual_label_names(previous, explicit, []) if explicit is not None else None
    fixes = read_label_fixes(label_fixes, files, known) if label_fixes else None
    return LabelSources(previous, replay, fraction, fixes, explicit)


def final_labels(src: LabelSources, names: list[str], arrays: dict, fix_hits: dict[str, int], seed: int,
                 nfkc: bool = False, unescape_html: bool = False) -> tuple[list[str], dict, dict]:
    """The label set and the plan's per-row arrays after continuing, replay and fixes.

    Args:
        src: From `resolve_label_sources`.
        names, arrays: `Collector.arrays(src.explicit)`.
        fix_hits: `Collector.fix_hits`.
        seed, nfkc, unescape_html: train.seed and the cleaning options (for replayed texts).

    Returns:
        (label names: the model's first, then the data's and the replayed rows' others;
         arrays with label ids in that set, fixed rows relabelled or dropped;
         extras: "replay_table" (OUTPUT_SCHEMA rows, aug_op "replay") and "replay" counts when
         replaying, "fixes_applied" counts with a fix file, "continued_from" labels when continuing)
    """
    extras: dict = {}
    seen = list(names)
    if src.replay is not None:
        rows, counts = sample_replay(read_split(src.replay.train_dir, originals_only=True), src.replay.label_names,
                                     src.fraction, seed, arrays["hashes"], nfkc, unescape_html)
        seen += [n for n in rows.column("previous_label").unique().to_pylist() if n not in seen]
        extras["replay"] = {"from": src.replay.output_dir, **counts}
    final = continual_label_names(src.previous, src.explicit, seen)
    if final != names:
        lut = np.array([final.index(n) for n in names] or [0], dtype=np.int32)
        arrays = {**arrays, "labels": lut[arrays["labels"]]}
    if src.fixes is not None:
        arrays, extras["fixes_applied"] = apply_label_fixes(src.fixes, fix_hits, arrays, final)
    if src.replay is not None:
        extras["replay_table"] = with_label_ids(rows, final)
    if src.previous:
        extras["continued_from"] = {"label_names": src.previous,
                                    "new_labels": [n for n in final if n not in src.previous]}
    return final, arrays, extras


def replay_class_counts(extras: dict, names: Sequence[str]) -> list[int]:
    """Replayed rows per label id (zeros without replay)."""
    by = (extras.get("replay") or {}).get("by_class") or {}
    return [int(by.get(n, 0)) for n in names]
