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
            max_position_embeddings=512)
MINILM_VOCAB = 30522  # a model saved with MiniLM's tokenizer must embed every id it makes

ALL_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2", "deberta-v2-conv"]

# Decoder LLM families, as small as their code allows: grouped-query attention (2 heads, 1 key/value head),
# and for the mixture-of-experts ones 4 routed experts (2 per token) with a shared expert; DeepSeek's
# first layer dense (first_k_dense_replace) like the real checkpoints, V3 with the low-rank query of MLA,
# V2 without it (as V2-Lite); MLA has as many key/value heads as query heads.
_DECODER_TINY = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                     vocab_size=100, max_position_embeddings=512, pad_token_id=0)
_MLA = dict(num_key_value_heads=2, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, moe_intermediate_size=16,
            n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1)
_DECODER_EXTRA = {
    "llama": {}, "mistral": {}, "qwen2": {}, "qwen3": dict(head_dim=16), "phi3": dict(eos_token_id=2, bos_token_id=1),
    "gemma": dict(head_dim=16), "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
                      shared_expert_intermediate_size=32),
    "qwen3_moe": dict(head_dim=16, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2),
    "deepseek_v2": dict(_MLA, q_lora_rank=None),
    "deepseek_v3": dict(_MLA, q_lora_rank=16, n_group=1, topk_group=1),
}
DECODER_FAMILIES = list(_DECODER_EXTRA)


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
            "dim": 32, "n_heads": 2, "hidden_dim": 64, "vocab_size": 100, "max_position_embeddings": 512, **extra})
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
    if family in _DECODER_EXTRA:
        return T.AutoConfig.for_model(family, num_hidden_layers=num_layers, num_labels=num_labels,
                                      **{**_DECODER_TINY, **_DECODER_EXTRA[family], **extra})
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


_WORDS = ("the patient was given a dose of the drug and the court ruled that the contract was void while the "
          "bank said its profit rose as markets fell after the match the team won the title in the final").split()


def decoder_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained here in milliseconds, shaped like a decoder LLM's: BOS and EOS
    tokens, no pad token (Llama, DeepSeek), so domainft must pad with EOS."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # <|endoftext|>: transformers loads a qwen2 folder's tokenizer as Qwen2Tokenizer, which pads with it
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size,
                                                       special_tokens=["<bos>", "<eos>", "<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


def save_tiny_decoder(dest, family: str = "llama", num_layers: int = 3, num_labels: int = 3, seed: int = 0,
                      **extra) -> Path:
    """A decoder classifier folder with `decoder_tokenizer()`: config.json has no pad_token_id, as Llama's and
    DeepSeek's have none, and the vocabulary is the tokenizer's."""
    dest = Path(dest)
    tok = decoder_tokenizer()
    model = tiny_model(family, num_layers, num_labels, seed, vocab_size=len(tok), pad_token_id=None,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **extra)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


def save_tiny_chat_lm(dest, family: str = "llama", style: str = "qwen", num_layers: int = 2, seed: int = 0,
                      **extra) -> Path:
    """A causal LM folder (random weights, safetensors) with a chat tokenizer of tests/chat_fixtures.py
    (`style`: qwen = ChatML without generation markers, deepseek, llama3, plain = no template)."""
    import torch
    import transformers as T
    from chat_fixtures import chat_tokenizer

    dest = Path(dest)
    tok = chat_tokenizer(style)
    config = tiny_config(family, num_layers, **{"vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                                                "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                                **extra})
    config.tie_word_embeddings = extra.get("tie_word_embeddings", True)
    torch.manual_seed(seed)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


def save_tiny_lora_adapter(base_dir, dest, seed: int = 1, r: int = 4) -> Path:
    """A CAUSAL_LM LoRA adapter for the causal LM in `base_dir` with random (not zero) weights, so that it
    changes the model's answers (PEFT's default init leaves B at zero: an adapter that does nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=r, lora_alpha=4 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(dest)
    return Path(dest)
