"""`data.replay`: a share of a previous run's train split mixed into the new one (continual retraining),
and where the previous run's prepared splits are. No Ray.

Only the previous split's original rows are replayed (not its balancing copies, augmented rows or
its own replayed rows), sampled per label with a seeded generator; a row whose text is in the new
data (train or eval) is never replayed: it would be a duplicate, or leak into the new eval split.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from domainft.data.clean import clean_text, text_hash
from domainft.data.labels import model_label_names
from domainft.data.layout import PreparedLayout
from domainft.data.plan import OUTPUT_SCHEMA
from domainft.errors import UserError

REPLAY_OP = "replay"  # aug_op of replayed rows (is_augmented stays False)
ROW_COLUMNS = ["text", "label", "source_id", "aug_op", "is_augmented"]


@dataclass(frozen=True)
class PreviousRun:
    """A previous run's prepared data, from its data_report.json."""

    output_dir: str
    label_names: list[str]
    train_dir: str
    eval_dir: str
    fingerprint: str


def previous_run(output_dir: str, what: str = "data.replay.from") -> PreviousRun:
    """The prepared splits of the run in `output_dir`. Raises UserError when there are none."""
    layout = PreparedLayout(output_dir)
    try:
        with open(layout.report, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: {output_dir} holds no readable prepared data ({layout.report}: {e}); give the "
                        f"output_dir of a run that prepared or trained") from None
    run = PreviousRun(output_dir, list(report["label_names"]), report["train_dir"], report["eval_dir"],
                      str(report.get("fingerprint")))
    for split in (run.train_dir, run.eval_dir):
        if not os.path.isdir(split) or not any(n.endswith(".parquet") for n in os.listdir(split)):
            raise UserError(f"{what}: {output_dir}: the prepared split {split} is missing or empty")
    return run


def previous_output_dir(replay_from: Optional[str], model: str, output_dir: Optional[str] = None) -> Optional[str]:
    """The run whose eval split shows forgetting: `data.replay.from`, else the run a domainft `best/`
    model was exported by (its parent folder, when that holds prepared data and is not `output_dir`,
    e.g. a distillation's student_init/); None otherwise."""
    if replay_from:
        return replay_from
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(model)).rstrip(os.sep))
    if output_dir is not None and parent == os.path.abspath(os.path.expanduser(output_dir)).rstrip(os.sep):
        return None
    if model_label_names(model) is not None and os.path.isfile(PreparedLayout(parent).report):
        return parent
    return None


def read_split(split_dir: str, originals_only: bool = False) -> pa.Table:
    """The rows of a prepared split (ROW_COLUMNS, no token ids); `originals_only`: without balancing
    copies, augmented rows and replayed rows."""
    table = pq.read_table(split_dir, columns=ROW_COLUMNS)
    if originals_only:
        table = table.filter(pc.and_(pc.equal(table.column("aug_op"), ""), pc.invert(table.column("is_augmented"))))
    return table


def sample_replay(originals: pa.Table, previous_names: Sequence[str], fraction: float, seed: int,
                  exclude_hashes: np.ndarray, nfkc: bool = False, unescape_html: bool = False) -> tuple[pa.Table, dict]:
    """Stratified, seeded sample of `fraction` of each label's original rows.

    Args:
        originals: `read_split(train_dir, originals_only=True)` of the previous run.
        previous_names: Its label names (its `label` column holds their ids).
        fraction: Share of each label's rows to replay (rounded; rows whose text the new data holds
            are never chosen).
        seed: train.seed.
        exclude_hashes: `text_hash` of every new row (train and eval).
        nfkc, unescape_html: The new run's cleaning, applied to the replayed texts too.

    Returns:
        (rows with OUTPUT_SCHEMA columns but `label` holding label *names*, in `previous_label`,
         still to be mapped to the new ids by the caller; counts for the data report).
    """
    texts = [clean_text(t, nfkc, unescape_html) for t in originals.column("text").to_pylist()]
    labels = originals.column("label").to_numpy()
    hashes = np.fromiter((text_hash(t) for t in texts), dtype=np.uint64, count=len(texts))
    in_new = np.isin(hashes, exclude_hashes)
    chosen = []
    for c in range(len(previous_names)):
        rows = np.flatnonzero(labels == c)
        want = int(round(fraction * len(rows)))
        ok = rows[~in_new[rows]]
        if want and len(ok):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, c, 11])
            chosen.append(np.sort(rng.choice(ok, size=min(want, len(ok)), replace=False)))
    take = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    names = [previous_names[i] for i in labels[take]]
    rows = pa.table({"text": pa.array([texts[i] for i in take], pa.string()),
                     "previous_label": pa.array(names, pa.string()),
                     "source_id": originals.column("source_id").take(pa.array(take, pa.int64())),
                     "aug_op": pa.array([REPLAY_OP] * len(take), pa.string()),
                     "is_augmented": pa.array(np.zeros(len(take), dtype=bool))})
    by_class = {n: 0 for n in previous_names}
    for n in names:
        by_class[n] += 1
    counts = {"fraction": fraction, "previous_originals": int(len(labels)), "rows_added": int(len(take)),
              "skipped_in_new_data": int(in_new.sum()), "by_class": by_class}
    return rows, counts


def with_label_ids(rows: pa.Table, names: Sequence[str]) -> pa.Table:
    """`sample_replay`'s rows with `previous_label` names mapped to ids of the new label set, as
    OUTPUT_SCHEMA. Raises UserError for a name the new label set lacks."""
    index = {n: i for i, n in enumerate(names)}
    prev = rows.column("previous_label").to_pylist()
    missing = sorted(set(prev) - set(index))
    if missing:
        raise UserError(f"data.replay: the previous train split has labels {missing} that the new label set "
                        f"({list(names)}) lacks: add them to data.labels")
    return pa.table({"text": rows.column("text"), "label": pa.array([index[n] for n in prev], pa.int64()),
                     "source_id": rows.column("source_id"), "aug_op": rows.column("aug_op"),
                     "is_augmented": rows.column("is_augmented")}, schema=OUTPUT_SCHEMA)
