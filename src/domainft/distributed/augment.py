"""Augmentation of the train split on Ray Data (the only augmentation code that imports Ray).

Stages (each a `map_batches`):
1. token ops (synonym, EDA), tasks: WordNet/Cilin/jieba load once per worker process
   (module-level caches in domainft.data.augment);
2. back-translation, only when `ops.backtranslate > 0`: Apertium in tasks (one
   `apertium | apertium` pipeline per batch: it costs ~1 s to start), or a Marian actor pool
   (callable class, `concurrency`, one GPU per actor when the cluster has GPUs). On a CPU-only
   cluster Ray Data fuses stage 1 into the Marian actors (same resources), which is fine: the
   translation dominates;
3. hash + row uid (a hash of the row's values: `row_uids`), then `materialize()`: the driver
   reads only (hash, uid, flags) to count outputs per op and drops per reason, and to find
   augmented rows identical to an original, to an eval text, or to each other (the winner among
   equal texts is the smallest (source_id, copy, uid): deterministic);
4. a filter that removes the dropped rows and the internal columns; rows equal in every column
   (the same input row given twice) share a uid, and one of each such group is kept.

Output rows depend only on (seed, source_id, copy, text), never on batch size or worker count;
row order is not guaranteed (the train loader shuffles anyway). Because the uid is a function of
the row, a block that Ray recomputes (a lost object) gets the same uids, and the drop list (which
includes the eval-leak filter) still matches it.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from domainft.data.augment.pipeline import (AUG_OP, COPY, DROP, DROP_REASONS, DUPLICATE, IDENTICAL,
                                            IDENTICAL_TO_EVAL, INTERNAL_COLUMNS, IS_AUGMENTED, LANG, PENDING_BT,
                                            SOURCE_ID, TEXT, AugmentSettings, apply_backtranslation,
                                            augment_batch, row_uids)
from domainft.data.augment.protect import read_terms
from domainft.data.clean import text_hash
from domainft.errors import UserError

HASH, UID = "_h", "_uid"
TOKEN_BATCH_ROWS = 128
# Columns a tokenizer derives from the text: stale on an augmented row, so never carried over.
TOKENIZER_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "length")

_FIXED_TYPES = {SOURCE_ID: pa.string(), AUG_OP: pa.string(), IS_AUGMENTED: pa.bool_(), TEXT: pa.string(),
                COPY: pa.int32(), DROP: pa.string(), PENDING_BT: pa.bool_(), LANG: pa.string(),
                HASH: pa.uint64(), UID: pa.int64()}


def settings_from_config(cfg: Any) -> AugmentSettings:
    """Flat settings from a Config; the protected-terms file is read here, on the driver."""
    aug = cfg.augment
    terms: list[str] = []
    if aug.protected_terms:
        try:
            terms = read_terms(aug.protected_terms)
        except OSError as e:
            raise UserError(f"augment.protected_terms: cannot read {aug.protected_terms}: {e}") from None
    settings = AugmentSettings.from_config(aug, default_seed=cfg.train.seed, terms=terms)
    try:
        settings.matcher  # compile once here so that a bad regex fails before any worker starts
    except ValueError as e:
        raise UserError(f"augment.protected_terms ({aug.protected_terms}): {e}") from None
    return settings


def _to_table(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    arrays, names = [], []
    for name, values in cols.items():
        if name in _FIXED_TYPES:
            typ = _FIXED_TYPES[name]
        elif name in schema.names:
            typ = schema.field(name).type
        else:
            typ = None
        arrays.append(pa.array(values, type=typ))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _token_stage(table: pa.Table, settings: AugmentSettings) -> pa.Table:
    stale = [c for c in TOKENIZER_COLUMNS if c in table.column_names]
    if stale:
        table = table.drop_columns(stale)
    return _to_table(augment_batch(table.to_pydict(), settings), table.schema)


def _apertium_stage(table: pa.Table, settings: AugmentSettings, pivot: str) -> pa.Table:
    cols = table.to_pydict()
    if not any(cols[PENDING_BT]):
        return table
    return _to_table(apply_backtranslation(cols, settings, _apertium(pivot)), table.schema)


_APERTIUM: dict[str, Any] = {}


def _apertium(pivot: str):
    from domainft.data.augment.backtranslate import ApertiumRoundTrip

    if pivot not in _APERTIUM:  # checks the program and pairs once per worker process
        _APERTIUM[pivot] = ApertiumRoundTrip(pivot)
    return _APERTIUM[pivot]


class MarianStage:
    """Ray Data actor: loads the forward and backward seq2seq models once, translates pending rows."""

    def __init__(self, settings: AugmentSettings, forward: str, backward: str, batch_size: int, num_beams: int):
        from domainft.data.augment.backtranslate import Seq2SeqRoundTrip

        self.settings = settings
        self.round_trip = Seq2SeqRoundTrip(forward, backward, batch_size=batch_size, num_beams=num_beams)

    def __call__(self, table: pa.Table) -> pa.Table:
        cols = table.to_pydict()
        if not any(cols[PENDING_BT]):
            return table
        return _to_table(apply_backtranslation(cols, self.settings, self.round_trip), table.schema)


def _finish_stage(table: pa.Table) -> pa.Table:
    """Text hash for de-duplication and a uid per row, both functions of the row's values alone."""
    hashes = pa.array([text_hash(t or "") for t in table.column(TEXT).to_pylist()], type=pa.uint64())
    return table.append_column(HASH, hashes).append_column(UID, row_uids(table))


def _keep_stage(table: pa.Table, drop_uids: np.ndarray) -> pa.Table:
    mask = pc.invert(pc.is_in(table.column(UID), value_set=pa.array(drop_uids, type=pa.int64())))
    return _public(table.filter(mask))


def _public(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in (*INTERNAL_COLUMNS, HASH, UID) if c in table.column_names])


def _only_uids(table: pa.Table, uids: np.ndarray) -> pa.Table:
    return table.filter(pc.is_in(table.column(UID), value_set=pa.array(uids, type=pa.int64())))


def _first_row(group: pa.Table) -> pa.Table:
    return _public(group.slice(0, 1))  # every row of a uid group is the same row


def _apply(mat: "ray.data.Dataset", drop_uids: np.ndarray, once_uids: np.ndarray) -> "ray.data.Dataset":
    """`mat` less the dropped rows, with one row of each `once_uids` group (rows given twice)."""
    gone = np.union1d(drop_uids, once_uids)
    kept = mat.map_batches(_keep_stage, fn_kwargs={"drop_uids": gone}, batch_format="pyarrow")
    if len(once_uids) == 0:
        return kept
    once = mat.map_batches(_only_uids, fn_kwargs={"uids": once_uids}, batch_format="pyarrow")
    return kept.union(once.groupby(UID).map_groups(_first_row, batch_format="pyarrow"))


def _eval_hash_stage(table: pa.Table, text_column: str) -> pa.Table:
    return pa.table({HASH: pa.array([text_hash(t or "") for t in table.column(text_column).to_pylist()],
                                    type=pa.uint64())})


def _gpus_in_cluster() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def augment_dataset(ds: "ray.data.Dataset", settings: AugmentSettings, backend: str = "apertium",
                    pivot: str = "spa", forward: Optional[str] = None, backward: Optional[str] = None,
                    bt_batch_size: int = 32, num_beams: int = 1, eval_ds: Optional["ray.data.Dataset"] = None,
                    eval_text_column: str = TEXT, token_batch_rows: int = TOKEN_BATCH_ROWS,
                    ) -> tuple["ray.data.Dataset", dict]:
    """Augment a dataset with flat arguments (see `augment_train` for the config-driven entry).

    Args:
        ds: rows with `text` and any other columns (label, source_id, aug_op, is_augmented ...).
        settings: the augmentation settings (ops, n_aug, seed, protected terms).
        backend, pivot, forward, backward, bt_batch_size, num_beams: back-translation backend.
        eval_ds: optional eval split; augmented rows whose text equals an eval text are dropped.
        eval_text_column: text column of `eval_ds`.
        token_batch_rows: rows per token-op batch (does not change the output).

    Returns:
        (dataset of originals + kept augmented rows, report dict).
    """
    t0 = time.time()
    if settings.language == "en" and (settings.synonym > 0 or settings.insert > 0):
        # Fail here, with the set-up instructions, rather than inside every worker.
        from domainft.data.augment.wordnet_setup import ensure_wordnet_on_path

        try:
            ensure_wordnet_on_path()
        except RuntimeError as e:
            raise UserError(f"augment.ops.synonym/insert: {e}") from None
    mat = _stages(ds, settings, backend, pivot, forward, backward, bt_batch_size, num_beams,
                  token_batch_rows).materialize()
    t_stages = time.time()

    eval_hashes: set[int] = set()
    if eval_ds is not None:
        for b in eval_ds.map_batches(_eval_hash_stage, fn_kwargs={"text_column": eval_text_column},
                                     batch_format="pyarrow").iter_batches(batch_format="numpy"):
            eval_hashes.update(b[HASH].tolist())
    report, drop_uids, once_uids = _decide(mat, eval_hashes)
    final = _apply(mat, drop_uids, once_uids)
    report.update(_settings_report(settings, backend, pivot, forward, backward))
    report["seconds"] = round(time.time() - t0, 2)
    report["timing"] = {"augment_stages_s": round(t_stages - t0, 2), "dedupe_s": round(time.time() - t_stages, 2),
                        "worker_cpu_s": _worker_cpu_seconds(mat)}
    return final, report


def _stages(ds: "ray.data.Dataset", settings: AugmentSettings, backend: str, pivot: str, forward: Optional[str],
            backward: Optional[str], bt_batch_size: int, num_beams: int, token_batch_rows: int) -> "ray.data.Dataset":
    """Stages 1-3, lazily: every row with its candidates, drop reasons, text hash and uid."""
    out = ds.map_batches(_token_stage, fn_kwargs={"settings": settings}, batch_format="pyarrow",
                         batch_size=token_batch_rows)
    if settings.backtranslate > 0:
        if backend == "apertium":
            _apertium(pivot)  # fail on the driver, with the install hint, before any work is done
            out = out.map_batches(_apertium_stage, fn_kwargs={"settings": settings, "pivot": pivot},
                                  batch_format="pyarrow", batch_size=max(256, bt_batch_size))
        elif backend == "marian":
            if not forward or not backward:
                raise UserError("augment.backtranslation: backend marian needs `forward` and `backward` models")
            gpus = _gpus_in_cluster()
            # One actor per GPU when there are GPUs; on CPU one actor (torch uses the cores itself).
            out = out.map_batches(MarianStage, fn_constructor_kwargs=dict(
                settings=settings, forward=forward, backward=backward, batch_size=bt_batch_size,
                num_beams=num_beams), batch_format="pyarrow", batch_size=max(64, 4 * bt_batch_size),
                concurrency=max(1, gpus), num_gpus=1 if gpus else 0)
        else:
            raise UserError(f"augment.backtranslation.backend: unknown backend {backend!r}")
    return out.map_batches(_finish_stage, batch_format="pyarrow")


def _worker_cpu_seconds(mat: "ray.data.Dataset") -> Optional[float]:
    """CPU seconds the workers spent on the augmentation stages (from Ray Data's stats), if available."""
    try:
        return round(float(mat._get_stats_summary().get_total_cpu_time()), 2)  # private API: best effort
    except Exception:
        return None


def _decide(mat: "ray.data.Dataset", eval_hashes: set[int]) -> tuple[dict, np.ndarray, np.ndarray]:
    """Read (hash, uid, flags) of every row; return the report, the uids to drop, and the uids of
    kept rows that occur more than once (equal in every column: one of each is kept)."""
    cols = [HASH, UID, IS_AUGMENTED, DROP, AUG_OP, SOURCE_ID, COPY, LANG]
    originals: set[int] = set()
    candidates: Counter = Counter()  # (hash, (source_id, copy, uid), aug_op) -> rows
    dropped = Counter({r: 0 for r in DROP_REASONS})
    drop: list[int] = []
    languages: Counter = Counter()
    rows_in = attempted = 0
    for b in mat.select_columns(cols).iter_batches(batch_format="pyarrow", batch_size=65536):
        d = b.to_pydict()
        for h, uid, aug, reason, op, sid, copy, lang in zip(*(d[c] for c in cols)):
            if copy < 0:  # an input row (original, or augmented earlier and passed through)
                rows_in += 1
                if not aug:
                    originals.add(h)
                    languages[lang] += 1
                continue
            attempted += 1
            if reason:
                dropped[reason] += 1
                drop.append(uid)
            else:
                candidates[(h, (sid, copy, uid), op)] += 1
    winners: dict[int, tuple] = {}
    for h, key, _ in candidates:
        if h not in originals and h not in eval_hashes and (h not in winners or key < winners[h]):
            winners[h] = key
    per_op: Counter = Counter()
    per_family: Counter = Counter()
    once: list[int] = []
    for (h, key, op), n in candidates.items():
        if h in originals:
            dropped[IDENTICAL] += n
        elif h in eval_hashes:
            dropped[IDENTICAL_TO_EVAL] += n
        elif winners[h] != key:
            dropped[DUPLICATE] += n
        else:
            per_op[op] += 1
            per_family[op.split(":")[0]] += 1
            if n > 1:
                dropped[DUPLICATE] += n - 1
                once.append(key[2])
            continue
        drop.append(key[2])
    kept = sum(per_op.values())
    report = {
        "enabled": True,
        "rows_in": rows_in,
        "rows_out": rows_in + kept,
        "augmented": kept,
        "attempted": attempted,
        "rows_per_op": dict(sorted(per_op.items())),
        "rows_per_family": dict(sorted(per_family.items())),
        "dropped": dict(dropped),
        "languages": dict(sorted(languages.items())),
    }
    return report, np.unique(np.asarray(drop, dtype=np.int64)), np.asarray(sorted(once), dtype=np.int64)


def _settings_report(s: AugmentSettings, backend: str, pivot: str, forward: Optional[str],
                     backward: Optional[str]) -> dict:
    m = s.matcher
    bt = None
    if s.backtranslate > 0:
        bt = {"backend": backend, **({"pivot": pivot} if backend == "apertium" else
                                     {"forward": forward, "backward": backward})}
    return {
        "n_aug": s.n_aug, "seed": s.seed, "language": s.language,
        "ops": {"synonym": s.synonym, "swap": s.swap, "delete": s.delete, "insert": s.insert,
                "backtranslate": s.backtranslate},
        "backtranslation": bt,
        "protected_terms": {"literals": m.n_literals, "regexes": m.n_regexes, "builtin_patterns": m.builtin},
    }


def augment_train(train_ds: "ray.data.Dataset", cfg: Any,
                  eval_ds: Optional["ray.data.Dataset"] = None) -> tuple["ray.data.Dataset", dict]:
    """Augment the train split as the config says (prepare calls this after split and balance).

    Args:
        train_ds: columns text, label, source_id, aug_op ("" for originals), is_augmented.
        cfg: the validated Config; reads `cfg.augment` and `cfg.train.seed`.
        eval_ds: optional eval split (column `text`): augmented rows equal to an eval text are
            dropped (counted as identical_to_eval), so augmentation can never leak into eval.

    Returns:
        (originals + augmented rows with the same columns, report for the data report). When
        augmentation is off, the input dataset unchanged and {"enabled": False}.
    """
    aug = cfg.augment
    if not aug.enabled:
        return train_ds, {"enabled": False}
    bt = aug.backtranslation
    return augment_dataset(train_ds, settings_from_config(cfg), backend=bt.backend, pivot=bt.pivot,
                           forward=bt.forward, backward=bt.backward, bt_batch_size=bt.batch_size,
                           num_beams=bt.num_beams, eval_ds=eval_ds)


def _originals_only(table: pa.Table) -> pa.Table:
    return table.filter(pc.invert(table.column(IS_AUGMENTED)))


def _augmented_only(table: pa.Table) -> pa.Table:
    return table.filter(table.column(IS_AUGMENTED))


def augment_prepared(train_files: list[str], eval_files: list[str], cfg: Any, dest: str,
                     examples: int = 4) -> tuple[dict, list[dict]]:
    """`domainft augment`'s Ray Data part: the original rows of a prepared train split (a split prepared
    with augmentation on starts from its originals) augmented as `augment_train` does, written as Parquet
    to `dest`. Returns (the augmentation report, a few augmented rows to show)."""
    train = ray.data.read_parquet(train_files)
    if IS_AUGMENTED in train.schema().names:
        train = train.map_batches(_originals_only, batch_format="pyarrow")
    eval_ds = ray.data.read_parquet(eval_files) if eval_files else None
    out, report = augment_train(train, cfg, eval_ds=eval_ds)
    out.write_parquet(dest)
    return report, out.map_batches(_augmented_only, batch_format="pyarrow").take(examples)
