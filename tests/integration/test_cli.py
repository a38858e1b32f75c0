"""`domainft train` as a user runs it: a subprocess from a YAML config, through prepare and training,
with the console a person reads (our lines and bars; Ray's and DeepSpeed's output in the log)."""
import json
import os
import random
import subprocess
import sys

import pytest

WORDS = {"sport": "match goal team league coach", "tech": "software chip phone network data",
         "money": "bank shares profit market price"}


@pytest.mark.timeout(900)
def test_train_command_console_is_quiet_and_complete(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(240):
            label = list(WORDS)[i % 3]
            words = WORDS[label].split() * 3 + "the a of and to in".split()
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
output_dir: {tmp_path}/out
data: {{train: {tmp_path}/corpus.jsonl, eval_fraction: 0.2}}
model: {{name_or_path: {tiny_model_dir}}}
optim: {{lr: 2.0e-3}}
train: {{epochs: 2, batch_size: 16, log_every_steps: 2}}
deepspeed: {{zero_stage: 2}}
scaling: {{num_workers: 2, cpus_per_worker: 0.5}}
""")
    env = {**os.environ, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-m", "domainft.cli", "train", str(cfg)], capture_output=True, text=True,
                         timeout=850, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    text = "\n".join(lines)
    for expected in ("rows read", "global batch 32 = 2 worker(s) x batch 16", "epoch  train_loss", "best epoch",
                     f"model: {tmp_path}/out/best", f"logs: {tmp_path}/out/logs/"):
        assert expected in text, expected
    for noise in ("PlacementGroupCleaner", "RayTrainWorker", "SplitCoordinator", "DeprecationWarning",
                  "Loading weights", "Execution plan", "zero_to_fp32", "Reconstructed"):
        assert noise not in text, noise
    assert len(lines) < 60, text
    log = (tmp_path / "out" / "logs" / "domainft.log").read_text()
    assert log  # the libraries' output went somewhere
    assert os.path.isfile(tmp_path / "out" / "best" / "model.safetensors")
