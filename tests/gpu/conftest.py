"""Set-up of the `gpu` tests: a tiny BERT built from a config (nothing from models/ or data/, which do
not travel to a lent GPU machine), and the device they run on."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def gpu_device() -> str:
    # DOMAINFT_GPU_TESTS_ON_CPU=1: the dry run of benchmarks/gpu_suite.sh (see tests/conftest.py)
    return "cpu" if os.environ.get("DOMAINFT_GPU_TESTS_ON_CPU") == "1" else "cuda"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 4-layer BERT (random weights, safetensors), no tokenizer: the tests feed token ids."""
    from tiny_models import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny_bert"), "bert", 4, 3, vocab_size=1200, hidden_size=64,
                     num_attention_heads=4, intermediate_size=128)
