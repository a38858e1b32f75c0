"""Continual retraining on the session's local Ray: train on two classes, then continue from that best/
with a third class and data.replay. The label set keeps the old ids (old first), replayed rows carry
aug_op "replay" and are counted, the head is widened, and metrics.json scores the previous eval split
and the new one, before and after, so forgetting is visible."""
import json
import os
import random

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from domainft.config import validate_dict
from domainft.commands.train import run_train

MARKERS = {"fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango"],
           "nature": ["river", "mountain", "forest", "valley", "ocean", "desert"],
           "music": ["guitar", "piano", "violin", "drum", "flute", "trumpet"]}
FILLER = ["the", "report", "said", "that", "today", "we", "saw", "many", "people", "there", "about", "new"]


def _corpus(path, counts, seed):
    rng = random.Random(seed)
    rows = []
    for label, n in counts.items():
        for _ in range(n):
            words = rng.sample(MARKERS[label], 3) + rng.sample(FILLER, 4)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(out, corpus, model, **data):
    return validate_dict({
        "output_dir": str(out), "model": {"name_or_path": str(model)},
        "data": {"train": str(corpus), "eval_fraction": 0.2, "max_length": 24, **data},
        "optim": {"lr": 3e-3, "head_lr_mult": 1.0, "warmup_ratio": 0.05},
        "unfreeze": {"every_epochs": 0},
        "train": {"epochs": 2, "batch_size": 8, "seed": 4, "log_every_steps": 100},
        "deepspeed": {"zero_stage": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "run": {"keep_checkpoints": 1},
    })


@pytest.mark.timeout(1800)  # two training runs on a shared 2-core machine
def test_continue_from_best_with_a_new_label_and_replay(ray_cluster, tmp_path, tiny_model_dir, capsys):
    # phase 1: labels sorted as inferred, [nature, fruit] -> fruit 0, nature 1
    first = _cfg(tmp_path / "v1", _corpus(tmp_path / "v1.jsonl", {"nature": 80, "fruit": 80}, 1), tiny_model_dir)
    s1 = run_train(first)
    best1 = s1["best_model_dir"]
    assert json.loads(open(os.path.join(best1, "config.json")).read())["domainft"] == {"label_names": ["fruit",
                                                                                                       "nature"]}
    # phase 2: a new class; "music" sorts first, but the old labels keep their ids
    corpus2 = _corpus(tmp_path / "v2.jsonl", {"music": 80, "nature": 40, "fruit": 40}, 2)
    second = _cfg(tmp_path / "v2", corpus2, best1, replay={"from": str(tmp_path / "v1"), "fraction": 0.5})
    s2 = run_train(second)
    report = json.loads(open(tmp_path / "v2" / "data" / "data_report.json").read())
    assert report["label_names"] == ["fruit", "nature", "music"]
    assert report["continued_from"] == {"label_names": ["fruit", "nature"], "new_labels": ["music"]}
    rp = report["replay"]
    prev_train = pq.read_table(tmp_path / "v1" / "data" / "train")
    prev_originals = prev_train.filter(pc.equal(prev_train.column("aug_op"), "")).num_rows
    assert rp["previous_originals"] == prev_originals and rp["rows_added"] == round(0.5 * 64) + round(0.5 * 64)
    train = pq.read_table(report["train_dir"])
    replayed = train.filter(pc.equal(train.column("aug_op"), "replay"))
    assert replayed.num_rows == rp["rows_added"] == sum(rp["by_class"].values())
    assert set(replayed.column("label").to_pylist()) == {0, 1}  # old labels, old ids
    assert report["train_rows"] == sum(report["class_counts_after"].values()) + rp["rows_added"]

    best2 = s2["best_model_dir"]
    config2 = json.loads(open(os.path.join(best2, "config.json")).read())
    assert config2["id2label"] == {"0": "fruit", "1": "nature", "2": "music"}
    c = s2["continual"]
    assert c["previous_output_dir"] == str(tmp_path / "v1") and c["started_from"] == best1
    for split in ("previous_eval", "new_eval"):
        assert set(c[split]) == {"before", "after"}
    assert c["previous_eval"]["after"]["rows"] == 32 and c["previous_eval"]["after"]["macro_f1_over"] == ["fruit",
                                                                                                          "nature"]
    assert c["previous_eval"]["before"]["macro_f1"] == pytest.approx(s1["best"]["macro_f1"], abs=1e-6)
    assert c["forgetting_macro_f1"] == pytest.approx(c["previous_eval"]["before"]["macro_f1"]
                                                     - c["previous_eval"]["after"]["macro_f1"], abs=1e-4)
    assert c["new_eval"]["after"]["per_class"]["music"]["support"] > 0
    metrics = json.loads(open(tmp_path / "v2" / "metrics.json").read())
    assert metrics["continual"]["forgetting_macro_f1"] == c["forgetting_macro_f1"]
    assert "forgetting (previous eval macro-F1, before - after)" in capsys.readouterr().out
