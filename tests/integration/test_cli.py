"""`domainft train` as a user runs it: a subprocess from a YAML config, through prepare and training,
with the console a person reads (our lines and bars; Ray's and DeepSpeed's output in the log); then
`domainft plan` on the same config: its numbers are the ones the workers used."""
import json
import os
import re
import subprocess
import sys

import pytest

from corpora import WORDS


def test_train_command_console_is_quiet_and_complete(trained_run):
    out = trained_run.out
    lines = trained_run.console.splitlines()
    text = trained_run.console
    for expected in ("rows read", "global batch 32 = 2 worker(s) x batch 16", "epoch  train_loss", "best epoch",
                     f"model: {out}/best", f"logs: {out}/logs/"):
        assert expected in text, expected
    for noise in ("PlacementGroupCleaner", "RayTrainWorker", "SplitCoordinator", "DeprecationWarning",
                  "Loading weights", "Execution plan", "zero_to_fp32", "Reconstructed"):
        assert noise not in text, noise
    assert len(lines) < 60, text
    log = (out / "logs" / "domainft.log").read_text()
    assert log  # the libraries' output went somewhere
    assert os.path.isfile(out / "best" / "model.safetensors")


@pytest.mark.timeout(300)
def test_plan_shows_the_numbers_the_workers_used(trained_run):
    cfg = trained_run.config
    env = {**os.environ, "RAY_ADDRESS": ""}
    # `plan` (no Ray) shows what the workers did: every trained group's peak LR (scaled: global batch 32 vs
    # the reference 16, x sqrt 2) and the step it thawed at, and the steps. Before the RunSpec, plan's LRs
    # ignored optim.lr_scaling.
    plan = subprocess.run([sys.executable, "-m", "domainft.cli", "plan", str(cfg), "--json"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = {g["name"]: g for g in json.loads(plan.stdout)["groups"]}
    metrics = trained_run.metrics
    worker = {g["name"]: g for g in metrics["groups"]}  # the worker's optimizer groups (two per depth)
    assert set(worker) == {name for name, g in planned.items() if g["trained_in_run"]} == \
           {"head", "layer_3", "layer_2", "layer_1"}  # layer_0 would thaw at the last step: never
    for name, g in worker.items():
        assert g["peak_lr"] == pytest.approx(planned[name]["peak_lr"], rel=1e-12), name
        assert g["thaw_step"] == planned[name]["trainable_from_step"], name
    assert worker["head"]["peak_lr"] == pytest.approx(2.0e-3 * 10 * 2 ** 0.5)  # head_lr_mult 10
    assert [e["step"] for e in metrics["unfreeze_events"]] == [planned["layer_1"]["trainable_from_step"]]
    assert metrics["history"][-1]["global_step"] == json.loads(plan.stdout)["total_steps"]


@pytest.mark.timeout(300)
def test_too_few_rows_for_the_batch_is_a_user_error_before_training(ray_cluster, tmp_path, tiny_model_dir, capsys):
    """It was a bare ValueError in the driver: exit 1, 'internal error ... a bug'."""
    from domainft.cli import main

    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(30):
            f.write(json.dumps({"text": f"{list(WORDS.values())[i % 3]} {i}", "label": list(WORDS)[i % 3]}) + "\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"output_dir: {tmp_path}/out\ndata: {{train: {tmp_path}/corpus.jsonl}}\n"
                   f"model: {{name_or_path: {tiny_model_dir}}}\ntrain: {{batch_size: 16}}\n"
                   f"scaling: {{num_workers: 2, cpus_per_worker: 0.5}}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"\d+ train rows are too few for 2 workers x batch 16 x grad_accum 1", err), err
    assert "internal error" not in err
    assert not (tmp_path / "out" / "ray").exists()  # no Ray Train run was started
