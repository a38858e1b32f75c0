"""Tiny config-built models of every supported family (random weights, built in milliseconds), and their
saved folders: the one place the tests get a model from (a plain module, importable from any test folder).

`tiny_config(family, num_layers, num_labels, **overrides)` -> a transformers config;
`tiny_model(...)` -> a sequence classifier from it, seeded; `save_tiny(dest, ..., tokenizer=DIR)` -> a
model folder (safetensors) with, given a tokenizer folder (MiniLM's), that tokenizer saved alongside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100,
            max_position_embeddings=64)
MINILM_VOCAB = 30522  # a model saved with MiniLM's tokenizer must embed every id it makes

ALL_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2", "deberta-v2-conv"]


def tiny_config(family: str = "bert", num_layers: int = 4, num_labels: int = 3, **extra):
    import transformers as T

    sized = {**TINY, **extra}
    if family == "bert":
        return T.BertConfig(num_hidden_layers=num_layers, num_labels=num_labels, **sized)
    if family == "roberta":
        return T.RobertaConfig(num_hidden_layers=num_layers, num_labels=num_labels, **{"pad_token_id": 1, **sized})
    if family == "xlm-roberta":
        return T.XLMRobertaConfig(num_hidden_layers=num_layers, num_labels=num_labels, **{"pad_token_id": 1, **sized})
    if family == "electra":
        # embedding_size != hidden_size: ELECTRA then adds `embeddings_project`, the case worth testing
        return T.ElectraConfig(num_hidden_layers=num_layers, num_labels=num_labels, **{"embedding_size": 16, **sized})
    if family == "distilbert":
        return T.DistilBertConfig(n_layers=num_layers, num_labels=num_labels, **{
            "dim": 32, "n_heads": 2, "hidden_dim": 64, "vocab_size": 100, "max_position_embeddings": 64, **extra})
    if family == "deberta-v2":
        # v3-style: relative attention with LayerNorm'd rel embeddings, no absolute positions
        return T.DebertaV2Config(num_hidden_layers=num_layers, num_labels=num_labels, relative_attention=True,
                                 pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_buckets=8,
                                 max_relative_positions=16, position_biased_input=False, **sized)
    if family == "deberta-v2-conv":
        # v2-xlarge-style: conv after layer 0, rel embeddings used raw (no encoder LayerNorm)
        return T.DebertaV2Config(num_hidden_layers=num_layers, num_labels=num_labels, relative_attention=True,
                                 pos_att_type=["p2c", "c2p"], norm_rel_ebd="none", conv_kernel_size=3,
                                 max_relative_positions=16, **sized)
    raise KeyError(family)


def tiny_model(family: str = "bert", num_layers: int = 4, num_labels: int = 3, seed: int = 0, **extra):
    import torch
    import transformers as T

    torch.manual_seed(seed)
    return T.AutoModelForSequenceClassification.from_config(tiny_config(family, num_layers, num_labels, **extra))


def save_tiny(dest, family: str = "bert", num_layers: int = 4, num_labels: int = 3, seed: int = 0,
              tokenizer: Optional[Path] = None, **extra) -> Path:
    """A model folder (safetensors) of `tiny_model(...)`; with `tokenizer`, that tokenizer saved alongside
    (give MiniLM's with vocab_size=MINILM_VOCAB)."""
    from transformers import AutoTokenizer

    dest = Path(dest)
    tiny_model(family, num_layers, num_labels, seed, **extra).save_pretrained(dest, safe_serialization=True)
    if tokenizer is not None:
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(dest)
    return dest
