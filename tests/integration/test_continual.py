"""Continual retraining on the session's local Ray: continue from the session's trained run (its best/,
three labels) with a fourth class and data.replay. The label set keeps the old ids (old first), replayed
rows carry aug_op "replay" and are counted, the head is widened, and metrics.json scores the previous eval
split and the new one, before and after, so forgetting is visible."""
import json
import os

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from corpora import WORDS, word_corpus
from run_configs import run_config
from domainft.commands.train import run_train


def _cfg(out, corpus, model, **data):
    return run_config(out, corpus, model, data={"eval_fraction": 0.2, "max_length": 24, **data},
                      optim={"lr": 3e-3}, train_={"epochs": 2, "batch_size": 8, "seed": 4},
                      deepspeed={"zero_stage": 0}, scaling={"num_workers": 1})


@pytest.mark.timeout(900)
def test_continue_from_best_with_a_new_label_and_replay(ray_cluster, tmp_path, trained_run, capsys):
    # the previous run: labels sorted as inferred -> money 0, sport 1, tech 2
    previous = trained_run.out
    best1 = str(previous / "best")
    old = ["money", "sport", "tech"]
    recorded = json.loads(open(os.path.join(best1, "config.json")).read())["domainft"]
    assert recorded == {"label_names": old, "max_length": 128, "truncation_side": "right"}
    # a new class; "music" sorts between the old ones, but the old labels keep their ids
    words = {**WORDS, "music": "guitar piano violin drum flute"}
    corpus2 = word_corpus(tmp_path / "v2.jsonl", 200, labels=("music", "music", "sport", "tech", "money"), seed=2,
                          words=words)
    second = _cfg(tmp_path / "v2", corpus2, best1, replay={"from": str(previous), "fraction": 0.5})
    s2 = run_train(second)
    report = json.loads(open(tmp_path / "v2" / "data" / "data_report.json").read())
    assert report["label_names"] == old + ["music"]
    assert report["continued_from"] == {"label_names": old, "new_labels": ["music"]}
    rp = report["replay"]
    prev_train = pq.read_table(previous / "data" / "train")
    originals = prev_train.filter(pc.equal(prev_train.column("aug_op"), ""))
    per_class = [originals.filter(pc.equal(originals.column("label"), i)).num_rows for i in range(3)]
    assert rp["previous_originals"] == originals.num_rows
    assert rp["rows_added"] == sum(round(0.5 * n) for n in per_class)
    train = pq.read_table(report["train_dir"])
    replayed = train.filter(pc.equal(train.column("aug_op"), "replay"))
    assert replayed.num_rows == rp["rows_added"] == sum(rp["by_class"].values())
    assert set(replayed.column("label").to_pylist()) == {0, 1, 2}  # old labels, old ids
    assert report["train_rows"] == sum(report["class_counts_after"].values()) + rp["rows_added"]

    best2 = s2["best_model_dir"]
    config2 = json.loads(open(os.path.join(best2, "config.json")).read())
    assert config2["id2label"] == {"0": "money", "1": "sport", "2": "tech", "3": "music"}
    c = s2["continual"]
    assert c["previous_output_dir"] == str(previous) and c["started_from"] == best1
    for split in ("previous_eval", "new_eval"):
        assert set(c[split]) == {"before", "after"}
    assert c["previous_eval"]["after"]["rows"] == trained_run.report["eval_rows"]
    assert c["previous_eval"]["after"]["macro_f1_over"] == old
    assert c["previous_eval"]["before"]["macro_f1"] == pytest.approx(trained_run.metrics["best"]["macro_f1"], abs=1e-6)
    assert c["forgetting_macro_f1"] == pytest.approx(c["previous_eval"]["before"]["macro_f1"]
                                                     - c["previous_eval"]["after"]["macro_f1"], abs=1e-4)
    assert c["new_eval"]["after"]["per_class"]["music"]["support"] > 0
    metrics = json.loads(open(tmp_path / "v2" / "metrics.json").read())
    assert metrics["continual"]["forgetting_macro_f1"] == c["forgetting_macro_f1"]
    assert "forgetting (previous eval macro-F1, before - after)" in capsys.readouterr().out
