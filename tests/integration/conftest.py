"""One local Ray instance for the whole integration session, with small resources.

Every integration test gets the `integration` marker and a timeout: the known Ray/DeepSpeed
hangs on a small machine are silent.
"""
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    import ray

    if not ray.is_initialized():
        # Token auth on, whatever the shell says: with RAY_AUTH_MODE unset, Ray 2.60's ray.init turns it on
        # for a new local cluster (and refreshes its own cached config). The token is this session's:
        # left to itself ray.init writes ~/.ray/auth_token, which then silently turns auth on for every
        # later `ray start --head` of this user.
        token = tmp_path_factory.mktemp("ray_auth") / "auth_token"
        token.write_text(secrets.token_hex(32))
        for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # RAY_AUTH_TOKEN would come before the file
            os.environ.pop(var, None)
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        ray.init(num_cpus=int(os.environ.get("DOMAINFT_TEST_CPUS", "2")), include_dashboard=False,
                 object_store_memory=256 * 1024**2, log_to_driver=True,
                 runtime_env={"env_vars": {k: os.environ[k] for k in (
                     "DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE") if k in os.environ}})
        assert os.environ.get("RAY_AUTH_MODE") == "token", "ray.init did not turn token auth on"
    yield ray
    ray.shutdown()


def save_tiny_bert(d, minilm_path, hidden_size=32):
    """A 4-layer BERT (random weights, saved as safetensors) with the real MiniLM tokenizer, in `d`."""
    from tiny_models import MINILM_VOCAB, save_tiny

    return save_tiny(d, "bert", 4, 3, tokenizer=minilm_path, vocab_size=MINILM_VOCAB, hidden_size=hidden_size,
                     intermediate_size=2 * hidden_size, max_position_embeddings=128)


@pytest.fixture(scope="session")
def tiny_bert_factory():
    """save_tiny_bert for tests that need another width (a fixture: `from conftest import` would find
    whichever conftest module pytest imported first under that name)."""
    return save_tiny_bert


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path):
    """A 4-layer BERT at hidden size 32 (see save_tiny_bert)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), minilm_path)


@pytest.fixture(scope="session")
def token_splits():
    return write_token_splits


def write_token_splits(root, n_train=1200, n_eval=150, num_classes=3, seed=0, eval_files=1):
    """Prepared-split Parquet (input_ids, label) for an easy task: a class marker token fills half the row.
    The eval split is written as `eval_files` files of unequal sizes (a big split is several files)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        labels = rng.integers(0, num_classes, n)
        rows = []
        for lab in labels:
            length = int(rng.integers(12, 40))
            ids = rng.integers(1000, 2000, length)
            ids[rng.random(length) < 0.5] = 2000 + lab
            rows.append([101] + ids.tolist() + [102])
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        table = pa.table({"input_ids": pa.array(rows, pa.list_(pa.int32())), "label": labels.astype("int64")})
        parts = eval_files if split == "eval" else 1
        inner = sorted(rng.choice(np.arange(1, n), parts - 1, replace=False).tolist()) if parts > 1 else []
        cuts = [0, *inner, n]
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            pq.write_table(table.slice(a, b - a), d / f"part-{i}.parquet")
        out[f"{split}_dir"], out[f"{split}_rows"] = str(d), n
        if split == "train":
            train_labels = labels
    out["label_names"] = [f"class_{i}" for i in range(num_classes)]
    out["pad_token_id"] = 0  # MiniLM's tokenizer, which the tiny models use
    out["class_counts_after"] = {f"class_{i}": int((train_labels == i).sum()) for i in range(num_classes)}
    return out


@dataclass
class TrainedRun:
    config: Path       # the YAML the user wrote
    out: Path          # its output_dir: data/, best/, metrics.json, logs/
    console: str       # what the user saw (stdout and stderr)
    returncode: int

    @property
    def metrics(self) -> dict:
        return json.loads((self.out / "metrics.json").read_text())

    @property
    def report(self) -> dict:
        return json.loads((self.out / "data" / "data_report.json").read_text())


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model_dir) -> TrainedRun:
    """`domainft train` once for the session, as a user runs it: a subprocess from a YAML file, with its
    own local Ray, through prepare (a JSONL corpus, 3 labels), 2 workers under ZeRO-2 with gradual
    unfreezing and sqrt LR scaling, to best/. The console, plan and continual tests read it
    instead of each training their own. Tests must not write into it."""
    from corpora import word_corpus

    root = tmp_path_factory.mktemp("trained_run")
    word_corpus(root / "corpus.jsonl", 240)
    cfg = root / "run.yaml"
    cfg.write_text(f"""
output_dir: {root}/out
data: {{train: {root}/corpus.jsonl, eval_fraction: 0.2}}
model: {{name_or_path: {tiny_model_dir}}}
optim: {{lr: 2.0e-3, lr_scaling: sqrt}}
train: {{epochs: 2, batch_size: 16, log_every_steps: 2}}
deepspeed: {{zero_stage: 2}}
scaling: {{num_workers: 2, cpus_per_worker: 0.5}}
""")
    out = subprocess.run([sys.executable, "-m", "domainft.cli", "train", str(cfg)], capture_output=True, text=True,
                         timeout=850, env={**os.environ, "RAY_ADDRESS": ""})
    run = TrainedRun(cfg, root / "out", out.stdout + out.stderr, out.returncode)
    assert run.returncode == 0, run.console[-6000:]
    return run
