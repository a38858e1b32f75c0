"""Ray Train + DeepSpeed, 2 workers on a local Ray cluster: LLRD, unfreezing, checkpoints, export, failures."""
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from run_configs import run_config
from domainft.commands.train import train_prepared
from domainft.errors import UserError

EPOCHS = 3


def _cfg(out, data, model_dir, *overrides):
    return run_config(out, data["train_dir"], model_dir, *overrides, optim={"layer_decay": 0.8},
                      unfreeze={"every_epochs": 1, "initial_layers": 1, "thaw_warmup_steps": 5},
                      train_={"epochs": EPOCHS, "log_every_steps": 10}, run={"max_failures": 1, "keep_checkpoints": 3})


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_splits):
    return token_splits(tmp_path_factory.mktemp("splits"), n_eval=300, eval_files=5)


@pytest.fixture(scope="module")
def baseline(ray_cluster, tmp_path_factory, splits, tiny_model_dir):
    out = tmp_path_factory.mktemp("baseline")
    cfg = _cfg(out, splits, tiny_model_dir)
    return cfg, train_prepared(cfg, splits)


@pytest.mark.timeout(600)
def test_two_workers_zero2_llrd_unfreezing_and_export(baseline, splits, tiny_model_dir):
    cfg, summary = baseline
    hist = summary["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert all(h["eval_rows"] == splits["eval_rows"] for h in hist)  # eval is split unevenly: no row dropped
    assert summary["best"]["macro_f1"] == max(h["macro_f1"] for h in hist)
    assert summary["best"]["accuracy"] > 0.9

    # unfreezing: one layer per epoch, top-down, logged with step and name
    spe = hist[0]["global_step"]
    events = summary["unfreeze_events"]
    # depth 2 is encoder layer index 2 of 0..3, depth 3 is index 1
    assert [(e["step"], e["depth"], e["name"]) for e in events[:2]] == [(spe, 2, "layer_2"), (2 * spe, 3, "layer_1")]
    assert [h["lowest_trainable"] for h in hist] == [2, 3, 3]  # depth 4 would thaw at the very end: never

    # LLRD: at step 1 head 2e-3 (x warmup), top layer x0.8, frozen groups at 0
    lrs = summary["lr_trace"][0]["lrs"]
    assert summary["lr_trace"][0]["step"] == 1
    assert lrs["layer_3"] == pytest.approx(0.8 * lrs["head"])
    assert lrs["layer_2"] == 0.0 and lrs["layer_1"] == 0.0  # frozen now, thaw later: registered at LR 0
    assert "embeddings" not in lrs and "layer_0" not in lrs  # never thaw in this run: not in the optimizer
    assert len(summary["lr_trace"]) >= 3

    # outputs: metrics.json, plots, a Hugging Face dir with safetensors only
    metrics = json.loads(open(os.path.join(cfg.output_dir, "metrics.json")).read())
    assert metrics["best"]["epoch"] == summary["best"]["epoch"] and len(metrics["history"]) == EPOCHS
    for png in summary["plots"].values():
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    best = summary["best_model_dir"]
    assert os.path.isfile(os.path.join(best, "model.safetensors"))
    assert not glob.glob(os.path.join(best, "*.bin"))

    # frozen for the whole run (embeddings never thaw in 3 epochs): bit-identical after ZeRO consolidation
    before = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    after = load_file(os.path.join(best, "model.safetensors"))
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[emb], after[emb])
    top = "bert.encoder.layer.3.attention.self.query.weight"
    assert not torch.equal(before[top], after[top])

    # exact eval over 5 eval files on 2 workers: the reported matrix is that of scoring the exported model
    assert _direct_confusion(best, splits) == summary["best"]["confusion"]

    # loads without domainft, with its label names
    code = ("import sys,torch; from transformers import AutoModelForSequenceClassification as M, AutoTokenizer as T;"
            "m=M.from_pretrained(sys.argv[1]); t=T.from_pretrained(sys.argv[1]);"
            "assert 'domainft' not in sys.modules;"
            "x=t(['hello world'], return_tensors='pt'); print(m.config.id2label[int(m(**x).logits.argmax())])")
    out = subprocess.run([sys.executable, "-c", code, best], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in splits["label_names"]


def _direct_confusion(model_dir, splits):
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification

    from domainft.core.batching import pad_batch

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    table = pq.read_table(splits["eval_dir"])
    batch = pad_batch({"input_ids": table.column("input_ids").to_pylist(), "label": table.column("label").to_numpy()})
    with torch.no_grad():
        preds = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    k = len(splits["label_names"])
    return torch.bincount(batch["labels"] * k + preds, minlength=k * k).view(k, k).tolist()


@pytest.mark.timeout(900)
def test_workers_killed_mid_epoch_and_mid_checkpoint_resume_from_the_last_checkpoint(baseline, ray_cluster, tmp_path,
                                                                                     splits, tiny_model_dir,
                                                                                     monkeypatch):
    """Two failures in one run (run.max_failures 2), both in epoch 2, both resumed from epoch 1's checkpoint:
    1. rank 1 killed from outside (SIGKILL) half a second into epoch 2;
    2. in the restarted group, rank 1 dies between writing its epoch-2 shard and reporting it (the test-only
       failpoint): a checkpoint half written is never resumed from."""
    from domainft.distributed import trainer

    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, "run.max_failures=2")
    monkeypatch.setattr(trainer, "FAILPOINT", "checkpoint:1:2")  # an explicit test-only hook, not the environment
    storage = os.path.join(cfg.output_dir, "ray")
    pid_file = os.path.join(cfg.output_dir, "workers", "rank1.pid")
    killed = {}

    def killer():
        deadline = time.time() + 400
        while time.time() < deadline and not glob.glob(os.path.join(storage, "*", "epoch_001")):
            time.sleep(0.2)
        time.sleep(0.5)  # into epoch 2
        state = glob.glob(os.path.join(storage, "*", "epoch_001", "domainft_state.json"))[0]
        killed["epoch1"] = json.loads(open(state).read())["history"][0]
        pid = int(open(pid_file).read())
        killed["pid"] = pid
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = train_prepared(cfg, splits)
    thread.join(timeout=5)
    assert "pid" in killed, "the worker was never killed"
    assert os.path.exists(os.path.join(cfg.output_dir, "workers", "failpoint-checkpoint-1-2")), "never fired"
    assert int(open(pid_file).read()) != killed["pid"], "rank 1 was not restarted"
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    # the run that finished resumed from epoch 1's checkpoint (a retrain from scratch would show no resume, a
    # resume from the half-written epoch-2 checkpoint epoch 2). A resume is recorded in the state the next
    # checkpoint saves: the first restart's record died with its attempt, which saved nothing.
    assert [r["epoch"] for r in summary["resumed_from"]] == [1]
    assert summary["history"][0] == killed["epoch1"]  # epoch 1's record restored, not recomputed
    assert os.path.isfile(os.path.join(summary["best_model_dir"], "model.safetensors"))
    _, base = baseline
    assert abs(summary["history"][-1]["macro_f1"] - base["history"][-1]["macro_f1"]) <= 0.02


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage,precision,extra,streamed", [
    # gradual: the bottom layers are frozen for the whole 1-epoch run (ZeRO 1 drops them); the splits stream
    # from their files (as a big split's do) instead of being read into memory once
    (1, "fp32", (), True),
    (3, "bf16", ("unfreeze.every_epochs=0",), False),
])
def test_other_zero_stages_export(ray_cluster, tmp_path, splits, tiny_model_dir, stage, precision, extra, streamed,
                                  monkeypatch, capsys):
    from domainft.distributed import ingest

    if streamed:
        monkeypatch.setattr(ingest, "IN_MEMORY_SPLIT_BYTES", 0)
    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, f"deepspeed.zero_stage={stage}",
               f"train.precision={precision}", "train.epochs=1", "train.max_steps_per_epoch=12", *extra)
    summary = train_prepared(cfg, splits)
    assert ("stream from their files every epoch" in capsys.readouterr().out) == streamed
    assert len(summary["history"]) == 1 and summary["history"][0]["eval_rows"] == splits["eval_rows"]
    after = load_file(os.path.join(summary["best_model_dir"], "model.safetensors"))
    before = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    assert set(after) == set(before)
    bottom = "bert.encoder.layer.0.attention.self.query.weight"
    if stage == 1:
        assert torch.equal(before[bottom], after[bottom])
    else:
        assert not torch.equal(before[bottom], after[bottom])


@pytest.mark.timeout(600)
def test_early_stopped_run_is_not_extended_and_a_changed_config_is_refused(ray_cluster, tmp_path, splits,
                                                                          tiny_model_dir):
    # LR 1e-12: nothing moves, so epoch 2 does not improve on epoch 1 and patience 1 stops the run there
    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, "optim.lr=1e-12", "train.early_stopping_patience=1",
               "train.max_steps_per_epoch=2", "run.name=stopper")
    first = train_prepared(cfg, splits)
    assert [h["epoch"] for h in first["history"]] == [1, 2] and first["stopped_early"] == 2
    again = train_prepared(cfg, splits)  # the same run resubmitted: no further epoch
    assert [h["epoch"] for h in again["history"]] == [1, 2] and again["history"] == first["history"]
    assert not glob.glob(os.path.join(cfg.output_dir, "ray", "stopper", "epoch_003"))
    changed = _cfg(tmp_path / "out", splits, tiny_model_dir, "optim.lr=2e-12", "train.early_stopping_patience=1",
                   "train.max_steps_per_epoch=2", "run.name=stopper")
    with pytest.raises(UserError, match=r"run.name 'stopper'.*optim.lr: 1e-12 in the checkpoint, 2e-12 now"):
        train_prepared(changed, splits)
