"""Tiny config-built models of every supported family (random weights, built in milliseconds)."""
import pytest
import torch
import transformers as T

from tiny_models import ALL_FAMILIES, tiny_config, tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded, and the machine is shared: do not fight for cores.
    Restored afterwards so tests in other folders run in the same session see the usual setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_batch(batch_size: int = 8, seq_len: int = 12, num_labels: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, 100, (batch_size, seq_len), generator=g),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "labels": torch.randint(0, num_labels, (batch_size,), generator=g)}


@pytest.fixture(scope="session")
def make_model():
    """tiny_model(family="bert", num_layers=4, num_labels=3, seed=0, **config_overrides)."""
    return tiny_model


@pytest.fixture(scope="session")
def make_config():
    """tiny_config(family, num_layers=4, num_labels=3, **config_overrides)."""
    return tiny_config


@pytest.fixture(scope="session")
def make_batch():
    """tiny_batch(batch_size=8, seq_len=12, num_labels=3, seed=0)."""
    return tiny_batch


@pytest.fixture(scope="session")
def minilm_model(minilm_path):
    return T.AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=5)


@pytest.fixture(params=ALL_FAMILIES)
def family(request):
    return request.param
