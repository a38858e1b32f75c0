"""Tiny config-built models of every supported family (random weights, built in milliseconds)."""
import pytest
import torch
import transformers as T

TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100,
            max_position_embeddings=64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded, and the machine is shared: do not fight for cores.
    Restored afterwards so tests in other folders run in the same session see the usual setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(family: str, num_layers: int = 4, num_labels: int = 3, **extra):
    if family == "bert":
        return T.BertConfig(num_hidden_layers=num_layers, num_labels=num_labels, **TINY, **extra)
    if family == "roberta":
        return T.RobertaConfig(num_hidden_layers=num_layers, num_labels=num_labels, pad_token_id=1, **TINY, **extra)
    if family == "xlm-roberta":
        return T.XLMRobertaConfig(num_hidden_layers=num_layers, num_labels=num_labels, pad_token_id=1, **TINY, **extra)
    if family == "electra":
        # embedding_size != hidden_size: ELECTRA then adds `embeddings_project`, the case worth testing
        return T.ElectraConfig(num_hidden_layers=num_layers, num_labels=num_labels, embedding_size=16, **TINY, **extra)
    if family == "distilbert":
        return T.DistilBertConfig(n_layers=num_layers, dim=32, n_heads=2, hidden_dim=64, vocab_size=100,
                                  max_position_embeddings=64, num_labels=num_labels, **extra)
    if family == "deberta-v2":
        # v3-style: relative attention with LayerNorm'd rel embeddings, no absolute positions
        return T.DebertaV2Config(num_hidden_layers=num_layers, num_labels=num_labels, relative_attention=True,
                                 pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_buckets=8,
                                 max_relative_positions=16, position_biased_input=False, **TINY, **extra)
    if family == "deberta-v2-conv":
        # v2-xlarge-style: conv after layer 0, rel embeddings used raw (no encoder LayerNorm)
        return T.DebertaV2Config(num_hidden_layers=num_layers, num_labels=num_labels, relative_attention=True,
                                 pos_att_type=["p2c", "c2p"], norm_rel_ebd="none", conv_kernel_size=3,
                                 max_relative_positions=16, **TINY, **extra)
    raise KeyError(family)


ALL_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2", "deberta-v2-conv"]


def tiny_model(family: str = "bert", num_layers: int = 4, num_labels: int = 3, seed: int = 0, **extra):
    torch.manual_seed(seed)
    model = T.AutoModelForSequenceClassification.from_config(tiny_config(family, num_layers, num_labels, **extra))
    return model


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
