"""`domainft audit` on the session's local Ray, then the review loop: a small corpus whose labels follow
clear marker words (a tiny BERT learns it in a few steps) with planted label flips; the folds are
real Ray Train runs in a Ray Tune grid; cleanlab must find the flips; the reviewed CSV, given as
data.label_fixes, relabels and drops in prepare, counted in the data report."""
import csv
import json
import os
import random

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from run_configs import run_config
from domainft.commands.audit import run_audit
from domainft.commands.prepare import run_prepare

MARKERS = {"fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango"],
           "nature": ["river", "mountain", "forest", "valley", "ocean", "desert"],
           "music": ["guitar", "piano", "violin", "drum", "flute", "trumpet"]}
FILLER = ["the", "report", "said", "that", "today", "we", "saw", "many", "people", "there", "about", "new"]
ROWS = {"fruit": 110, "nature": 110, "music": 70}  # music is the minority: balancing adds copies
FLIPS = 15


def _corpus(path):
    """JSONL rows whose label follows their marker words; FLIPS rows get another label. Returns the flipped
    rows' source_ids."""
    rng = random.Random(5)
    rows = []
    for label, n in ROWS.items():
        for _ in range(n):
            words = rng.sample(MARKERS[label], 5) + rng.sample(FILLER, 2)
            rng.shuffle(words)
            rows.append([" ".join(words), label])
    rng.shuffle(rows)
    flipped = set(rng.sample(range(len(rows)), FLIPS))
    names = list(MARKERS)
    for i in flipped:
        rows[i][1] = names[(names.index(rows[i][1]) + 1 + rng.randrange(2)) % 3]
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return {f"{path.name}:{i + 1}" for i in flipped}


def _cfg(out, corpus, model_dir, **data):
    # lr 3e-4 and the default x10 head: a pretrained body (MiniLM's lower layers) under a new head
    return run_config(out, corpus, model_dir,
                      data={"eval_fraction": 0.1, "max_length": 24, "max_class_ratio": 1.2, **data},
                      optim={"lr": 3e-4, "head_lr_mult": 10.0}, train_={"epochs": 2, "batch_size": 8, "seed": 3},
                      deepspeed={"zero_stage": 0}, scaling={"num_workers": 1})


@pytest.fixture(scope="module")
def small_pretrained(tmp_path_factory, minilm_path):
    """MiniLM cut to its 2 lowest layers: its pretrained word embeddings learn the marker words in a couple of
    epochs, where a random tiny BERT needs many more and is erratic, so the out-of-fold scores are worth auditing."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    d = tmp_path_factory.mktemp("minilm_2l")
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_hidden_layers=2, num_labels=3)
    model.save_pretrained(d, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def audited(ray_cluster, tmp_path_factory, small_pretrained):
    tmp = tmp_path_factory.mktemp("audit")
    corpus = tmp / "notes.jsonl"
    flipped = _corpus(corpus)
    cfg = _cfg(tmp / "run", corpus, small_pretrained)
    return cfg, flipped, run_audit(cfg, folds=2)


@pytest.mark.timeout(1800)  # includes the module fixture: 2 folds on a shared 2-core machine (15 min seen under load)
def test_audit_finds_the_planted_flips(audited, capsys):
    cfg, flipped, report = audited
    out = cfg.output_dir
    train = pq.read_table(os.path.join(out, "data", "train"))
    originals = train.filter(pc.and_(pc.equal(train.column("aug_op"), ""), pc.invert(train.column("is_augmented"))))
    assert report["rows_audited"] == originals.num_rows  # every original, once
    assert report["rows_excluded"]["oversample"] == train.num_rows - originals.num_rows > 0  # copies: not audited
    assert report["folds"] == 2 and sorted(report["fold_seconds"]) == [0, 1]
    for k in (0, 1):
        fold = os.path.join(out, "audit", "folds", str(k))
        assert os.path.isfile(os.path.join(fold, "best", "model.safetensors"))
        held = pq.read_table(os.path.join(fold, "heldout"))
        ids = set(held.column("source_id").to_pylist())
        fold_train = pq.read_table(os.path.join(fold, "train")).column("source_id").to_pylist()
        assert not ids & set(fold_train)  # no held-out row nor any copy of it is trained on

    audited_flips = flipped & set(originals.column("source_id").to_pylist())
    with open(report["label_issues_csv"], newline="") as f:
        issues = list(csv.DictReader(f))
    assert list(issues[0]) == ["row_id", "source", "line", "text", "given_label", "suggested_label", "confidence",
                               "given_label_probability", "rank", "fix"]
    assert [int(r["rank"]) for r in issues] == list(range(1, len(issues) + 1))
    found = {r["row_id"] for r in issues}
    recall = len(found & audited_flips) / len(audited_flips)
    top = {r["row_id"] for r in issues[:len(audited_flips)]}
    precision = len(top & audited_flips) / len(top)
    # the goal on real data (recall 0.8, precision 0.7 in the top 5%) is measured in benchmarks/audit.py
    assert recall >= 0.7 and precision >= 0.7, (recall, precision, report["out_of_fold"])
    assert report["issues_found"] == len(issues) == sum(report["issues_by_class"].values())
    assert os.path.isfile(os.path.join(out, "audit", "audit_report.json"))


@pytest.mark.timeout(600)
def test_reviewed_issues_as_label_fixes_relabel_and_drop_in_prepare(audited, tmp_path):
    cfg, flipped, report = audited
    with open(report["label_issues_csv"], newline="") as f:
        issues = list(csv.DictReader(f))
    for r in issues:  # the reviewer accepts every suggestion but drops the last row
        r["fix"] = r["suggested_label"]
    issues[-1]["fix"] = "drop"
    fixes = tmp_path / "reviewed.csv"
    with open(fixes, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(issues[0]))
        w.writeheader()
        w.writerows(issues)
    before = report["prepared_fingerprint"]
    cfg2 = _cfg(cfg.output_dir, cfg.data.train, cfg.model.name_or_path, label_fixes=str(fixes))
    prepared = run_prepare(cfg2)  # counts that do not add up raise inside prepare
    assert prepared["fingerprint"] != before  # the fix file is part of the prepare fingerprint
    fx = prepared["fixes_applied"]
    assert fx["relabelled"] == len(issues) - 1 and fx["dropped"] == 1 and fx["unchanged"] == 0
    assert sum(fx["changes"].values()) == fx["relabelled"]
    assert prepared["rows_read"] == (prepared["rows_kept"] + prepared["duplicates_removed"] + prepared["empty_removed"]
                                     + sum(prepared["rejected"].values()) + 1)
    names = prepared["label_names"]
    rows = {}
    for split in ("train", "eval"):
        t = pq.read_table(prepared[f"{split}_dir"], columns=["source_id", "label"])
        rows.update(zip(t.column("source_id").to_pylist(), t.column("label").to_pylist()))
    for r in issues[:-1]:
        assert names[rows[r["row_id"]]] == r["suggested_label"]  # relabelled wherever the record landed
    assert issues[-1]["row_id"] not in rows  # dropped everywhere
